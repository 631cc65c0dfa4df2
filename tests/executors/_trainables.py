"""Trainables for the process, kill, resume, failure and command-line tests: importable by
worker processes.

Each one appends a line to the file named by its ``log`` hyperparameter (a fixed value):
``start <member> <step> <pid>`` whenever training (re)starts, with the step it starts from,
``step <member> <step> <pid>`` at each step, and ``kill <member> <step> <pid>`` just before
it kills a process. Each step reports the score, one draw from ``member.rng`` and whether
the step came after a hang (``woke``).

What goes wrong comes from inside the trainable, when a trigger file (the ``trigger``
hyperparameter) says so, never from sleeps. Its lines are ``<action> <member> <step>``
(member ``*``: any), with an optional ``always``: the action fires the first time that
member trains a step at or past that step (once: the line is then commented out), or every
time with ``always``.

Actions at a step: ``sigint`` (SIGINT to this process), ``sigint-driver`` (SIGINT to the
parent: the driver of worker processes, which passes it on to its workers), ``sigkill``
(SIGKILL to this process), ``sigkill-driver`` (SIGKILL to the parent), ``raise`` (a
RuntimeError), ``hang`` (block forever), ``hang-until-taken-over`` (block until another
process has started training this member, then go on as if nothing happened).

Actions when :class:`Climber` saves (the class API only): ``torn`` (SIGKILL half-way
through writing the checkpoint's payload: the write is torn where a crash would tear it),
``orphan`` (SIGKILL right after the checkpoint is written, before the worker records it:
a checkpoint nothing refers to; its id is noted in the log as ``orphan <id>``).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import genepool as gp

STEP_ACTIONS = (
    "sigint",
    "sigint-driver",
    "sigkill",
    "sigkill-driver",
    "raise",
    "hang",
    "hang-until-taken-over",
)
SAVE_ACTIONS = ("torn", "orphan")
#: How long ``hang-until-taken-over`` waits at most (a safety net: the test then fails).
TAKEOVER_WAIT = 60.0


def space(log: str, trigger: str = "") -> gp.Space:
    """The test space: one real hyperparameter, and the log and trigger files, fixed."""
    return gp.Space(lr=gp.Float(0.01, 0.5, log=True), log=log, trigger=trigger)


def note(path: str, kind: str, member: int, step: int) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{kind} {member} {step} {os.getpid()}\n")
        f.flush()


def read_log(path: str) -> list[tuple[str, int, int, int]]:
    """The log's lines as (kind, member, step, pid); ``orphan`` lines are left out (see
    :func:`orphans`)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("orphan "):
            continue
        kind, member, step, pid = line.split()
        out.append((kind, int(member), int(step), int(pid)))
    return out


def orphans(path: str) -> list[str]:
    """The ids of the checkpoints written by a worker killed before it recorded them."""
    text = Path(path).read_text(encoding="utf-8")
    return [line.split()[1] for line in text.splitlines() if line.startswith("orphan ")]


def mark(path: str) -> None:
    """A ``mark`` line: what a later run writes comes after it."""
    note(path, "mark", 0, 0)


def after_mark(lines: list[tuple[str, int, int, int]]) -> list[tuple[str, int, int, int]]:
    """The lines after the last ``mark`` line."""
    marks = [i for i, line in enumerate(lines) if line[0] == "mark"]
    return lines[marks[-1] + 1 :] if marks else lines


def no_restart_from_zero(lines: list[tuple[str, int, int, int]], ready: int) -> None:
    """After a member's first ready (a checkpoint exists), it never starts from step 0."""
    checkpointed: set[int] = set()
    for kind, member, step, _ in lines:
        if kind == "step" and step > ready:  # past its first ready: that checkpoint is in
            checkpointed.add(member)
        if kind == "start" and member in checkpointed:
            assert step > 0, f"member {member} restarted from step 0 after its first checkpoint"


def _taken_over(log: str, member: int, since: int) -> bool:
    """Whether another process trained ``member`` after line ``since`` of the log (it may
    have had the member in memory still, and so started no new trainable)."""
    lines = read_log(log)[since:]
    return any(
        k in ("start", "step") and m == member and pid != os.getpid() for k, m, _, pid in lines
    )


