"""Chaos: kill a run at random moments, resume it with the same call, until it completes.

A process-executor run (8 members, 2 workers, a few ms of work a step, SQLite; without
``--quick`` also PostgreSQL, at ``GENEPOOL_BENCH_POSTGRES_URL``, skipped with a note when
there is no server) runs under genepool's defaults for ``max_crashes``,
``lease_seconds`` and ``progress_timeout``. This script starts it as a separate driver
process and, at random moments, SIGKILLs the driver (a preempted job, the OOM killer), a
worker, or a worker that is inside its trainable's ``save`` (it signals so through a file),
then runs the same call again whenever the driver is gone, until the run completes or the
script gives up (300 resumes or 20 minutes: then it says so). It prints kills by kind,
members failed (target 0), members restarted from step 0 after their first checkpoint (0),
torn checkpoints loaded (0), members at budget (all), steps lost per kill (mean and max;
max at most one ready interval) and the peak disk use of the checkpoints.

``--disk-full`` (root only: it mounts a small tmpfs; otherwise it says why it skips) fills
the disk under the run mid-way, frees it and resumes: target 0 members failed.
``--long``: a serial run of 8 members, ready every step, no kills, with a score drawn
afresh each step (so the ranking changes at every ready: see ``Shuffle``), long enough for
at least 2,000 exploits (200 with ``--quick``; a run that falls short is replaced by one
sized from its exploits a step): the exploits it made, and the peak number and bytes of
checkpoints on disk; target at most members x (keep + 1) + live pins (a current and
``keep`` = 1 previous checkpoint per member, and at most one an exploit pins per member).
Its ``meets_target`` needs both the exploits and the peak.

``--long`` and ``--disk-full`` come in addition to the kills; ``--only PART`` runs one
part alone: ``kills``, ``long`` or ``disk-full``.

The last line printed is one JSON object. ``--quick`` is the smoke size CI runs (a few
kills, a short run; its ``meets_target`` values are about that size).

    python benchmarks/chaos.py                 # at least 100 kills (about 10 minutes)
    python benchmarks/chaos.py --quick
    python benchmarks/chaos.py --long --disk-full
    python benchmarks/chaos.py --only long     # 2,000 exploits, no kills (under a minute)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import genepool as gp
from genepool.store import open_store

POPULATION = 8
WORKERS = 2
READY = 4
STEP_SECONDS = 0.003
SAVE_SECONDS = 0.01  # a save takes this long, so that kills land inside some
PARTS = ("kills", "long", "disk-full")  # what --only names
SHARES = {"driver": 0.4, "worker": 0.3, "in_save": 0.3}  # of the kills, by kind
MARKER = "saving-"  # a file <dir>/saving-<pid> exists while that process is in save()
SPACE = gp.Space(lr=gp.Float(0.01, 0.5, log=True))


class Climb(gp.Trainable):
    """Climbs towards 1 at its rate, with a few ms of work a step; says when it saves."""

    def setup(self, hparams: Any) -> None:
        self.x, self.lr = 0.0, float(hparams["lr"])
        self.w = np.zeros(64)

    def apply_hparams(self, hparams: Any) -> None:
        self.lr = float(hparams["lr"])

    def step(self) -> dict[str, float]:
        end = time.perf_counter() + STEP_SECONDS
        while time.perf_counter() < end:
            pass
        self.x += self.lr * (1.0 - self.x) * 0.05
        self.w += self.lr
        _trained(self.member.id, self.member.step + 1)
        return {"score": self.x}

    def save(self) -> Any:
        marker = Path(os.environ["GENEPOOL_CHAOS_DIR"], f"{MARKER}{os.getpid()}")
        marker.touch()
        try:
            time.sleep(SAVE_SECONDS)
            return {"x": self.x, "w": self.w.copy()}
        finally:
            marker.unlink(missing_ok=True)

    def load(self, state: Any) -> None:
        self.x = float(state["x"])
        self.w = np.array(state["w"])


_TRAINED: dict[str, Any] = {}


def _trained(member: int, step: int) -> None:
    """Log a step as trained (``<dir>/trained-<pid>``: member, step, time), whether or not
    a kill later loses it: the store keeps only what was checkpointed."""
    f = _TRAINED.get("file")
    if f is None:
        path = Path(os.environ["GENEPOOL_CHAOS_DIR"], f"trained-{os.getpid()}")
        f = _TRAINED["file"] = open(path, "a", buffering=1)  # noqa: SIM115 - process-long
    f.write(f"{member} {step} {time.time()}\n")


def drive(storage: str, steps: int, checkpoints: str | None, name: str) -> None:
    """The run, as a user writes it: the same call each time (it resumes)."""
    result = gp.run(
        Climb,
        SPACE,
        metric="score",
        population=POPULATION,
        ready=gp.Every(READY),
        budget=gp.Budget(steps=steps),
        seed=0,
        storage=storage,
        checkpoints=checkpoints,
        workers=WORKERS,
        name=name,
    )
    print(json.dumps({"stop_reason": result.stop_reason}), flush=True)


# -- the one who kills ---------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """The pids of a process's children (Linux)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found += [int(p) for p in text.split()]
    return found


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


