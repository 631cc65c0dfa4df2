"""What a tracker costs a value: the figures behind ``gp.loggers.RATE`` (issue 22).

Writes the same metrics through each tracker's own client, as the loggers do, and prints
the CPU time each value (MLflow) or row (W&B) took:

- MLflow's folder store and its SQLite store, ``log_batch`` of 30 and of 999 values (the
  loggers send a member's points of one read in one batch): CPU of this process.
- W&B offline, one ``run.log`` per row of three values, as the logger writes a point:
  CPU of this process (W&B's Python side) and of W&B's service process (its descendants,
  from ``/proc``).

Each figure is the median of ``--repeats`` runs. Nothing leaves the machine (files in a
temporary folder; W&B offline).

Run: python benchmarks/logger_cost.py [--quick] [--repeats 3]
Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in for a folder
os.environ.setdefault("WANDB_SILENT", "true")

RUNS = 8  # a population's members: one tracker run each
KEYS = ("score", "work_s", "hparams/lr")


def _children_cpu() -> float:
    """CPU seconds of this process's descendants (W&B's service) that are running, read
    from ``/proc`` (Linux; 0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the command's name
        except OSError:  # gone
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    mine, total = {os.getpid()}, 0.0
    grew = True
    while grew:  # the descendants: children of those found so far
        found = {pid for pid, parent in parents.items() if parent in mine} - mine
        grew = bool(found)
        mine |= found
        total += sum(cpu[pid] for pid in found)
    return total


def mlflow_per_value(store: str, batch: int, values: int) -> float:
    """Seconds of CPU a value, ``log_batch`` of ``batch`` values to 8 runs of a new store."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="genepool-bench-") as folder:
        uri = f"file://{folder}/mlruns" if store == "folder" else f"sqlite:///{folder}/ml.db"
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("cost")
        runs = [client.create_run(experiment).info.run_id for _ in range(RUNS)]
        steps = max(batch // len(KEYS), 1)
        sent, step = 0, 0
        began = time.process_time()
        while sent < values:
            for run in runs:
                metrics = [
                    Metric(k, 0.5, 1_700_000_000_000 + s, s)
                    for s in range(step, step + steps)
                    for k in KEYS
                ]
                client.log_batch(run, metrics=metrics)
                sent += len(metrics)
            step += steps
        return (time.process_time() - began) / sent


def wandb_per_row(rows: int) -> tuple[float, float]:
    """Seconds of CPU a row, in this process and in W&B's service, to 8 offline runs."""
    import wandb

    with tempfile.TemporaryDirectory(prefix="genepool-bench-") as folder:
        runs = [
            wandb.init(project="cost", mode="offline", dir=folder, reinit="create_new")
            for _ in range(RUNS)
        ]
        service = _children_cpu()
        began = time.process_time()
        for step in range(rows // RUNS):
            for run in runs:
                run.log({"step": step, "score": 0.5, "work_s": 0.01, "hparams/lr": 0.1})
        python = time.process_time() - began
        for run in runs:
            run.finish()
        sent = rows // RUNS * RUNS
        return python / sent, (_children_cpu() - service) / sent


def median_of(repeats: int, measure: Callable[[], Any]) -> Any:
    found = [measure() for _ in range(repeats)]
    if isinstance(found[0], tuple):
        return tuple(statistics.median(parts) for parts in zip(*found, strict=True))
    return statistics.median(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke size, for CI")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    values = 600 if args.quick else 12_000
    repeats = 1 if args.quick else args.repeats
    out: dict[str, Any] = {"benchmark": "logger_cost", "quick": args.quick, "runs": RUNS}
    for store in ("folder", "sqlite"):
        for batch in (30, 999):
            cost = median_of(repeats, partial(mlflow_per_value, store, batch, values))
            out[f"mlflow_{store}_batch{batch}_ms_per_value"] = round(cost * 1e3, 4)
            print(f"MLflow {store} store, log_batch of {batch}: {cost * 1e3:.3f} ms a value")
    python, service = median_of(repeats, partial(wandb_per_row, values // 3))
    out["wandb_offline_python_ms_per_row"] = round(python * 1e3, 4)
    out["wandb_offline_service_ms_per_row"] = round(service * 1e3, 4)
    print(f"W&B offline: {python * 1e3:.3f} ms a row here, {service * 1e3:.3f} ms in its service")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
