"""What each ``genepool`` command does, given its parsed arguments.

:mod:`genepool.cli` holds the command line itself (its parser, its help and its exit
status) and the user's documentation; this module holds the commands: ``run`` (load the
trainable, read the config file, check or run), the commands that read a run back from its
store (``status``, ``export``, ``report``, ``tensorboard``, ``export-logs``), ``replay``,
and the two that mend a store (``migrate``, ``revive``), with what they share: the store's
URL from ``--storage`` or the environment, the store and the run opened read-only, an
output path checked before any work, and :func:`say`, which prints run data with its
passwords hidden.

Each command takes the parsed arguments and returns the exit status; :data:`COMMANDS` maps
the command's name to it. An error to fix is raised (as :func:`genepool._errors.invalid`
makes it), and the command line prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genepool._config import check_run, load_config, load_trainable, run_arguments
from genepool._errors import StorageFaultError, invalid
from genepool._progress import terminal_text
from genepool._redact import redact_url, shown
from genepool.loggers._spec import loggers_from_specs

if TYPE_CHECKING:
    from genepool.result import Result
    from genepool.store import Store

__all__ = ["COMMANDS", "STORAGE_ENV", "say"]

#: Where the commands read the store's URL from when no ``--storage`` is given.
STORAGE_ENV = "GENEPOOL_STORAGE"


def _run(args: argparse.Namespace) -> int:
    from genepool._run import run

    config = load_config(args.config) if args.config is not None else {}
    flags = {
        key: getattr(args, key) for key in ("storage", "name", "workers", "seed", "population")
    }
    with _no_bytecode(args.check):  # --check writes nothing, not even __pycache__
        trainable, module = load_trainable(args.trainable)
    options = run_arguments(config, trainable_module=module, overrides=flags)
    rate = args.log_rate
    if args.logger:  # the flags win over the file's
        options["loggers"] = loggers_from_specs(
            args.logger, owner="genepool run", name="--logger", rate=rate
        )
    elif options.get("loggers") is not None:  # the file names them: "mlflow:URI", ...
        options["loggers"] = loggers_from_specs(
            options["loggers"], owner="the config file", name="loggers", rate=rate
        )
    if "storage" not in options and os.environ.get(STORAGE_ENV):
        options["storage"] = os.environ[STORAGE_ENV]
    if args.resume:
        options["resume"] = True
    if args.trust_checkpoints:  # a flag only: never read from a file or a store
        options["trust_checkpoints"] = True
    if args.check:
        values, policy = check_run(trainable, options)
        keys = ("name", "metric", "mode", "population", "seed", "workers", "storage")
        checked = {key: values[key] for key in (*keys, "checkpoints", "resume")}
        for key in ("space", "ready", "budget"):
            checked[key] = repr(values[key])
        checked.update(exploit=repr(policy.exploit), explore=repr(policy.explore))
        say(json.dumps({"check": "ok", "trainable": args.trainable, **checked}, default=str))
        return 0
    progress = not args.quiet and sys.stdout.isatty()
    try:
        result = run(trainable, progress=progress, **options)
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


@contextlib.contextmanager
def _no_bytecode(on: bool) -> Iterator[None]:
    """While ``on``, imports write no ``__pycache__`` beside the files they import."""
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = before or on
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


def _writable(path: str, command: str, flag: str, *, folder: bool = False) -> Path:
    """``path``, checked before any work: a file (``folder``: a folder) this process can
    write, whose missing folders it can make."""
    owner, what = f"genepool {command}", "a folder" if folder else "a file"
    if not path or "\x00" in path:
        raise invalid(owner, flag, f"the path of {what}", shown(path), f"Fix: name {what}.")
    try:
        return _checked_output(Path(path), owner, flag, what)
    except OSError as err:  # a name too long, a loop of links
        got = f"{shown(path)} ({err.strerror or err})"
        raise invalid(owner, flag, f"the path of {what}", got, f"Fix: name {what}.") from None


def _checked_output(out: Path, owner: str, flag: str, what: str) -> Path:
    path, folder = str(out), what == "a folder"
    if out.exists() and out.is_dir() != folder:
        got = f"{shown(path)}, which is {'a file' if folder else 'a folder'}"
        raise invalid(owner, flag, f"the path of {what}", got, f"Fix: name {what}.")
    if out.exists() and not os.access(out, os.W_OK):
        raise invalid(owner, flag, f"{what} it can write", f"{shown(path)}, read-only")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        reason = "is a file" if not parent.is_dir() else "this process may not write in"
        got = f"{shown(path)}, in {shown(str(parent))}, which {reason}"
        fix = "Fix: choose a folder this process can write in."
        raise invalid(owner, flag, f"{what} in a folder it can write in", got, fix)
    return out


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
    if args.output is not None:
        output = _writable(args.output, "export", "--output")
        if not output.parent.is_dir():
            got = f"{shown(args.output)}, whose folder does not exist"
            fix = f"Fix: mkdir -p {output.parent}, or choose another path."
            raise invalid("genepool export", "--output", "a file in an existing folder", got, fix)
    with _opened_store(args, "export") as store:
        schedule = _open_result(args, "export", store).schedule(args.member)
    if args.output is None:
        print(schedule.to_json())
        return 0
    schedule.save(args.output)
    say(
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
    say(line)
    return 0


def _report(args: argparse.Namespace) -> int:
    from genepool.analysis import plot_report, write_report

    output = _writable(args.output, "report", "--output")  # its folder is made if missing
    if args.png is not None:
        _writable(args.png, "report", "--png", folder=True)
    with _opened_store(args, "report") as store:
        result = _open_result(args, "report", store)
        output = write_report(result, output)
        say(f"report of run {result.name!r} written to {output}")
        if args.png is not None:
            written = plot_report(result, Path(args.png))
            say(f"{len(written)} figures written to {args.png}")
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
    say(
        f"run {result.name!r} written to {args.logdir} "
        f"({len(result.reports)} reports of {len(result.population)} members; "
        f"view it with: tensorboard --logdir {args.logdir})"
    )
    return 0


def _export_logs(args: argparse.Namespace) -> int:
    """Send a run (finished or still going) to the loggers ``--logger`` names."""
    from genepool.loggers import LogFeed

    loggers = loggers_from_specs(
        args.logger, owner="genepool export-logs", name="--logger", rate=args.log_rate
    )
    with _opened_store(args, "export-logs") as store:
        result = _open_result(args, "export-logs", store)
        feed = LogFeed(loggers, store, result.name)
        sent = feed.once()
    out = {
        "run": result.name,
        "reports": sent,
        "members": len(result.population),
        "loggers": [repr(logger) for logger in loggers],
        "failed": [repr(logger) for logger in feed.dropped],
    }
    say(json.dumps(out))
    return 1 if feed.dropped else 0


def _migrate(args: argparse.Namespace) -> int:
    from genepool._migrate import migrate

    done = migrate(
        _storage(args, "migrate"),
        args.name,
        checkpoints=args.checkpoints,
        trust=bool(args.trust_checkpoints),
    )
    say(json.dumps(done.to_dict()))
    return 0


def _revive(args: argparse.Namespace) -> int:
    """Make a run's failed members active again; print which (a JSON object)."""
    with _opened_store(args, "revive", read_only=False) as store:
        name = _run_name(store, args.name, "revive")
        revived = store.revive(name, args.member)
    say(json.dumps({"run": name, "revived": revived}))
    return 0


def say(line: str, *, file: Any = None) -> None:
    """Print a line that shows run data or an error: its passwords hidden, and its
    control characters escaped (run data never writes escape sequences to a terminal)."""
    print(terminal_text(redact_url(line)), file=file)


#: Each command's name on the command line, and what it does.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run,
    "status": _status,
    "export": _export,
    "replay": _replay,
    "report": _report,
    "tensorboard": _tensorboard,
    "export-logs": _export_logs,
    "migrate": _migrate,
    "revive": _revive,
}