class DiskWatch:
    """Samples the bytes and the number of checkpoints under a folder, keeping the peak."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.peak_bytes = 0
        self.peak_count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def sample(self) -> None:
        size = count = 0
        # os.walk skips a directory removed while it looks (rglob raises there)
        for top, dirs, files in os.walk(self.folder):
            count += sum(name.startswith("s") for name in dirs)
            for name in files:
                with contextlib.suppress(OSError):
                    size += os.stat(os.path.join(top, name)).st_size
        self.peak_bytes = max(self.peak_bytes, size)
        self.peak_count = max(self.peak_count, count)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def chaos(
    *,
    storage: str,
    folder: Path,
    steps: int,
    kills_wanted: int,
    max_resumes: int,
    max_seconds: float,
    seed: int,
    delays: tuple[float, float] = (0.3, 2.5),
    name: str = "run",
) -> dict[str, Any]:
    """Run, kill and resume until the run completes or the limits are reached."""
    rng = random.Random(seed)
    env = {**os.environ, "GENEPOOL_CHAOS_DIR": str(folder)}
    checkpoints = str(folder / "checkpoints")
    command = [sys.executable, __file__, "--drive", storage, "--steps", str(steps)]
    command += ["--checkpoints", checkpoints, "--name", name]
    kills: Counter[str] = Counter()
    resumes = 0
    log = open(folder / "driver.log", "ab")  # noqa: SIM115 - kept open for every driver
    watch = DiskWatch(Path(checkpoints))
    started = time.monotonic()
    completed = False
    driver: subprocess.Popen[bytes] | None = None
    try:
        while time.monotonic() - started < max_seconds:
            if driver is None or driver.poll() is not None:
                if driver is not None and driver.returncode == 0:
                    completed = True
                    break
                if driver is not None:
                    resumes += 1
                    if resumes > max_resumes:
                        break
                driver = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            if sum(kills.values()) >= kills_wanted:
                driver.wait(timeout=max(1.0, max_seconds - (time.monotonic() - started)))
                continue
            deadline = time.monotonic() + rng.uniform(*delays)
            while time.monotonic() < deadline and driver.poll() is None:
                time.sleep(0.02)
            if driver.poll() is not None:
                continue
            # the kind furthest below its share (0.4 of the kills the driver's, 0.3 each
            # of the others), so that at least a third are the driver's at any size
            kind = min(SHARES, key=lambda k: (kills[k] / SHARES[k], rng.random()))
            if kind == "driver":
                if _kill(driver.pid):
                    kills["driver"] += 1
                    driver.wait()
            elif kind == "worker":
                workers = _children(driver.pid)
                if workers and _kill(rng.choice(workers)):
                    kills["worker"] += 1
            else:
                until = time.monotonic() + 2.0
                while time.monotonic() < until and driver.poll() is None:
                    saving = [int(p.name[len(MARKER) :]) for p in folder.glob(f"{MARKER}*")]
                    if saving and _kill(rng.choice(saving)):
                        kills["in_save"] += 1
                        break
                    time.sleep(0.001)
    finally:
        if driver is not None and driver.poll() is None:
            _kill(driver.pid)
            driver.wait()
        watch.stop()
        log.close()
    found = _read_back(storage, checkpoints, steps, folder, name)
    text = (folder / "driver.log").read_text(errors="replace")
    total = sum(kills.values())
    lost = found.pop("lost_steps")
    return {
        "completed": completed,
        "gave_up": None
        if completed
        else f"after {resumes} resumes and {time.monotonic() - started:.0f} s",
        "seconds": round(time.monotonic() - started, 1),
        "resumes": resumes,
        "kills": dict(kills, total=total),
        **found,
        "torn_checkpoints_loaded": text.count("is torn"),
        "steps_lost_per_kill_mean": round(sum(lost) / total, 2) if total else 0.0,
        "steps_lost_max": max(lost, default=0),
        "peak_checkpoint_bytes": watch.peak_bytes,
        "peak_checkpoints": watch.peak_count,
        "driver_errors": text.count("Traceback"),
    }


def _read_back(
    storage: str, checkpoints: str, steps: int, folder: Path, name: str = "run"
) -> dict[str, Any]:
    """What happened: failed members and members at budget (the store), restarts from
    step 0 after a first checkpoint, and each stretch of steps one process trained again
    that an earlier one had trained and no exploit explains: the steps lost to one kill
    (the trained-step logs, one per process, and the exploits). Two kills in a row of
    one member's round are two stretches, each at most a ready interval."""
    result = gp.Result.open(storage, name, checkpoints=checkpoints)
    population = list(result.population)
    timeline: dict[int, list[tuple[float, int, str, int]]] = {}
    for log in folder.glob("trained-*"):
        pid = int(log.name.split("-")[1])  # the process that trained them
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:  # (a kill may cut the last line short)
                member, step, when = int(parts[0]), int(parts[1]), float(parts[2])
                timeline.setdefault(member, []).append((when, step, "step", pid))
    for e in result.events:
        if e.kind == "exploit":
            timeline.setdefault(e.member, []).append((e.time, e.step, "exploit", 0))
    # a report of a ready step reaches the store only with that round's checkpoint
    checkpointed_at: dict[int, float] = {}
    for r in result.reports:
        if r.step >= READY:
            checkpointed_at[r.member] = min(checkpointed_at.get(r.member, r.time), r.time)
    lost: list[int] = []
    restarted = 0
    for member, entries in timeline.items():
        reached, stretch, from_zero, trainer = 0, 0, False, 0
        first_checkpoint = checkpointed_at.get(member, float("inf"))
        for when, step, kind, pid in sorted(entries):
            if kind == "exploit":  # it goes on from the donor's step
                if stretch:
                    lost.append(stretch)
                reached, stretch = 0, 0
                continue
            if pid != trainer:  # another process: what it trains again is one kill's loss
                if stretch:
                    lost.append(stretch)
                stretch, trainer = 0, pid
            if step <= reached:
                stretch += 1
                if step == 1 and when > first_checkpoint:
                    from_zero = True
            else:
                if stretch:
                    lost.append(stretch)
                stretch = 0
            reached = max(reached, step)
        if stretch:
            lost.append(stretch)
        restarted += from_zero
    return {
        "members": len(population),
        "members_failed": sum(m.status == "failed" for m in population),
        "members_at_budget": sum(m.step >= steps for m in population),
        "members_restarted_from_zero": restarted,
        "lost_steps": lost,
    }


