"""The command line: ``genepool run``, ``status``, ``export``, ``replay``, ``report``,
``tensorboard``, ``export-logs``, ``migrate``.

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
    genepool export-logs --storage sqlite:///pbt.db --logger mlflow:sqlite:///mlflow.db

Checkpoints hold plain data, arrays and tensors, and reading one never runs code. A run
whose state holds other Python objects needs ``genepool run ... --trust-checkpoints``
(they are stored with pickle, and read only by code that passes it). Checkpoints written
by genepool before its safe format are pickles: ``genepool migrate --storage URL
--trust-checkpoints`` rewrites them once, and then nothing needs trust to read them.

``export`` writes the best member's hyperparameter schedule (or the given member's) as
JSON; ``replay`` trains one fresh member with it and prints its score; ``tensorboard``
writes every member's scores and hyperparameters, and each member's lineage as one curve,
and with ``--follow`` keeps appending while the run goes; ``export-logs`` sends the same to
MLflow (``--logger mlflow:TRACKING_URI``) or Weights & Biases (``--logger wandb:PROJECT``,
with ``WANDB_MODE=offline`` for files only), as ``genepool run --logger`` does while it
runs (or ``loggers = [...]`` in the config file), and exits 1 if a logger failed.

Without ``--storage`` (and, for ``run``, without ``storage`` in the config file), every
command reads the store's URL from the environment variable ``GENEPOOL_STORAGE``: a
password in the URL then stays off the command line, which ``ps`` shows to every user.
No command shows a URL's password: errors and tables show it as ``***``.

Exit status: 0 done; 1 ``export-logs`` had a logger fail (a warning says why); 2 an error
to fix (the message says how); 75 the storage failed (a
full disk, an I/O error, a database out of reach): ``run`` then prints
``"stop_reason": "storage"``, its members wait, active, and the same command resumes the
run once the storage is back.

This module is the command line (its arguments, its help, its exit status); what each
command does is in :mod:`genepool._cli_commands`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from genepool._cli_commands import COMMANDS, STORAGE_ENV, say
from genepool._config import load_config, load_trainable, parse_space
from genepool._errors import GenepoolError, InvalidArgumentError, StorageFaultError
from genepool._faults import STORAGE_EXIT
from genepool.loggers._base import RATE
from genepool.loggers._spec import SPEC_HELP

__all__ = ["load_config", "load_trainable", "main", "parse_space"]

log = logging.getLogger("genepool.cli")

TRUST_HELP = (
    "let checkpoints hold any Python object (pickle) and read those of genepool's first "
    "format: reading them can run code, so the checkpoint storage must be as trusted as "
    "this code"
)


LOGGER_HELP = (
    f"send the run to a logger: {SPEC_HELP} (repeat for several; W&B's mode and folder "
    "from WANDB_MODE, WANDB_DIR)"
)


LOG_RATE_HELP = (
    "the most points a second the loggers send of the whole run (default 5: each member's "
    "curve at one point every population/5 seconds, and its last; every event), or 'all' "
    "for every point"
)


def _log_rate(text: str) -> float | None:
    """``--log-rate``: a number of points a second, or ``all`` (``None``: every point)."""
    if text == "all":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of points a second: give e.g. 5, or 'all'"
        ) from None


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
    run_cmd.add_argument("--logger", action="append", metavar="SPEC", help=LOGGER_HELP)
    run_cmd.add_argument("--log-rate", type=_log_rate, default=RATE, help=LOG_RATE_HELP)
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
    logs_cmd = reader("export-logs", "send a run's members, events and lineages to MLflow or W&B")
    logs_cmd.add_argument(
        "--logger", action="append", metavar="SPEC", required=True, help=LOGGER_HELP
    )
    logs_cmd.add_argument("--log-rate", type=_log_rate, default=RATE, help=LOG_RATE_HELP)
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
    try:
        return COMMANDS[args.command](args)
    except (GenepoolError, InvalidArgumentError) as err:
        one_line = re.sub(r"\s*\n\s*", " ", str(err))  # one line, however it was raised
        say(f"genepool: error: {one_line}", file=sys.stderr)
        # a storage that failed (try again once it is back), or anything else (fix it)
        return STORAGE_EXIT if isinstance(err, StorageFaultError) else 2


if __name__ == "__main__":
    raise SystemExit(main())
