"""A whole population in one process (issue 17): genepool.vectorised against one member at
a time, worker processes, Ray Tune and plain PyTorch, side by side in one sitting.

Workload (benchmarks/vec_workloads.py): scikit-learn's digits (shipped with the package),
split 1,077 train / 360 validation / 360 test; batch 32, float32; cross entropy; SGD with
momentum. Models: ``mlp`` 64-32-10 and ``cnn`` (3x3 conv 8, 3x3 conv 16, linear 10), with
targets; ``mlp_large`` 64-256-256-10, ratios printed with no target. The same PBT for every
column: space lr log-uniform [1e-3, 0.3] and momentum uniform [0.5, 0.99],
``Truncation(0.25)`` and ``Perturb(resample=0.25)`` (Ray's defaults, as
benchmarks/vs_ray_tune.py), ready every ``ready`` steps, ``steps`` steps per member, metric
the validation accuracy (evaluated at the step that ends a round). The accuracy printed is
the best member's on the held-out test split.

Columns, at 1, 16, 64 and 256 members (some columns at a subset, see ``measured_how``):

- (a) ``vectorised``: ``genepool.vectorised.run`` on a new SQLite store, durable
  checkpoints of every member at every ready round (``checkpoint_every=1``, as the other
  columns checkpoint; a larger interval changed the MLP's time at 64 members by less than
  the noise); its data ``gpv.Sample`` over the training split (the same batches as
  the per-member function the other columns call, gathered for all members at once);
- (b) ``serial``: ``gp.run`` with the serial executor and a ``TorchTrainable`` (the torch
  integration), on a new SQLite store;
- (c) ``processes``: the same with ``workers=2`` (worker start-up counted; one torch
  thread per worker);
- (d) ``tune``: Ray Tune's ``PopulationBasedTraining`` at 64 members, configured as its PBT
  guide advises (function trainable, a checkpoint every perturbation interval,
  ``reuse_actors=True``, one CPU per trial, ``ray.init(num_cpus=2)``); skipped with a note
  where ray is missing;
- ``plain``: one member in a plain PyTorch loop (same steps, evaluation at every ready);
- ``jax`` (issue 19; the MLP, at 64 and 256 members): ``genepool.integrations.jax.run``,
  one ``jax.vmap`` of a plain-JAX/optax update over the members, on a new SQLite store
  with durable checkpoints at every ready round as (a) (benchmarks/vec_workloads_jax.py);
  each size compiled first by a 2-step run of the same size (its time printed apart),
  then timed. Skipped with a note where JAX is missing.

(b), (c) and (d) stop after a time window (``gp.Budget(seconds=)``, Tune's
``time_budget_s``); throughput = member-steps done (reports) / wall time of the whole call.
Peak memory: the process's RSS peak during the case (VmHWM reset per case), and for (c) and
(d) the peak summed RSS of the process and its descendants (sampled every 0.25 s).

Targets (issue 17, for ``mlp`` and ``cnn``): 64 members vectorised at least 10x the
throughput of (b) and of (c) and 100x (d); 16 members vectorised in at most 2x the wall
time of one member in plain PyTorch; final accuracy at 16 members (``--seeds`` seeds of
(a) and (b)) not worse than (b)'s beyond the larger range of the two over seeds.

Beside each target, ``ceiling_ratio``: the same ratio with (a) replaced by the arithmetic
alone (benchmarks/vec_ceiling.py: a stacked forward, backward and SGD update, with no
sampling, evaluation, store or checkpoint), the best any driver could do on this machine.
A throughput target above its ceiling ratio, or a wall target below it, cannot hold here.

Run: python benchmarks/vectorised.py [--quick | --gpu-quick | --jax]. The last line printed
is one JSON object. The full run took 12 to 27 minutes on two cores (the VM's speed drifts);
``--quick`` under a minute.
``--gpu-quick`` runs only the vectorised column on ``device="cuda"`` at 64, 256 and 1,024;
on such a machine run the GPU tests too: ``pytest -m gpu tests/vectorised``.
``--jax`` runs only the MLP's (a) and JAX columns at 64 and 256 members, side by side.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import vec_workloads as w
from benchutil import CpuMeter
from vec_ceiling import ceiling

import genepool as gp
from genepool import vectorised as gpv

FULL: dict[str, Any] = {
    "sizes": [1, 16, 64, 256],
    "steps": 400,
    "ready": 50,
    "seeds": 3,
    "serial_sizes": [1, 16, 64, 256],
    "process_sizes": [16, 64],
    "large_other_sizes": [64],
    "window_s": 60.0,
    "large_window_s": 30.0,
    "tune_population": 64,
    "tune_models": ["mlp", "cnn"],
    "tune_window_s": 120.0,
    "calls": 200,
    "jax_sizes": [64, 256],
}
QUICK: dict[str, Any] = {
    "sizes": [1, 16],
    "steps": 40,
    "ready": 10,
    "seeds": 2,
    "serial_sizes": [1, 16],
    "process_sizes": [16],
    "large_other_sizes": [16],
    "window_s": 10.0,
    "large_window_s": 10.0,
    "tune_population": 4,
    "tune_models": ["mlp"],
    "tune_window_s": 15.0,
    "calls": 20,
    "jax_sizes": [16],
}
GPU_SIZES = [64, 256, 1024]
TARGET_SERIAL, TARGET_PROCESSES, TARGET_TUNE, TARGET_WALL_16 = 10.0, 10.0, 100.0, 2.0
PBT: dict[str, Any] = {"exploit": gp.Truncation(0.25), "explore": gp.Perturb(resample=0.25)}


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


def _row(
    wall: float, member_steps: int, population: int, steps: int, **more: Any
) -> dict[str, Any]:
    return {
        "population": population,
        "wall_s": round(wall, 3),
        "member_steps": member_steps,
        "member_steps_per_s": round(member_steps / wall, 1),
        "completed": member_steps >= population * steps,
        **more,
    }


def run_vectorised(
    kind: str, n: int, sz: dict[str, Any], seed: int = 0, device: str | None = None
) -> dict[str, Any]:
    """(a): one ``genepool.vectorised.run`` on a new SQLite store."""
    with (
        tempfile.TemporaryDirectory(prefix="gp-vec-") as tmp,
        CpuMeter() as cpu,
        w.PeakMemory(tree=False) as mem,
    ):
        if device is not None:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = gpv.run(
            model=lambda: w.make_model(kind),
            loss=w.vec_loss,
            data=w.vec_sample(),
            evaluate=w.vec_evaluate,
            eval_data=w.eval_batch,
            space=w.SPACE,
            metric="val_acc",
            population=n,
            ready=gp.Every(sz["ready"]),
            budget=gp.Budget(steps=sz["steps"]),
            seed=seed,
            storage=f"sqlite:///{tmp}/run.db",
            checkpoint_every=1,
            device=device,
            **PBT,
        )
        wall = time.perf_counter() - start
        done = len(result.reports)
        acc = w.test_accuracy(kind, {k: v.cpu() for k, v in result.load()["model"].items()})
        result.close()
    row = _row(
        wall,
        done,
        n,
        sz["steps"],
        test_acc=round(acc, 4),
        seed=seed,
        **mem.as_dict(),
        machine=cpu.load.as_dict(),
    )
    if device is not None:
        row["cuda_peak_allocated_mb"] = _mb(torch.cuda.max_memory_allocated() // 1024)
    return row


def run_genepool(
    kind: str, n: int, sz: dict[str, Any], window: float, workers: int, seed: int = 0
) -> dict[str, Any]:
    """(b) with ``workers=1`` (the serial executor), (c) with ``workers=2``."""
    budget = gp.Budget(steps=sz["steps"], seconds=window)
    with (
        tempfile.TemporaryDirectory(prefix="gp-one-") as tmp,
        CpuMeter() as cpu,
        w.PeakMemory(tree=workers > 1) as mem,
    ):
        if workers > 1:
            os.environ["VEC_BENCH_THREADS"] = "1"  # the workers: one torch thread each
        start = time.perf_counter()
        try:
            result = gp.run(
                w.TRAINABLES[kind],
                w.SPACE,
                metric="val_acc",
                population=n,
                ready=gp.Every(sz["ready"]),
                budget=budget,
                seed=seed,
                storage=f"sqlite:///{tmp}/run.db",
                workers=workers,
                **PBT,
            )
        finally:
            os.environ.pop("VEC_BENCH_THREADS", None)
        wall = time.perf_counter() - start
        done = len(result.reports)
        stop = result.stop_reason
        acc = w.test_accuracy(kind, result.load()["models"]["model"])
        result.close()
    return _row(
        wall,
        done,
        n,
        sz["steps"],
        test_acc=round(acc, 4),
        seed=seed,
        stop_reason=stop,
        window_s=window,
        **mem.as_dict(),
        machine=cpu.load.as_dict(),
    )


def run_tune(kind: str, n: int, sz: dict[str, Any], window: float) -> dict[str, Any]:
    """(d): Ray Tune's PopulationBasedTraining, stopped after ``window`` seconds."""
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    mutations = {"lr": tune.loguniform(1e-3, 0.3), "momentum": tune.uniform(0.5, 0.99)}
    config = {**mutations, "model": kind, "interval": sz["ready"], "steps": sz["steps"]}
    with (
        tempfile.TemporaryDirectory(prefix="tune-vec-") as tmp,
        CpuMeter() as cpu,
        w.PeakMemory(tree=True) as mem,
    ):
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            began = time.perf_counter()
            scheduler = PopulationBasedTraining(
                time_attr="training_iteration",
                perturbation_interval=sz["ready"],
                hyperparam_mutations=mutations,
                quantile_fraction=0.25,
                resample_probability=0.25,
            )
            tuner = tune.Tuner(
                tune.with_resources(w.tune_digits, {"cpu": 1}),
                param_space=config,
                tune_config=tune.TuneConfig(
                    scheduler=scheduler,
                    metric="val_acc",
                    mode="max",
                    num_samples=n,
                    reuse_actors=True,
                    time_budget_s=window,
                ),
                run_config=tune.RunConfig(
                    name="vec",
                    storage_path=tmp,
                    verbose=0,
                    stop={"training_iteration": sz["steps"]},
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                ),
            )
            grid = tuner.fit()
            end = time.perf_counter()
            frames = [grid[i].metrics_dataframe for i in range(len(grid))]
            frames = [f for f in frames if f is not None and len(f)]
        finally:
            ray.shutdown()
    done = sum(len(f) for f in frames)
    # on a loaded machine a short window can end before any trial reports: say so
    best = max(frames, key=lambda f: float(f["val_acc"].iloc[-1])) if frames else None
    return _row(
        end - start,
        done,
        n,
        sz["steps"],
        member_steps_per_s_without_startup=round(done / (end - began), 1),
        test_acc=None if best is None else round(float(best["test_acc"].iloc[-1]), 4),
        window_s=window,
        **mem.as_dict(),
        machine=cpu.load.as_dict(),
    )