class Shuffle(gp.Trainable):
    """The long run's trainable: Climb's few ms of work a step and its 64 floats of state,
    but a score drawn afresh at each step from the member's id and step alone.

    Climb's score grows with every step, and a serial run trains the members in turn, so
    at its ready a member is ranked against members still a step behind it, which score
    below it whatever their ``lr``: only the last one or two trained in a turn can be in
    the bottom quarter. Once every member's ``lr`` sits at the space's upper bound, their
    scores keep one order too, and exploits all but stop (31 in 100 steps of 8 members,
    where 200 were expected). Here the ranking is new at every ready, so exploits go on
    for as long as the run does."""

    def setup(self, hparams: Any) -> None:
        self.lr = float(hparams["lr"])
        self.w = np.zeros(64)

    def apply_hparams(self, hparams: Any) -> None:
        self.lr = float(hparams["lr"])

    def step(self) -> dict[str, float]:
        end = time.perf_counter() + STEP_SECONDS
        while time.perf_counter() < end:
            pass
        self.w += self.lr
        step = self.member.step + 1
        return {"score": float(np.random.default_rng([self.member.id, step]).random())}

    def save(self) -> Any:
        return {"w": self.w.copy()}

    def load(self, state: Any) -> None:
        self.w = np.array(state["w"])