def interrupt_driver() -> None:
    """SIGINT to the driver. In a worker's main thread, wait (30 s at most) until the
    driver has passed the interrupt on to this worker, so the stop lands at this step."""
    if threading.current_thread() is not threading.main_thread():
        os.kill(os.getppid(), signal.SIGINT)
        return
    got: list[int] = []
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        got.append(signum)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        os.kill(os.getppid(), signal.SIGINT)
        deadline = time.monotonic() + 30.0
        while not got and time.monotonic() < deadline:
            threading.Event().wait(0.01)  # the handler runs in this thread meanwhile
    finally:
        signal.signal(signal.SIGINT, previous)


def due(path: str, member: int, step: int, actions: tuple[str, ...]) -> list[str]:
    """The trigger file's ``actions`` due for ``member`` at ``step`` (lines that fire once
    are commented out). Processes read and comment out under a lock: two workers that read
    a line before either comments it out would both act on it."""
    if not path or not os.path.exists(path):
        return []
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        found: list[str] = []
        for i, line in enumerate(lines):
            parts = line.split()
            if len(parts) not in (3, 4) or parts[0] not in actions:
                continue
            if parts[1] not in ("*", str(member)) or step < int(parts[2]):
                continue
            if len(parts) == 3:
                lines[i] = "#" + line  # fire once
                Path(path).write_text("\n".join(lines), encoding="utf-8")
            found.append(parts[0])
    return found


def trigger(path: str, log: str, member: int, step: int) -> bool:
    """Carry out the trigger file's step actions due for ``member`` at ``step``; True if
    this step comes after a hang that ended."""
    woke = False
    for action in due(path, member, step, STEP_ACTIONS):
        if action == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
        elif action == "sigint-driver":
            interrupt_driver()
        elif action == "sigkill":
            note(log, "kill", member, step)
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "sigkill-driver":
            note(log, "kill", member, step)
            driver = os.getppid()
            os.kill(driver, signal.SIGKILL)
            # go no further while the driver is dying: this worker dies with it (the
            # member stays held, so the other workers cannot finish the run meanwhile)
            while os.getppid() == driver:
                threading.Event().wait(0.01)
        elif action == "raise":
            raise RuntimeError(f"member {member} fails at step {step}")
        elif action == "hang":
            note(log, "hang", member, step)
            threading.Event().wait()
        elif action == "hang-until-taken-over":
            since = len(read_log(log))
            note(log, "hang", member, step)
            deadline = time.monotonic() + TAKEOVER_WAIT
            while not _taken_over(log, member, since) and time.monotonic() < deadline:
                threading.Event().wait(0.05)  # polls a file another process writes
            note(log, "woke", member, step)
            woke = True
    return woke


