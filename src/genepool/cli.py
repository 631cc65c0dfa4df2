"""The command line: ``genepool run``, ``status``, ``export``, ``replay``, ``report``,
``tensorboard``, ``migrate``.

``genepool run train.py:train --config pbt.toml`` runs the trainable ``train`` of the file
``train.py`` (or of an importable module: ``mypkg.train:Trainer``) with the settings of the
config file (TOML, or YAML with the ``[yaml]`` extra). Flags override the file. Running the
same command again resumes the run from the store and the checkpoints.

A config file::

    metric = "accuracy"
    mode = "max"
    population = 8
    seed = 0
    workers = 2
    storage = "sqlite:///pbt.db"

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

The space may instead live in the trainable's file as a ``gp.Space`` named ``space`` or
``SPACE``.

Reading a run back (each works on a finished run and on one still going; ``--run NAME``
picks a run when the store holds several)::

    genepool status --storage sqlite:///pbt.db          # a table of the members
    genepool export --storage sqlite:///pbt.db -o schedule.json [--member ID]
    genepool replay train.py:train --schedule schedule.json [--steps N] [--seed S] [--json]
    genepool report --storage sqlite:///pbt.db -o report.html [--png figures/]
    genepool tensorboard --storage sqlite:///pbt.db --logdir tb/ [--follow]

Checkpoints hold plain data, arrays and tensors, and reading one never runs code. A run
whose state holds other Python objects needs ``genepool run ... --trust-checkpoints``
(they are stored with pickle, and read only by code that passes it). Checkpoints written
by genepool before its safe format are pickles: ``genepool migrate --storage URL
--trust-checkpoints`` rewrites them once, and then nothing needs trust to read them.

``export`` writes the best member's hyperparameter schedule (or the given member's) as
JSON; ``replay`` trains one fresh member with it and prints its score; ``tensorboard``
writes every member's scores and hyperparameters, and each member's lineage as one curve,
and with ``--follow`` keeps appending while the run goes.

Without ``--storage`` (and, for ``run``, without ``storage`` in the config file), every
command reads the store's URL from the environment variable ``GENEPOOL_STORAGE``: a
password in the URL then stays off the command line, which ``ps`` shows to every user.
No command shows a URL's password: errors and tables show it as ``***``.

Exit status: 0 done; 2 an error to fix (the message says how); 75 the storage failed (a
full disk, an I/O error, a database out of reach): ``run`` then prints
``"stop_reason": "storage"``, its members wait, active, and the same command resumes the
run once the storage is back.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from genepool._errors import (
    GenepoolError,
    InvalidArgumentError,
    StorageFaultError,
    invalid,
    missing_dependency,
)
from genepool._faults import STORAGE_EXIT
from genepool._progress import terminal_text
from genepool._redact import redact_url
from genepool.policy import (
    Budget,
    Every,
    Explore,
    GaussianNoise,
    Perturb,
    Resample,
    Select,
    Tournament,
    Truncation,
    WelchTTest,
)
from genepool.space import Choice, Domain, Fixed, Float, Int, Space

if TYPE_CHECKING:
    from genepool.result import Result
    from genepool.store import Store

__all__ = ["load_config", "load_trainable", "main", "parse_space"]

log = logging.getLogger("genepool.cli")

#: Where the commands read the store's URL from when no ``--storage`` is given.
STORAGE_ENV = "GENEPOOL_STORAGE"


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise invalid("genepool run", "--config", "an existing file", str(path))
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise missing_dependency("pyyaml", "yaml", "A YAML config file") from None
        data = yaml.safe_load(text) or {}
    else:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        data = tomllib.loads(text)
    if not isinstance(data, dict):
        raise invalid("genepool run", "--config", "a file holding a table of settings", str(path))
    return data


def parse_space(spec: Mapping[str, Any]) -> Space:
    """Build a :class:`Space` from a config table (see the module's docstring)."""
    domains: dict[str, Domain] = {}
    for name, value in spec.items():
        if not isinstance(value, Mapping):
            domains[name] = Fixed(value)
            continue
        kinds = [k for k in ("float", "int", "choice", "fixed") if k in value]
        if len(kinds) != 1:
            raise invalid(
                "space",
                name,
                "a table with one of float, int, choice, fixed",
                repr(dict(value)),
                "Fix: lr = { float = [1e-5, 1e-1], log = true }.",
            )
        kind = kinds[0]
        allowed = {kind, "log"} if kind in ("float", "int") else {kind, "ordered"}
        if kind == "fixed":
            allowed = {kind}
        extra = sorted(set(value) - allowed)
        if extra:
            raise invalid(
                "space",
                name,
                f"a {kind} table with only {sorted(allowed)}",
                f"the unknown option(s) {extra}",
                "Fix: lr = { float = [1e-5, 1e-1], log = true }.",
            )
        args = value[kind]
        if kind == "fixed":
            domains[name] = Fixed(args)
        elif kind == "choice":
            domains[name] = Choice(list(args), ordered=bool(value.get("ordered", False)))
        else:
            if not isinstance(args, Sequence) or len(args) != 2:
                raise invalid("space", name, f"{kind} = [low, high]", repr(args))
            cls = Float if kind == "float" else Int
            domains[name] = cls(args[0], args[1], log=bool(value.get("log", False)))
    return Space(domains)


def _build(section: str, factory: Any, options: Mapping[str, Any]) -> Any:
    """Call ``factory(**options)``, turning a wrong option name into a clear error."""
    try:
        return factory(**options)
    except TypeError as err:
        raise invalid(
            f"[{section}]",
            "options",
            f"options that {getattr(factory, '__name__', factory)} takes",
            f"{sorted(options)} ({err})",
        ) from None


def _exploit(spec: Mapping[str, Any] | None) -> Select | str | None:
    if spec is None:
        return "default"
    options = dict(spec)
    rule = options.pop("rule", "truncation")
    rules: dict[str, Any] = {
        "truncation": Truncation,
        "tournament": Tournament,
        "welch": WelchTTest,
    }
    if rule == "none":
        return None
    if rule not in rules:
        raise invalid("[exploit]", "rule", f"one of {[*rules, 'none']}", repr(rule))
    made: Select = _build("exploit", rules[rule], options)
    return made


def _explore(spec: Mapping[str, Any] | None) -> Explore | str | None:
    if spec is None:
        return "default"
    options = dict(spec)
    rule = options.pop("rule", "perturb")
    rules: dict[str, Any] = {"perturb": Perturb, "resample": Resample, "noise": GaussianNoise}
    if rule == "none":
        return None
    if rule not in rules:
        raise invalid("[explore]", "rule", f"one of {[*rules, 'none']}", repr(rule))
    made: Explore = _build("explore", rules[rule], options)
    return made


def load_trainable(ref: str, *, command: str = "run") -> tuple[Any, Any]:
    """Import ``file.py:name`` or ``module:name``; return the trainable and its module."""
    owner = f"genepool {command}"
    if ":" not in ref:
        raise invalid(owner, "trainable", "'file.py:name' or 'module:name'", repr(ref))
    where, _, attr = ref.rpartition(":")
    if where.endswith(".py") or Path(where).is_file():
        path = Path(where).resolve()
        if not path.is_file():
            raise invalid(owner, "trainable", "an existing file", str(path))
        # a name of its own, so that two train.py files (or a file named like a module
        # already imported) never shadow each other; worker processes get its code by value
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
        name = f"genepool_user_{path.stem}_{digest}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise invalid(owner, "trainable", "a Python file", str(path))
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            folder = str(path.parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)  # its own imports of sibling files
            spec.loader.exec_module(module)
            cloudpickle.register_pickle_by_value(module)
    else:
        module = importlib.import_module(where)
    try:
        return getattr(module, attr), module
    except AttributeError:
        raise invalid(owner, "trainable", f"a name defined in {where}", repr(attr)) from None


TRUST_HELP = (
    "let checkpoints hold any Python object (pickle) and read those of genepool's first "
    "format: reading them can run code, so the checkpoint storage must be as trusted as "
    "this code"
)


def _run(args: argparse.Namespace) -> int:
    from genepool._run import run

    config = load_config(args.config) if args.config else {}
    for key in ("storage", "name", "workers", "seed", "population"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    if "storage" not in config and os.environ.get(STORAGE_ENV):
        config["storage"] = os.environ[STORAGE_ENV]
    trainable, module = load_trainable(args.trainable)
    if "space" in config:
        space = parse_space(config.pop("space"))
    else:
        found = getattr(module, "space", None) or getattr(module, "SPACE", None)
        if not isinstance(found, Space):
            raise invalid(
                "genepool run",
                "space",
                "a [space] table in the config, or a "
                "gp.Space named space / SPACE beside the trainable",
                "neither",
            )
        space = found
    ready_spec = dict(config.pop("ready", {"every": 1}))
    ready = _build("ready", Every, {"steps": ready_spec.pop("every", 1), **ready_spec})
    budget = _build("budget", Budget, dict(config.pop("budget", {})))
    options: dict[str, Any] = {}
    exploit = _exploit(config.pop("exploit", None))
    if exploit != "default":
        options["exploit"] = exploit
    explore = _explore(config.pop("explore", None))
    if explore != "default":
        options["explore"] = explore
    if "metric" not in config:
        raise invalid("genepool run", "metric", "set in the config file", "nothing")
    if args.resume:
        options["resume"] = True
    if args.trust_checkpoints:  # a flag only: never read from a file or a store
        options["trust_checkpoints"] = True
    known = {
        "metric",
        "mode",
        "population",
        "initial",
        "seed",
        "name",
        "max_failures",
        "storage",
        "checkpoints",
        "workers",
        "synchronous",
        "aligned",
        "lease_seconds",
        "progress_timeout",
        "max_crashes",
        "max_ahead",
        "max_resident",
        "keep",
        "fsync",
        "recent_window",
        "metrics_every",
        "allow_config_change",
    }
    unknown = sorted(set(config) - known)
    if unknown:
        raise invalid(
            "genepool run",
            "--config",
            f"made of known settings {sorted(known)}",
            f"unknown {unknown}",
        )
    options.update(config)
    progress = not args.quiet and sys.stdout.isatty()
    try:
        result = run(trainable, space, ready=ready, budget=budget, progress=progress, **options)
    except StorageFaultError as err:  # the members wait, active: the same command resumes
        name = options.get("name", "run")
        print(json.dumps({"run": name, "stop_reason": "storage", "error": str(err)}))
        raise
    scored = result.population.best() is not None
    best = result.best if scored else None
    print(
        json.dumps(
            {
                "run": result.name,
                "stop_reason": result.stop_reason,
                "best_member": best.id if best else None,
                "best_score": best.score if best else None,
                "best_hparams": best.hparams if best else None,
                "best_step": best.step if best else None,
                "failed": [m.id for m in result.failed],
            },
            default=repr,
        )
    )
    return 0


def _storage(args: argparse.Namespace, command: str) -> str:
    """The store's URL: ``--storage``, else the environment variable GENEPOOL_STORAGE."""
    if args.storage is not None:
        return str(args.storage)
    url = os.environ.get(STORAGE_ENV)
    if not url:
        raise invalid(
            f"genepool {command}",
            "--storage",
            f"given, or set in the environment variable {STORAGE_ENV}",
            "neither",
            f"Fix: --storage sqlite:///pbt.db, or export {STORAGE_ENV}=URL (a URL with a "
            "password is safer in the environment than on the command line).",
        )
    return url


@contextlib.contextmanager
def _opened_store(
    args: argparse.Namespace, command: str, *, read_only: bool = True
) -> Iterator[Store]:
    """The store the arguments name, closed at the end; a SQLite file that does not exist
    is refused, never created."""
    store = _open_store(args, command, read_only=read_only)
    try:
        yield store
    finally:
        close = getattr(store, "close", None)  # a SQLStore's connections
        if callable(close):
            close()


def _open_store(args: argparse.Namespace, command: str, *, read_only: bool = True) -> Store:
    """The store the arguments name (see :func:`_opened_store`)."""
    from genepool.store import open_store

    url = _storage(args, command)
    path = url[len("sqlite:///") :].split("?", 1)[0]  # the file: the URL without its query
    if url.startswith("sqlite:///") and not Path(path).is_file():
        raise invalid(
            f"genepool {command}",
            "--storage",
            "an existing database",
            redact_url(url),
            "Fix: check the path (nothing was created).",
        )
    return open_store(url, read_only=read_only)  # all but revive only read


def _run_name(store: Store, name: str | None, command: str) -> str:
    """The run to read: ``name``, or the store's only run."""
    names = store.runs()
    if name is None and len(names) != 1:
        raise invalid(
            f"genepool {command}",
            "--run",
            f"one of {names}",
            "nothing",
            "Fix: --run NAME (the store holds several runs)." if names else "",
        )
    chosen = name or names[0]
    if chosen not in names:
        raise invalid(f"genepool {command}", "--run", f"one of {names}", repr(chosen))
    return chosen


def _open_result(args: argparse.Namespace, command: str, store: Store) -> Result:
    """The run the arguments name, read from the store as it is now (maybe still going).

    No checkpoint is loaded by these commands, so none is opened (nor a directory made).
    """
    from genepool.checkpoints import MemoryCheckpoints
    from genepool.result import Result

    name = _run_name(store, args.name, command)
    return Result.open(store, name, checkpoints=MemoryCheckpoints())


def _status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from genepool._progress import population_table

    with _opened_store(args, "status") as store:
        name = _run_name(store, args.name, "status")
        population = store.population(name)
        metric = store.run_config(name).get("metric", "score")
    table = population_table(population, title=f"run {name!r}", metric=str(metric))
    Console(markup=False, emoji=False, highlight=False).print(table)
    return 0


def _export(args: argparse.Namespace) -> int:
    with _opened_store(args, "export") as store:
        schedule = _open_result(args, "export", store).schedule(args.member)
    if args.output is None:
        print(schedule.to_json())
        return 0
    schedule.save(args.output)
    _say(
        f"member {schedule.member}'s schedule ({schedule.final_step} steps, "
        f"{len(schedule)} changes, {schedule.metric} = {schedule.score}) written to "
        f"{args.output}"
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from genepool._replay import replay
    from genepool.analysis import Schedule

    path = Path(args.schedule)
    if not path.is_file():
        raise invalid(
            "genepool replay",
            "--schedule",
            "an existing schedule file",
            str(path),
            "Fix: write one with `genepool export --storage URL -o schedule.json`.",
        )
    schedule = Schedule.load(path)
    trainable, _ = load_trainable(args.trainable, command="replay")
    replayed = replay(
        trainable,
        schedule,
        steps=args.steps,
        seed=args.seed,
        metric=args.metric,
        retrace=not args.no_retrace,
    )
    if args.json:
        print(
            json.dumps(
                {"schedule": str(path), "member": schedule.member, **replayed.to_dict()},
                default=repr,
            )
        )
        return 0
    score = "no score" if replayed.score is None else f"{replayed.score:.10g}"
    line = f"{replayed.metric} = {score} after {replayed.step} steps (seed {replayed.seed})"
    if replayed.expected is not None:
        line += f"; member {schedule.member} reached {replayed.expected:.10g} in the run"
    _say(line)
    return 0


def _report(args: argparse.Namespace) -> int:
    from genepool.analysis import plot_report, write_report

    with _opened_store(args, "report") as store:
        result = _open_result(args, "report", store)
        output = write_report(result, Path(args.output))
        _say(f"report of run {result.name!r} written to {output}")
        if args.png is not None:
            written = plot_report(result, Path(args.png))
            _say(f"{len(written)} figures written to {args.png}")
    return 0


def _tensorboard(args: argparse.Namespace) -> int:
    import time

    from genepool.analysis import TensorBoardLog

    if args.every <= 0:
        raise invalid("genepool tensorboard", "--every", "a number of seconds > 0", args.every)
    with _opened_store(args, "tensorboard") as store:
        result = _open_result(args, "tensorboard", store)
        with TensorBoardLog(args.logdir) as log:
            try:
                log.update(result)
                while args.follow and any(m.status == "active" for m in result.population):
                    time.sleep(args.every)
                    result = _open_result(args, "tensorboard", store)
                    log.update(result)
            except KeyboardInterrupt:
                print("stopped following: the lineages are written as they stand", file=sys.stderr)
            log.write_lineages(result)
    _say(
        f"run {result.name!r} written to {args.logdir} "
        f"({len(result.reports)} reports of {len(result.population)} members; "
        f"view it with: tensorboard --logdir {args.logdir})"
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from genepool._migrate import migrate

    done = migrate(
        _storage(args, "migrate"),
        args.name,
        checkpoints=args.checkpoints,
        trust=bool(args.trust_checkpoints),
    )
    _say(json.dumps(done.to_dict()))
    return 0


def _revive(args: argparse.Namespace) -> int:
    """Make a run's failed members active again; print which (a JSON object)."""
    with _opened_store(args, "revive", read_only=False) as store:
        name = _run_name(store, args.name, "revive")
        revived = store.revive(name, args.member)
    _say(json.dumps({"run": name, "revived": revived}))
    return 0


def _say(line: str, *, file: Any = None) -> None:
    """Print a line that shows run data or an error: its passwords hidden, and its
    control characters escaped (run data never writes escape sequences to a terminal)."""
    print(terminal_text(redact_url(line)), file=file)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``genepool`` command."""
    parser = argparse.ArgumentParser(
        prog="genepool",
        description="Population Based Training",
        epilog=f"Without --storage, the commands read the store's URL from the environment "
        f"variable {STORAGE_ENV} (keep a password off the command line: ps shows it).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="run (or resume) a PBT run")
    run_cmd.add_argument("trainable", help="file.py:name or module:name")
    run_cmd.add_argument("--config", help="a TOML or YAML file of settings")
    run_cmd.add_argument(
        "--storage",
        help=f"sqlite:///pbt.db, postgresql://..., memory (default: the config file's, else "
        f"${STORAGE_ENV})",
    )
    run_cmd.add_argument("--name", help="the run's name in the store")
    run_cmd.add_argument("--workers", type=int)
    run_cmd.add_argument("--seed", type=int)
    run_cmd.add_argument("--population", type=int)
    run_cmd.add_argument("--resume", action="store_true", help="the run must exist already")
    run_cmd.add_argument("--quiet", action="store_true", help="no live table")
    run_cmd.add_argument("--trust-checkpoints", action="store_true", help=TRUST_HELP)

    def reader(name: str, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help)
        command.add_argument("--storage", help=f"the run's store URL (default: ${STORAGE_ENV})")
        command.add_argument(
            "--run", "--name", dest="name", help="the run's name (when the store has several)"
        )
        return command

    reader("status", "a table of a run's members (finished or still going)")
    export_cmd = reader("export", "write the best member's hyperparameter schedule as JSON")
    export_cmd.add_argument("--member", type=int, help="another member's schedule")
    export_cmd.add_argument("-o", "--output", help="the JSON file (default: print it)")
    replay_cmd = commands.add_parser(
        "replay", help="train one fresh member with an exported schedule; print its score"
    )
    replay_cmd.add_argument("trainable", help="file.py:name or module:name")
    replay_cmd.add_argument("--schedule", required=True, help="a file `genepool export` wrote")
    replay_cmd.add_argument("--steps", type=int, help="default: the schedule's length")
    replay_cmd.add_argument("--seed", type=int, help="default: the run's seed")
    replay_cmd.add_argument("--metric", help="default: the run's metric")
    replay_cmd.add_argument(
        "--no-retrace",
        action="store_true",
        help="one random stream throughout, not the run's streams along the line",
    )
    replay_cmd.add_argument("--json", action="store_true", help="print the scores as JSON")
    report_cmd = reader("report", "write a self-contained HTML report of a run")
    report_cmd.add_argument("-o", "--output", default="report.html")
    report_cmd.add_argument("--png", help="also write the figures as PNG into this directory")
    tb_cmd = reader("tensorboard", "write a run's members and lineages for TensorBoard")
    tb_cmd.add_argument("--logdir", required=True, help="the TensorBoard log directory")
    tb_cmd.add_argument(
        "--follow", action="store_true", help="keep appending until the run has ended"
    )
    tb_cmd.add_argument(
        "--every", type=float, default=5.0, help="seconds between reads with --follow"
    )
    migrate_cmd = reader(
        "migrate",
        "rewrite a run's checkpoints of genepool's first format (pickles) in the safe one",
    )
    migrate_cmd.add_argument("--checkpoints", help="default: beside the SQLite file")
    migrate_cmd.add_argument(
        "--trust-checkpoints",
        action="store_true",
        help="required: the old checkpoints are read with pickle, which can run code",
    )
    revive_cmd = reader(
        "revive",
        "make a run's failed members active again, from their last checkpoint (resume the "
        "run to train them)",
    )
    revive_cmd.add_argument(
        "--member",
        type=int,
        nargs="+",
        help="only these members (default: every failed one)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    handlers = {
        "run": _run,
        "status": _status,
        "export": _export,
        "replay": _replay,
        "report": _report,
        "tensorboard": _tensorboard,
        "migrate": _migrate,
        "revive": _revive,
    }
    try:
        return handlers[args.command](args)
    except (GenepoolError, InvalidArgumentError) as err:
        _say(f"genepool: error: {err}", file=sys.stderr)
        # a storage that failed (try again once it is back), or anything else (fix it)
        return STORAGE_EXIT if isinstance(err, StorageFaultError) else 2


if __name__ == "__main__":
    raise SystemExit(main())