KEEP = 1  # gp.run's default: each member keeps one checkpoint beyond its current one


def long_run(folder: Path, *, exploits_wanted: int, max_tries: int = 4) -> dict[str, Any]:
    """No kills: a serial run of :class:`Shuffle` long enough for ``exploits_wanted``
    exploits; the peak of checkpoints on disk against members x (keep + 1) + live pins (a
    member holds one pin at most: its exploit's donor checkpoint).

    A finished run cannot be resumed with a larger budget (its members are finished), so
    a run that falls short is replaced: a fresh one, its steps sized from the exploits a
    step the short one made, plus a tenth. The first guess, 5 a step, is below what 8
    members make (6 to 7: a member that has just exploited holds its donor's checkpoint,
    not one of its own, so it is no donor and the others rank among fewer members), so one
    run usually does."""
    steps = max(8, math.ceil(exploits_wanted / 5))
    started = time.monotonic()
    tries = exploits = 0
    watch: DiskWatch | None = None
    while tries < max_tries and exploits < exploits_wanted:
        if tries:  # too short: replace it with a longer one
            shutil.rmtree(folder / f"try-{tries}", ignore_errors=True)
            steps = math.ceil(1.1 * steps * exploits_wanted / max(exploits, 1))
        tries += 1
        here = folder / f"try-{tries}"
        here.mkdir()
        watch = DiskWatch(here / "long.db.checkpoints")
        result = gp.run(
            Shuffle,
            SPACE,
            metric="score",
            population=POPULATION,
            ready=gp.Every(1),
            exploit=gp.Truncation(0.25),
            budget=gp.Budget(steps=steps),
            seed=0,
            storage=f"sqlite:///{here / 'long.db'}",
            keep=KEEP,
        )
        watch.stop()
        with result:
            exploits = sum(e.kind == "exploit" for e in result.events)
    assert watch is not None
    target = POPULATION * (KEEP + 1) + POPULATION
    return {
        "tries": tries,
        "steps": steps,
        "exploits": exploits,
        "exploits_wanted": exploits_wanted,
        "seconds": round(time.monotonic() - started, 1),
        "peak_checkpoints": watch.peak_count,
        "peak_checkpoint_bytes": watch.peak_bytes,
        "target_checkpoints": target,
        "meets_target": watch.peak_count <= target and exploits >= exploits_wanted,
    }