def run_plain(kind: str, sz: dict[str, Any]) -> dict[str, Any]:
    with CpuMeter() as cpu, w.PeakMemory() as mem:
        r = w.plain_loop(kind, sz["steps"], sz["ready"])
    return _row(
        r["wall_s"],
        r["member_steps"],
        1,
        sz["steps"],
        test_acc=round(r["test_acc"], 4),
        **mem.as_dict(),
        machine=cpu.load.as_dict(),
    )


def jax_column() -> tuple[Any, str | None]:
    """benchmarks/vec_workloads_jax.py, or why the JAX column is skipped."""
    try:
        return importlib.import_module("vec_workloads_jax"), None
    except ImportError as err:
        return None, f"skipped: JAX is not importable ({err})"


def run_jax_column(kind: str, sz: dict[str, Any], vec: dict[int, Any]) -> dict[str, Any]:
    """The JAX column (the MLP only), each size beside (a)'s figure at the same size."""
    wj, skipped = jax_column()
    if kind != "mlp" or wj is None:
        return {"skipped": skipped or "the JAX column is the MLP's"}
    column: dict[str, Any] = wj.column(sz, vec, PBT, say=lambda row: _say(kind, "jax", row))
    return column


def jax_only() -> dict[str, Any]:
    """``--jax``: the MLP's (a) and JAX columns at 64 and 256 members, one sitting."""
    sz = {**FULL, "sizes": FULL["jax_sizes"]}
    warm_up("mlp", serial=False)
    vec = {}
    for n in sz["sizes"]:
        vec[n] = run_vectorised("mlp", n, sz)
        _say("mlp", "vectorised", vec[n])
    return {
        "sizes": {k: sz[k] for k in ("steps", "ready", "jax_sizes")},
        "vectorised": vec,
        "jax": run_jax_column("mlp", sz, vec),
    }


