"""The trainable a command names: ``file.py:name`` or ``module:name``, imported with a
clear error for every way that can fail (no such file or module, a module that raises on
import, a name that is no trainable)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from genepool._errors import invalid
from genepool._redact import shown
from genepool.trainable import Trainable

__all__ = ["load_trainable"]


def load_trainable(ref: str, *, command: str = "run") -> tuple[Any, ModuleType]:
    """Import ``file.py:name`` or ``module:name``; return the trainable and its module.

    Raises:
        InvalidArgumentError: The reference is malformed, the file or module is missing
            or raises on import (its error's type and message), or the name is missing or
            not a trainable (a ``gp.Trainable`` subclass or a function).
    """
    owner = f"genepool {command}"
    where, _, attr = ref.rpartition(":")
    if not where or not attr:
        must = "'file.py:name' or 'module:name'"
        raise invalid(owner, "trainable", must, shown(ref), "Fix: train.py:train.")
    if where.endswith(".py") or _is_file(Path(where)):
        module = _import_file(Path(where), owner)
    else:
        module = _import_module(where, owner)
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise invalid(owner, "trainable", f"a name defined in {where}", shown(attr)) from None
    if not callable(found) or (isinstance(found, type) and not issubclass(found, Trainable)):
        raise invalid(
            owner,
            "trainable",
            "a gp.Trainable subclass or a function (member) -> None",
            f"{attr} = {shown(found)} in {where}",
            "Fix: name the training function or the gp.Trainable subclass.",
        )
    return found, module


def _import_file(file: Path, owner: str) -> ModuleType:
    if not _is_file(file):
        raise invalid(owner, "trainable", "an existing file", shown(str(file.absolute())))
    path = file.resolve()
    # a name of its own, so that two train.py files (or a file named like a module
    # already imported) never shadow each other; worker processes get its code by value
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    name = f"genepool_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise invalid(owner, "trainable", "a Python file", shown(str(path)))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # its own imports of sibling files
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:  # its own error, told with its type
        del sys.modules[name]
        raise _import_failed(owner, str(path), err, f"python {path}") from None
    cloudpickle.register_pickle_by_value(module)
    return module


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte: no file of that name
        return False


def _import_module(where: str, owner: str) -> ModuleType:
    try:
        return importlib.import_module(where)
    except (Exception, SystemExit) as err:
        missing = err.name if isinstance(err, ModuleNotFoundError) else None
        if missing and (where == missing or where.startswith(missing + ".")):
            raise invalid(
                owner,
                "trainable",
                "'file.py:name' or an importable 'module:name'",
                f"{shown(where)}: no module named {shown(missing)}"
                if missing != where
                else f"{shown(where)}: no such module",
                "Fix: check the name, run from the folder that holds it, or give the file "
                "(path/to/train.py:name).",
            ) from None
        raise _import_failed(owner, where, err, f"python -c 'import {where}'") from None


def _import_failed(owner: str, where: str, err: BaseException, command: str) -> Exception:
    return invalid(
        owner,
        "trainable",
        "a module that imports without error",
        f"{type(err).__name__}: {' '.join(str(err).split())[:500]} (importing {shown(where)})",
        f"Fix: run `{command}` to see the traceback, and correct the module.",
    )