def disk_full(folder: Path, *, steps: int, seed: int) -> dict[str, Any]:
    """Run on a small tmpfs, fill it mid-run, free it, resume: no member may fail."""
    if os.name != "posix" or os.geteuid() != 0:
        return {"skipped": "needs root, to mount a small tmpfs"}
    mount = folder / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        return {"skipped": f"could not mount a tmpfs: {done.stderr.decode().strip()}"}
    try:
        storage = f"sqlite:///{mount / 'pbt.db'}"
        env = {**os.environ, "GENEPOOL_CHAOS_DIR": str(folder)}
        command = [sys.executable, __file__, "--drive", storage, "--steps", str(steps)]
        with open(folder / "disk-full.log", "ab") as log:  # the first driver's, then ours
            driver = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            time.sleep(1.0)
            filler = mount / "filler"
            with contextlib.suppress(OSError), open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * (1 << 16))
            try:
                driver.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _kill(driver.pid)
                driver.wait()
            filler.unlink()
        with open(folder / "disk-full-resumed.log", "ab") as log:
            resumed = subprocess.run(command, env=env, stdout=log, stderr=log, timeout=600)
        found = _read_back(storage, str(mount / "pbt.db.checkpoints"), steps, folder)
        found.pop("lost_steps")
        said = (folder / "disk-full.log").read_text(errors="replace").splitlines()
        again = (folder / "disk-full-resumed.log").read_text(errors="replace").splitlines()
        return {
            "first_driver_exit": driver.returncode,
            # the error the first driver ended with (a StorageFaultError: exit 1)
            "first_driver_error": next((s for s in reversed(said) if "Error:" in s), None),
            "resumed_exit": resumed.returncode,
            **found,
            "meets_target": found["members_failed"] == 0 and resumed.returncode == 0,
            **({} if resumed.returncode == 0 else {"resumed_log_tail": again[-5:]}),
        }
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def _postgres(folder: Path, steps: int, kills: int, seconds: float, seed: int) -> Any:
    """The chaos run on PostgreSQL (GENEPOOL_BENCH_POSTGRES_URL, default the local test
    database), as a run of its own name; skipped with a note without a server."""
    url = os.environ.get("GENEPOOL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        open_store(url).runs()
    except Exception as err:  # no server here: say so
        return {"skipped": f"no PostgreSQL at the URL ({type(err).__name__})"}
    folder.mkdir()
    return chaos(
        storage=url,
        folder=folder,
        steps=steps,
        kills_wanted=kills,
        max_resumes=300,
        max_seconds=seconds,
        seed=seed,
        name=f"chaos-{os.getpid()}-{time.time_ns()}",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke size CI runs")
    parser.add_argument("--long", action="store_true", help="also the long run, no kills")
    parser.add_argument("--disk-full", action="store_true", help="also the full-disk part")
    parser.add_argument("--only", choices=PARTS, help="run this part alone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # the driver process
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="run", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        drive(args.drive, args.steps, args.checkpoints, args.name)
        return
    if args.only and (args.long or args.disk_full):
        parser.error("--only runs one part alone: leave out --long and --disk-full")
    parts = {args.only} if args.only else {"kills"}
    parts |= {"long"} if args.long else set()
    parts |= {"disk-full"} if args.disk_full else set()
    # the run must outlast the kills: about 14 ms of work a step for the population
    steps, kills, seconds = (300, 4, 120.0) if args.quick else (10000, 100, 1200.0)
    delays = (0.2, 0.8) if args.quick else (0.3, 2.5)
    out: dict[str, Any] = {"benchmark": "chaos", "quick": args.quick, "seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="genepool-chaos-") as tmp:
        folder = Path(tmp)
        if "kills" in parts:
            sqlite = chaos(
                storage=f"sqlite:///{folder / 'pbt.db'}",
                folder=folder,
                steps=steps,
                kills_wanted=kills,
                max_resumes=300,
                max_seconds=seconds,
                seed=args.seed,
                delays=delays,
            )
            sqlite["meets_target"] = (
                sqlite["completed"]
                and sqlite["members_failed"] == 0
                and sqlite["members_restarted_from_zero"] == 0
                and sqlite["torn_checkpoints_loaded"] == 0
                and sqlite["members_at_budget"] == POPULATION
                and sqlite["steps_lost_max"] <= READY
                and sqlite["kills"]["total"] >= kills
                and sqlite["kills"].get("driver", 0) * 3 >= sqlite["kills"]["total"]
                and (args.quick or sqlite["kills"].get("in_save", 0) >= 10)
            )
            out["sqlite"] = sqlite
            print(json.dumps({"sqlite": sqlite}), flush=True)
            if not args.quick:
                out["postgresql"] = _postgres(folder / "pg", steps, kills, seconds, args.seed)
                print(json.dumps({"postgresql": out["postgresql"]}), flush=True)
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            out["targets"] = {
                "members_failed": 0,
                "members_restarted_from_zero": 0,
                "torn_checkpoints_loaded": 0,
                "members_at_budget": POPULATION,
                "steps_lost_max": READY,
                "kills": kills,
                "driver_kills_share": 1 / 3,
                "in_save_kills": None if args.quick else 10,
            }
        if "long" in parts:
            long_folder = folder / "long"
            long_folder.mkdir()
            out["long"] = long_run(long_folder, exploits_wanted=200 if args.quick else 2000)
            print(json.dumps({"long": out["long"]}), flush=True)
        if "disk-full" in parts:
            full = folder / "full"
            full.mkdir()
            # a run whose own records fit the 8 MB disk twice over once it is freed
            out["disk_full"] = disk_full(full, steps=min(steps, 1000), seed=args.seed)
            print(json.dumps({"disk_full": out["disk_full"]}), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