def warm_up(kind: str, *, serial: bool = True) -> None:
    """First calls (lazy imports, torch's first kernels) outside every timed case."""
    tiny = {"steps": 4, "ready": 2}
    run_vectorised(kind, 2, tiny)
    if serial:
        run_genepool(kind, 2, tiny, 30.0, workers=1)
    w.plain_loop(kind, 4, 2)


def _say(kind: str, column: str, row: dict[str, Any]) -> None:
    mem = row.get("peak_rss_with_descendants_mb", row["peak_rss_mb"])
    print(
        f"{kind:9s} {column:10s} n={row['population']:4d}: {row['member_steps_per_s']:9.1f} "
        f"member-steps/s, wall {row['wall_s']:7.2f} s, test acc {_acc(row['test_acc'])}, "
        f"peak RSS {mem:.0f} MB{'' if row['completed'] else ' (window)'}",
        flush=True,
    )


def _acc(value: float | None) -> str:
    return "none (no trial reported)" if value is None else f"{value:.3f}"


def _spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    accs = [r["test_acc"] for r in rows]
    return {
        "test_acc": accs,
        "mean": round(statistics.fmean(accs), 4),
        "range": round(max(accs) - min(accs), 4),
    }


def bench_model(kind: str, sz: dict[str, Any], tune_ok: str | None) -> dict[str, Any]:
    large = kind == "mlp_large"
    warm_up(kind)
    out: dict[str, Any] = {"plain": run_plain(kind, sz)}
    _say(kind, "plain", out["plain"])
    vec, serial, procs = {}, {}, {}
    for n in sz["sizes"]:
        vec[n] = run_vectorised(kind, n, sz)
        _say(kind, "vectorised", vec[n])
    window = sz["large_window_s"] if large else sz["window_s"]
    for n in sz["large_other_sizes"] if large else sz["serial_sizes"]:
        serial[n] = run_genepool(kind, n, sz, window, workers=1)
        _say(kind, "serial", serial[n])
    for n in sz["large_other_sizes"] if large else sz["process_sizes"]:
        procs[n] = run_genepool(kind, n, sz, window, workers=2)
        _say(kind, "processes", procs[n])
    out.update(vectorised=vec, serial=serial, processes=procs)
    out["jax"] = run_jax_column(kind, sz, vec)
    if kind in sz["tune_models"] and tune_ok is None:
        out["tune"] = {
            sz["tune_population"]: run_tune(kind, sz["tune_population"], sz, sz["tune_window_s"])
        }
        _say(kind, "tune", out["tune"][sz["tune_population"]])
    else:
        out["tune"] = {"skipped": tune_ok or "not run for this model (time)"}
    ratios: dict[str, Any] = {}
    for name, col in (("serial", serial), ("processes", procs), ("tune", out["tune"])):
        for n, row in col.items():
            if n in vec and isinstance(row, dict) and row["member_steps_per_s"] > 0:
                ratio = vec[n]["member_steps_per_s"] / row["member_steps_per_s"]
                ratios[f"vectorised_vs_{name}_{n}"] = round(ratio, 2)
    out["throughput_ratios"] = ratios
    # the arithmetic alone (benchmarks/vec_ceiling.py): the most any driver could reach
    out["ceiling"] = ceiling(kind, [n for n in sz["sizes"] if n in (16, 64)], calls=sz["calls"])
    if 16 in vec:
        out["wall_16_vectorised_over_plain"] = round(vec[16]["wall_s"] / out["plain"]["wall_s"], 2)
    if not large and 16 in sz["sizes"]:  # the accuracy spread at 16 members, over seeds
        seeds_v = [vec[16]] + [run_vectorised(kind, 16, sz, seed=s) for s in range(1, sz["seeds"])]
        seeds_b = [serial[16]] if serial.get(16, {}).get("completed") else []
        seeds_b += [
            run_genepool(kind, 16, sz, 600.0, workers=1, seed=s)
            for s in range(len(seeds_b), sz["seeds"])
        ]
        out["accuracy_16"] = {"vectorised": _spread(seeds_v), "serial": _spread(seeds_b)}
    print(f"{kind}: ratios {ratios}", flush=True)
    return out