class Climber(gp.Trainable):
    """x climbs towards 1 at rate lr; the score is x."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.steps = 0
        self.hp = dict(hparams)
        self.fresh = True  # log the step training (re)starts from at the first step

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.hp = dict(hparams)

    def step(self) -> dict[str, float]:
        log = self.hp["log"]
        if self.fresh:
            note(log, "start", self.member.id, self.steps)
            self.fresh = False
        self.steps += 1
        woke = trigger(self.hp["trigger"], log, self.member.id, self.steps)
        self.x += float(self.hp["lr"]) * (1.0 - self.x)
        draw = float(self.member.rng.random())
        note(log, "step", self.member.id, self.steps)
        return {"score": self.x, "draw": draw, "woke": float(woke)}

    def save(self) -> dict[str, float]:
        log = self.hp["log"]
        for action in due(self.hp["trigger"], self.member.id, self.steps, SAVE_ACTIONS):
            note(log, "kill", self.member.id, self.steps)
            if action == "torn":
                _arm_torn_write()
            else:
                _arm_orphan(log)
        return {"x": self.x, "steps": self.steps}

    def load(self, state: Mapping[str, float]) -> None:
        self.x = float(state["x"])
        self.steps = int(state["steps"])
        self.fresh = True


def climber_function(member: gp.Member) -> None:
    """The same through the function API (step actions only)."""
    state = member.restore()
    x = 0.0 if state is None else float(state["x"])
    steps = 0 if state is None else int(state["steps"])
    hp = member.hparams
    note(hp["log"], "start", member.id, steps)
    while member.running:
        steps += 1
        woke = trigger(hp["trigger"], hp["log"], member.id, steps)
        x += float(hp["lr"]) * (1.0 - x)
        draw = float(member.rng.random())
        note(hp["log"], "step", member.id, steps)
        member.report(score=x, draw=draw, woke=float(woke), state={"x": x, "steps": steps})


def _arm_torn_write() -> None:
    """The next checkpoint payload written in this process stops half-way: SIGKILL."""
    from genepool.checkpoints import PAYLOAD_FILE, _files

    original = _files.write_file

    def torn(path: str, data: bytes, *, fsync: bool) -> None:
        if not path.endswith(PAYLOAD_FILE):
            original(path, data, fsync=fsync)
            return
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    _files.write_file = torn


def _arm_orphan(log: str) -> None:
    """The next checkpoint written in this process is complete, and then this process dies
    (SIGKILL) before anyone records it: the checkpoint is an orphan."""
    original = gp.LocalCheckpoints.put

    def put_then_die(self: gp.LocalCheckpoints, *args: Any, **kwargs: Any) -> str:
        checkpoint_id = original(self, *args, **kwargs)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"orphan {checkpoint_id}\n")
        os.kill(os.getpid(), signal.SIGKILL)
        return checkpoint_id

    gp.LocalCheckpoints.put = put_then_die  # type: ignore[method-assign]


def environment_reporter(member: gp.Member) -> None:
    """Reports the worker's thread cap and device as metrics (for the executor's tests)."""
    threads = float(os.environ.get("OMP_NUM_THREADS", "-1"))
    device = float(os.environ.get("CUDA_VISIBLE_DEVICES", "-1"))
    while member.running:
        member.report(score=float(member.hparams["lr"]), threads=threads, device=device, state=0)


class RecordingTruncation(gp.Truncation):
    """Truncation that appends what each decision saw to a file (one JSON line each): the
    deciding member's ready rounds, and the ready rounds and checkpoint counters of every
    active member. It runs in worker processes, so it records to a file."""

    def __init__(self, path: str, fraction: float = 0.25) -> None:
        super().__init__(fraction)
        self.path = path

    def select(
        self, population: gp.Population, member: gp.MemberView, rng: np.random.Generator
    ) -> gp.MemberView | None:
        active = [m for m in population if m.status == "active"]
        seen = {
            "member": member.id,
            "ready_count": member.ready_count,
            "failed": member.failed,
            "others": [m.ready_count for m in active],
            "counters": [m.checkpoint.counter if m.checkpoint else None for m in active],
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(seen) + "\n")
        return super().select(population, member, rng)

    def __repr__(self) -> str:
        return f"RecordingTruncation({self.path!r}, {self.fraction!r})"


def read_decisions(path: str) -> list[dict[str, Any]]:
    """What :class:`RecordingTruncation` wrote."""
    if not os.path.exists(path):
        return []
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


class HeldCheckpoint(gp.LocalCheckpoints):
    """Local checkpoints that hold the worker writing member ``member``'s checkpoint at
    ``step`` (once, across processes), after the write and before the worker records it:
    until the store (``storage``) shows every other active member waiting at the
    synchronous barrier with ``step`` done, or the log shows member ``waiter`` training
    past ``step`` (which a barrier that does not wait for the held member would let it
    do), ``wait`` seconds at most. Why the hold ended is written to :attr:`fired`."""

    def __init__(
        self,
        root: str,
        *,
        storage: str,
        log: str,
        member: int,
        step: int,
        waiter: int,
        wait: float = 60.0,
    ) -> None:
        super().__init__(root)
        self.storage, self.log, self.member, self.step = storage, log, member, step
        self.waiter, self.wait = waiter, wait

    @property
    def fired(self) -> str:
        """A file that exists once the write was held (so it is held once)."""
        return self.root + ".held"

    def put(self, run: str, member: int, step: int, blob: bytes, **kw: Any) -> str:
        checkpoint_id = super().put(run, member, step, blob, **kw)
        if member != self.member or step != self.step:
            return checkpoint_id
        try:
            held = open(self.fired, "x", encoding="utf-8")  # noqa: SIM115
        except FileExistsError:
            return checkpoint_id
        from genepool.store.sql import SQLStore

        store = SQLStore(self.storage)
        deadline = time.monotonic() + self.wait
        why = "timeout"
        while time.monotonic() < deadline:
            if any(
                k == "step" and m == self.waiter and s > step for k, m, s, _ in read_log(self.log)
            ):
                why = "trained"
                break
            others = [m for m in store.population(run) if m.status == "active" and m.id != member]
            if all(m.pending and m.step == step for m in others):
                why = "barrier"
                break
            threading.Event().wait(0.02)  # polls what other processes write
        store.close()
        with held:
            held.write(why)
        return checkpoint_id
