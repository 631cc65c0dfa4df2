"""The config file of ``genepool run``: read it, check it, and turn it into ``gp.run``'s
arguments.

A config file (TOML, or YAML with the ``[yaml]`` extra: a ``.yaml`` or ``.yml`` file)::

    metric = "accuracy"
    mode = "max"
    population = 8
    seed = 0
    workers = 2
    storage = "sqlite:///pbt.db"
    loggers = ["mlflow:sqlite:///mlflow.db", "wandb:my-project"]  # genepool.loggers

    [ready]
    every = 4                # gp.Every(4); also counter = "samples", burn_in, min_seconds

    [budget]
    steps = 200              # also seconds, target, plateau, min_delta

    [exploit]
    rule = "truncation"      # or "tournament", "welch", "none"
    fraction = 0.2           # the rule's own arguments

    [explore]
    rule = "perturb"         # or "resample", "noise", "none"
    resample = 0.25

    [space]
    lr = { float = [1e-5, 1e-1], log = true }
    layers = { int = [1, 8] }
    batch_size = { choice = [32, 64, 128], ordered = true }
    optimizer = "adam"       # a plain value is fixed; { fixed = [...] } for a list

The top level holds the settings of :func:`genepool.run` that are plain data (those of
:data:`genepool._settings.CONFIG_FILE`; ``loggers`` by name), each checked as ``gp.run``
checks it. A rule with its defaults may be named alone: ``exploit = "none"`` (never
copy), ``explore = "resample"``. Without ``[ready]`` a member is ready every step;
without ``[exploit]`` / ``[explore]``, ``gp.run``'s defaults (truncation, perturb) apply.
A list in ``[space]`` must say what it is: ``{ choice = [...] }`` for categories,
``{ fixed = [...] }`` for a value that never changes. The space may instead live in the
trainable's file, as a ``gp.Space`` named ``space`` or ``SPACE``.

Every wrong input (a missing or unreadable file, a parse error, an unknown key, a wrong
value) raises :class:`~genepool.InvalidArgumentError` (key, value, fix) before anything is made.
"""

from __future__ import annotations

import difflib
import inspect
import numbers
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from genepool._errors import InvalidArgumentError, invalid, missing_dependency
from genepool._redact import shown
from genepool._settings import CONFIG_FILE, RUN, check
from genepool._trainable_ref import load_trainable
from genepool.policy import (
    PB2,
    Budget,
    Every,
    Explore,
    GaussianNoise,
    PB2Mix,
    Perturb,
    Resample,
    Select,
    Tournament,
    Truncation,
    WelchTTest,
)
from genepool.space import Choice, Domain, Fixed, Float, Int, Space

if TYPE_CHECKING:
    from genepool.policy import Policy

__all__ = ["check_run", "load_config", "load_trainable", "parse_space", "run_arguments"]

OWNER = "genepool run"

#: The tables of a config file, beside its settings.
SECTIONS = ("space", "ready", "budget", "exploit", "explore")

#: Every key a config file may hold at its top level.
CONFIG_KEYS = frozenset(CONFIG_FILE) | frozenset(SECTIONS)

#: Settings of ``gp.run`` that a config file may not hold, and where they are given.
_NOT_IN_FILE = {
    "trust_checkpoints": "pass the flag --trust-checkpoints (never read from a file)",
    "progress": "the live table shows on a terminal unless --quiet is given",
    "executor": "an executor is given from Python only: gp.run(..., executor=...)",
    "clock": "a clock is given from Python only: gp.run(..., clock=...)",
    "store": "give the store's URL as storage = 'sqlite:///pbt.db'",
}

#: The largest config file read (a binary or a log passed by mistake is refused unread).
MAX_BYTES = 10 * 2**20
#: How deeply a config file's tables and lists may nest.
MAX_DEPTH = 32
#: How many values a config file may expand to (YAML aliases can repeat a table).
MAX_VALUES = 1_000_000

SPACE = "the [space] table"
SPACE_FIX = "Fix: lr = { float = [1e-5, 1e-1], log = true }."

