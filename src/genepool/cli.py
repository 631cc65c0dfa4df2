"""The command line: ``genepool run``, ``status``, ``export``, ``replay``, ``report``,
``tensorboard``, ``migrate``.

``genepool run train.py:train --config pbt.toml`` runs the trainable ``train`` of the file
``train.py`` (or of an importable module: ``mypkg.train:Trainer``) with the settings of the
config file (TOML, or YAML with the ``[yaml]`` extra). Flags override the file. Running the
same command again resumes the run from the store and the checkpoints.

The config file's format is documented in :mod:`genepool._config`; a sketch::

    metric = "accuracy"
    population = 8
    storage = "sqlite:///pbt.db"
    [budget]
    steps = 200
    [space]
    lr = { float = [1e-5, 1e-1], log = true }

``genepool run ... --check`` checks the config file, the flags and the trainable as the
run would, prints what the run would be (one JSON line) and exits, starting nothing and
creating no file. Every wrong input exits with status 2 and one line
``genepool: error: ...`` naming the key or flag, the value got and the fix.

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
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genepool._config import check_run, load_config, load_trainable, parse_space, run_arguments
from genepool._errors import GenepoolError, InvalidArgumentError, StorageFaultError, invalid
from genepool._faults import STORAGE_EXIT
from genepool._progress import terminal_text
from genepool._redact import redact_url, shown

if TYPE_CHECKING:
    from genepool.result import Result
    from genepool.store import Store

__all__ = ["load_config", "load_trainable", "main", "parse_space"]

log = logging.getLogger("genepool.cli")

#: Where the commands read the store's URL from when no ``--storage`` is given.
STORAGE_ENV = "GENEPOOL_STORAGE"

TRUST_HELP = (
    "let checkpoints hold any Python object (pickle) and read those of genepool's first "
    "format: reading them can run code, so the checkpoint storage must be as trusted as "
    "this code"
)


def _run(args: argparse.Namespace) -> int:
    from genepool._run import run

    config = load_config(args.config) if args.config is not None else {}
    flags = {
        key: getattr(args, key) for key in ("storage", "name", "workers", "seed", "population")
    }
    with _no_bytecode(args.check):  # --check writes nothing, not even __pycache__
        trainable, module = load_trainable(args.trainable)
    options = run_arguments(config, trainable_module=module, overrides=flags)
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
        _say(json.dumps({"check": "ok", "trainable": args.trainable, **checked}, default=str))
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

    output = _writable(args.output, "report", "--output")  # its folder is made if missing
    if args.png is not None:
        _writable(args.png, "report", "--png", folder=True)
    with _opened_store(args, "report") as store:
        result = _open_result(args, "report", store)
        output = write_report(result, output)
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
    run_cmd.add_argument(
        "--check",
        action="store_true",
        help="check the config, the flags and the trainable; print the run as JSON; run "
        "nothing and create no file",
    )

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
        one_line = re.sub(r"\s*\n\s*", " ", str(err))  # one line, however it was raised
        _say(f"genepool: error: {one_line}", file=sys.stderr)
        # a storage that failed (try again once it is back), or anything else (fix it)
        return STORAGE_EXIT if isinstance(err, StorageFaultError) else 2


if __name__ == "__main__":
    raise SystemExit(main())