def judge(kind: str, m: dict[str, Any], sz: dict[str, Any]) -> dict[str, Any]:
    """Each target of the issue for one model: the figures, and whether it holds."""
    r, t = m["throughput_ratios"], {}
    p = 64 if 64 in sz["sizes"] else max(sz["sizes"])  # --quick judges its largest size
    for name, need in (
        ("serial", TARGET_SERIAL),
        ("processes", TARGET_PROCESSES),
        ("tune", TARGET_TUNE),
    ):
        key, most = f"vectorised_vs_{name}_{p}", m["ceiling"].get(f"stacked_{p}_member_steps_per_s")
        base = m.get(name, {}).get(p)
        t[key] = {
            "ratio": r.get(key),
            "target": need,
            "holds": None if key not in r else r[key] >= need,
            # the arithmetic alone at p members over the column: the largest ratio possible
            "ceiling_ratio": round(most / base["member_steps_per_s"], 2)
            if most and isinstance(base, dict) and base.get("member_steps_per_s")
            else None,
        }
    wall = m.get("wall_16_vectorised_over_plain")
    t["wall_16_over_plain"] = {
        "ratio": wall,
        "target": TARGET_WALL_16,
        "holds": None if wall is None else wall <= TARGET_WALL_16,
        "ceiling_ratio": m["ceiling"].get("stacked_16_wall_over_plain_1"),  # the least possible
    }
    acc = m.get("accuracy_16")
    if acc:
        v, b = acc["vectorised"], acc["serial"]
        worse = round(b["mean"] - v["mean"], 4)
        spread = max(v["range"], b["range"])
        t["accuracy_16"] = {
            "vectorised_mean": v["mean"],
            "serial_mean": b["mean"],
            "worse_by": worse,
            "spread": spread,
            "holds": worse <= spread,
        }
    for name, x in t.items():
        print(f"{kind} target {name}: {x} -> {'n/a' if x['holds'] is None else x['holds']}")
    return t