_EXPLOIT: dict[str, Callable[..., Select] | None] = {
    "truncation": Truncation,
    "tournament": Tournament,
    "welch": WelchTTest,
    "none": None,
}
_EXPLORE: dict[str, Callable[..., Explore] | None] = {
    "perturb": Perturb,
    "resample": Resample,
    "noise": GaussianNoise,
    "pb2": PB2,
    "pb2mix": PB2Mix,
    "none": None,
}


# -- the file ----------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict.

    Raises:
        InvalidArgumentError: The file is missing, unreadable, not UTF-8 text, does not
            parse (with the line and column), or does not hold a table of settings.
    """
    file = Path(path)
    where = shown(str(file))
    try:
        kind = "file" if file.is_file() else "folder" if file.is_dir() else None
        kind = kind or ("special file" if file.exists() else None)
        size = file.stat().st_size if kind == "file" else 0
        data = file.read_bytes() if kind == "file" and size <= MAX_BYTES else b""
    except ValueError:  # a path the system refuses (a NUL byte)
        kind = None
    except OSError as err:
        got, fix = f"{where} ({err.strerror or err})", "Fix: check the path and its permissions."
        raise _file_error("a file it can read", got, fix) from None
    if kind != "file":
        got = f"{where}, which is a {kind}" if kind else f"{where}, which does not exist"
        raise _file_error("an existing TOML or YAML file", got, "Fix: check the path.")
    if size > MAX_BYTES:
        must = f"a config file of at most {MAX_BYTES >> 20} MiB"
        raise _file_error(must, f"{where} of {size} bytes", "Fix: pass the config file itself.")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - data.rfind(b"\n", 0, err.start)
        raise _file_error(
            "a UTF-8 text file (TOML or YAML)",
            f"{where}, with a byte that is not UTF-8 at line {line}, column {column}",
            "Fix: pass the config file itself (not a binary), saved as UTF-8.",
        ) from None
    yaml_file = file.suffix.lower() in (".yaml", ".yml")
    parsed = _parse_yaml(text, where) if yaml_file else _parse_toml(text, where)
    parsed = {} if parsed is None else parsed  # an empty YAML file
    if not isinstance(parsed, dict):
        raise _file_error(
            "a file holding a table of settings (key: value lines)",
            f"{where}, which holds {type(parsed).__name__} {shown(parsed, 80)}",
            "Fix: metric: score, population: 8, ... one setting a line.",
        )
    _check_shape(parsed, where)
    return parsed


def _file_error(must: str, got: str, fix: str = "Fix: correct the file there.") -> Exception:
    return invalid(OWNER, "--config", must, got, fix)


def _parse_toml(text: str, where: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        problem = _one_line(str(err))
    except RecursionError:
        problem = "tables or lists nested too deeply"
    raise _file_error("a valid TOML file (a .yaml or .yml file is YAML)", f"{where}: {problem}")


def _parse_yaml(text: str, where: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise missing_dependency("pyyaml", "yaml", "A YAML config file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
        if mark is not None and problem:
            context = getattr(err, "context", None)
            words = f"{context}: {problem}" if context else str(problem)
            found = f"{words} (at line {mark.line + 1}, column {mark.column + 1})"
        else:
            found = _one_line(str(err).replace('in "<unicode string>", ', "at "))
    except RecursionError:
        found = "tables or lists nested too deeply"
    except Exception as err:  # a value its constructors fail on: !!int x, a date, !!int
        found = f"a value YAML cannot read ({type(err).__name__}: {_one_line(str(err))})"
    raise _file_error("a valid YAML file", f"{where}: {found}")


def _check_shape(data: Any, where: str) -> None:
    """Refuse a file whose tables nest too deeply or hold themselves (a YAML alias of an
    enclosing table), or that expands to too many values (aliases that repeat a table)."""
    sizes: dict[int, int] = {}  # of each table or list seen whole
    stack: list[tuple[Any, int, bool]] = [(data, 0, False)]
    while stack:
        node, depth, leaving = stack.pop()
        if not isinstance(node, (dict, list)) or (id(node) in sizes and not leaving):
            continue
        children = list(node.values()) if isinstance(node, dict) else node
        if depth >= MAX_DEPTH:
            problem = f"tables or lists nested more than {MAX_DEPTH} deep (or holding themselves)"
            break
        if not leaving:
            stack.append((node, depth, True))
            stack.extend((child, depth + 1, False) for child in children)
            continue
        sizes[id(node)] = 1 + sum(sizes.get(id(child), 1) for child in children)
        if sizes[id(node)] > MAX_VALUES:
            problem = f"more than {MAX_VALUES} values (aliases that repeat a table?)"
            break
    else:
        return
    raise _file_error("a table of settings", f"{where}, holding {problem}")


# -- the space ---------------------------------------------------------------------------


def parse_space(spec: Mapping[str, Any]) -> Space:
    """Build a :class:`Space` from a config table (see the module's docstring).

    Raises:
        InvalidArgumentError: A hyperparameter's table is not one of the kinds, or a domain
            refuses its bounds or options (the message names the hyperparameter).
    """
    if not isinstance(spec, Mapping) or not spec:
        must = "a table of at least one hyperparameter"
        got = "an empty table" if isinstance(spec, Mapping) else shown(spec)
        raise invalid(OWNER, "space", must, got, SPACE_FIX)
    domains: dict[str, Domain] = {}
    for name, value in spec.items():
        if not isinstance(name, str) or not name or "\x00" in name:
            must = "a non-empty string (a hyperparameter's name)"
            raise invalid(SPACE, "name", must, shown(name), SPACE_FIX)
        domains[name] = _domain(name, value)
    return Space(domains)


def _domain(name: str, value: Any) -> Domain:
    """The domain a ``[space]`` entry declares."""
    if not isinstance(value, Mapping):
        if isinstance(value, (list, tuple, set)):
            raise invalid(
                SPACE,
                name,
                "a table ({ choice = [...] } or { fixed = [...] }) when it holds a list",
                shown(value),
                f"Fix: {name} = {{ choice = [...] }} for categories, or "
                f"{name} = {{ fixed = [...] }} for a list that never changes.",
            )
        return _made(name, Fixed, value)
    kinds = [k for k in ("float", "int", "choice", "fixed") if k in value]
    if len(kinds) != 1:
        got = f"{shown(dict(value))}, with {' and '.join(kinds)}" if kinds else shown(dict(value))
        must = "a table with exactly one of float, int, choice, fixed"
        raise invalid(SPACE, name, must, got, SPACE_FIX)
    kind = kinds[0]
    allowed = (kind, *{"float": ["log"], "int": ["log"], "choice": ["ordered"]}.get(kind, []))
    for option in value:
        if option not in allowed:
            fix = _did_you_mean(option, allowed) or SPACE_FIX
            must = f"a {kind} table with only {', '.join(allowed)}"
            raise invalid(SPACE, name, must, f"the unknown option {shown(option)}", fix)
    for flag in allowed[1:]:
        if flag in value and type(value[flag]) is not bool:
            fix = f"Fix: {flag} = true (a string such as 'no' is no boolean)."
            must = f"a table whose {flag!r} is true or false"
            raise invalid(SPACE, name, must, f"{flag} = {shown(value[flag])}", fix)
    args = value[kind]
    if kind == "fixed":
        return _made(name, Fixed, args)
    if kind == "choice":
        if not isinstance(args, (list, tuple)):
            fix = f"Fix: {name} = {{ choice = ['adam', 'sgd'] }}."
            must = "a table whose choice is a list of options"
            raise invalid(SPACE, name, must, f"choice = {shown(args)}", fix)
        return _made(name, Choice, list(args), ordered=value.get("ordered", False))
    if not isinstance(args, (list, tuple)) or len(args) != 2 or not all(map(_number, args)):
        bounds = "[1e-5, 1e-1]" if kind == "float" else "[1, 8]"
        must = f"a table whose {kind} is [low, high], two numbers"
        fix = f"Fix: {name} = {{ {kind} = {bounds} }}."
        raise invalid(SPACE, name, must, f"{kind} = {shown(args)}", fix)
    cls = Float if kind == "float" else Int
    return _made(name, cls, args[0], args[1], log=value.get("log", False))


def _made(name: str, factory: Callable[..., Domain], *args: Any, **kwargs: Any) -> Domain:
    """``factory(*args, **kwargs)``, its error naming the ``[space]`` entry."""
    try:
        return factory(*args, **kwargs)
    except InvalidArgumentError as err:
        raise InvalidArgumentError(f"space.{name}: {err}") from None


def _number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# -- the rules ---------------------------------------------------------------------------


def _table(section: str, config: Mapping[str, Any], fix: str) -> Mapping[Any, Any]:
    """A section of the config: a table (a missing one is empty; a YAML null is no table)."""
    value = config.get(section, {})
    if not isinstance(value, Mapping):
        raise invalid(OWNER, section, "a table", shown(value), fix)
    return value


def _ready(config: Mapping[str, Any]) -> Every:
    options = dict(_table("ready", config, "Fix: [ready] every = 4 (gp.Every(4))."))
    if "every" in options and "steps" in options:
        got = f"every = {shown(options['every'])} and steps = {shown(options['steps'])}"
        must = "absent beside 'every' (they are the same option)"
        raise invalid("the [ready] table", "steps", must, got, "Fix: keep only every = N.")
    options["steps"] = options.pop("every", options.get("steps", 1))
    made: Every = _build("ready", "Every", Every, options, aliases={"steps": "every"})
    return made


def _rule(section: str, spec: Any, rules: Mapping[str, Callable[..., Any] | None]) -> Any:
    """The exploit or explore rule a section declares: a table of ``rule`` and its
    options, or a rule's name alone."""
    default = next(iter(rules))
    names = ", ".join(repr(r) for r in rules)
    if not isinstance(spec, (str, Mapping)):
        must = f"a table of a rule and its options, or a rule's name ({names})"
        fix = f"Fix: [{section}] rule = {default!r}, or {section} = {default!r}."
        raise invalid(OWNER, section, must, shown(spec), fix)
    options = {"rule": spec} if isinstance(spec, str) else dict(spec)
    rule = options.pop("rule", default)
    if not isinstance(rule, str) or rule not in rules:
        close = _did_you_mean(rule, rules)
        raise invalid(
            f"the [{section}] table",
            "rule",
            f"one of {names}",
            shown(rule),
            close or f"Fix: rule = {default!r}.",
        )
    factory = rules[rule]
    if factory is None:
        for extra, value in options.items():
            must = "absent: the rule 'none' takes no options"
            fix = "Fix: drop it, or name the rule it belongs to."
            raise invalid(f"the [{section}] table", str(extra), must, shown(value), fix)
        return None
    return _build(section, getattr(factory, "__name__", rule), factory, options)


def _build(
    section: str,
    label: str,
    factory: Callable[..., Any],
    options: Mapping[Any, Any],
    *,
    aliases: Mapping[str, str] | None = None,
) -> Any:
    """``factory(**options)``, each option checked first against the names its
    signature takes (never told by a ``TypeError`` from inside it); an error of the
    factory names the section."""
    aliases = aliases or {}
    parameters = inspect.signature(factory).parameters
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    takes = [n for n, p in parameters.items() if p.kind in keyword]
    names = [aliases.get(n, n) for n in takes]
    owner = f"the [{section}] table"
    for key, value in options.items():
        if key not in takes:
            name = key if isinstance(key, str) else shown(key)
            must = f"an option that {label} takes ({', '.join(names) or 'it takes none'})"
            fix = _did_you_mean(key, names) or "Fix: remove it."
            raise invalid(owner, name, must, shown(value), fix)
    for name in takes:
        if parameters[name].default is inspect.Parameter.empty and name not in options:
            alias = aliases.get(name, name)
            raise invalid(owner, alias, "set", "nothing", f"Fix: {alias} = ... ({label} needs it).")
    try:
        return factory(**options)
    except InvalidArgumentError as err:
        raise InvalidArgumentError(f"[{section}] {err}") from None


def _did_you_mean(word: object, choices: Iterable[str]) -> str | None:
    """``Fix: did you mean 'x'?`` for the choice closest to ``word``, if one is close."""
    if not isinstance(word, str):
        return None
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f"Fix: did you mean {close[0]!r}?" if close else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- gp.run's arguments -------------------------------------------------------------------


def run_arguments(
    config: Mapping[str, Any],
    *,
    trainable_module: ModuleType | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`genepool.run` (all but the trainable) that a config
    file declares.

    Args:
        config: The file's settings (:func:`load_config`).
        trainable_module: The trainable's module: its ``space`` or ``SPACE`` is the space
            when the config has no ``[space]``.
        overrides: Settings given as flags (``storage``, ``name``, ``workers``, ``seed``,
            ``population``; ``None`` for one not given): they win over the file's.

    Raises:
        InvalidArgumentError: An unknown key, a value of the wrong type, a wrong table.
    """
    if not isinstance(config, Mapping):
        raise _file_error("a table of settings", shown(config))
    for key, value in config.items():
        if key not in CONFIG_KEYS:
            text = isinstance(key, str)
            fix = f"Fix: {_NOT_IN_FILE[key]}." if key in _NOT_IN_FILE else None
            fix = fix or _did_you_mean(key, sorted(CONFIG_KEYS))
            fix = fix or f"Fix: remove it; the settings are {', '.join(sorted(CONFIG_KEYS))}."
            got = f"an unknown setting {shown(key)} = {shown(value, 80)}"
            name = key if text else shown(key)
            raise invalid("the config file", name, "a known setting", got, fix)
    settings = {k: v for k, v in config.items() if k not in SECTIONS}
    check(OWNER, settings, RUN)
    for key, value in (overrides or {}).items():
        if value is not None:
            check(OWNER, {f"--{key}": value}, {f"--{key}": RUN[key]})
            settings[key] = value
    if "metric" not in settings:
        fix = "Fix: metric = 'accuracy' (the reported metric that ranks members)."
        raise invalid(OWNER, "metric", "set in the config file", "nothing", fix)
    arguments: dict[str, Any] = {"space": _space(config, trainable_module)}
    arguments["ready"] = _ready(config)
    budget = _table("budget", config, "Fix: [budget] steps = 200.")
    arguments["budget"] = _build("budget", "Budget", Budget, budget)
    if "exploit" in config:
        arguments["exploit"] = _rule("exploit", config["exploit"], _EXPLOIT)
    if "explore" in config:
        arguments["explore"] = _rule("explore", config["explore"], _EXPLORE)
    return {**arguments, **settings}


def _space(config: Mapping[str, Any], module: ModuleType | None) -> Space:
    if "space" in config:
        return parse_space(config["space"])
    for attr in ("space", "SPACE"):
        found = getattr(module, attr, None)
        if isinstance(found, Space):
            return found
    must = "a [space] table in the config, or a gp.Space named space / SPACE beside the trainable"
    raise invalid(OWNER, "space", must, "neither", SPACE_FIX.replace("Fix: ", "Fix: [space] "))


def check_run(trainable: Any, arguments: Mapping[str, Any]) -> tuple[dict[str, Any], Policy]:
    """Check ``gp.run(trainable, **arguments)`` as the run would, without running it or
    creating anything: returns every argument (defaults filled in) and the policy.

    Raises:
        InvalidArgumentError: The first argument that is wrong.
    """
    from genepool._run import check_arguments, run

    bound = inspect.signature(run).bind(trainable, **arguments)
    bound.apply_defaults()
    values = dict(bound.arguments)
    return values, check_arguments(values)