def gpu_quick() -> dict[str, Any]:
    if not torch.cuda.is_available():
        sys.exit("--gpu-quick needs a CUDA device (torch.cuda.is_available() is False here)")
    sz = {"steps": 200, "ready": 50}
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "steps": 200, "ready": 50}
    for kind in w.MODELS:
        run_vectorised(kind, 4, {"steps": 4, "ready": 2}, device="cuda")
        for n in GPU_SIZES:
            row = run_vectorised(kind, n, sz, device="cuda")
            _say(kind, "cuda", row)
            out[f"{kind}_{n}"] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="smallest sizes, few steps")
    group.add_argument("--gpu-quick", action="store_true", help="vectorised on CUDA only")
    group.add_argument("--jax", action="store_true", help="the MLP's (a) and JAX columns only")
    args = parser.parse_args()
    began = time.perf_counter()
    if args.jax:
        os.environ["VEC_BENCH_READY"] = str(FULL["ready"])
        summary = {"benchmark": "vectorised --jax", **jax_only(), "torch": torch.__version__}
        summary.update(cpus=os.cpu_count(), total_s=round(time.perf_counter() - began, 1))
        print(json.dumps(summary, default=str))
        return
    if args.gpu_quick:
        summary = {"benchmark": "vectorised --gpu-quick", **gpu_quick()}
        print(json.dumps(summary, default=str))
        return
    sz = QUICK if args.quick else FULL
    os.environ["VEC_BENCH_READY"] = str(sz["ready"])  # the trainables read it (workers too)
    try:
        import ray  # noqa: F401

        tune_ok: str | None = None
    except ImportError as err:
        tune_ok = f"skipped: ray is not importable ({err})"
        print(f"Ray Tune {tune_ok}")
    models, targets = {}, {}
    with CpuMeter() as cpu:
        for kind in w.MODELS:
            models[kind] = bench_model(kind, sz, tune_ok)
            if kind != "mlp_large":
                targets[kind] = judge(kind, models[kind], sz)
    summary = {
        "benchmark": "vectorised",
        "quick": args.quick,
        "sizes": dict(sz),
        "models": {k: w.DESCRIPTIONS[k] for k in w.MODELS},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "jax": jax_column()[1] or importlib.import_module("jax").__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "checkpoint_every": 1,
        "checkpoint_note": "every member is checkpointed durably at every ready round, as in "
        "the other columns (checkpoint_every=1)",
        "measured_how": {
            "vectorised": "every member runs the whole step budget; wall = the gpv.run call "
            "(store creation, checkpoints, evaluation included)",
            "serial": "gp.run, serial executor, Budget(steps, seconds=window): member-steps "
            "= reports in the run's history, / wall of the call",
            "processes": "as serial with workers=2 (worker start-up counted, 1 torch thread "
            "each); peak memory includes the workers",
            "tune": "Ray Tune PBT, time_budget_s=window; member-steps = rows reported by all "
            "trials, / wall of ray.init + Tuner.fit; peak memory includes Ray's processes",
            "plain": "one member, plain PyTorch loop, same steps, evaluation at every ready",
            "jax": "the MLP only: genepool.integrations.jax.run (vmap of a plain-JAX update), "
            "new SQLite store, checkpoint_every=1; each size compiled by an untimed 2-step "
            "run first (first_run_compile_s); wall = the timed gpj.run call",
            "accuracy": "test accuracy of the best member (by validation accuracy); "
            "accuracy_16 repeats (a) and (b) at 16 members over seeds",
            "window_s": sz["window_s"],
            "large_window_s": sz["large_window_s"],
            "tune_window_s": sz["tune_window_s"],
        },
        "results": models,
        "targets": targets,
        "machine_load": cpu.load.as_dict(),
        "total_s": round(time.perf_counter() - began, 1),
    }
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
