"""Local worker processes: the embedded default for real training on one machine.

Each process runs the same :class:`~genepool.worker.Worker` loop as the serial executor;
the processes meet only through the durable store and the checkpoint directory. The
driver starts them, replaces one that dies, and forwards a stop; it holds no state of
its own that a crash could lose.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import cloudpickle

from genepool._errors import StorageError, StorageFaultError, invalid
from genepool._faults import STORAGE_EXIT, abandon, leases_from_json, leases_to_json
from genepool.checkpoints import MemoryCheckpoints
from genepool.store import MemoryStore
from genepool.worker import RunContext, Worker, collect_orphans, ended_because

__all__ = ["ProcessExecutor", "refuse_in_memory"]

log = logging.getLogger("genepool.executors")

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def _die_with_parent(parent: int) -> None:
    """End this worker when the driver dies (its leases then run out or are taken over):
    at once on Linux (the kernel's parent-death signal), within half a second elsewhere."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(3)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def worker_main(blob: bytes, index: int, parent: int, faults: int | None = None) -> str:
    """The body of a worker process (see ``genepool.executors._child``). On a storage
    fault it writes the error and the leases it left behind to the file descriptor
    ``faults`` (JSON) and exits with :data:`~genepool._faults.STORAGE_EXIT`."""
    shared, log_level, threads = cloudpickle.loads(blob)
    logging.basicConfig(level=log_level)
    _die_with_parent(parent)
    if threads is not None:
        torch = sys.modules.get("torch")  # torch is optional: cap its threads if loaded
        if torch is not None:
            with contextlib.suppress(Exception):
                torch.set_num_threads(threads)
    # one of several workers: wait for members others hold, and keep leases alive
    ctx = dataclasses.replace(shared, idle_wait=0.02, heartbeat=True)

    def graceful(signum: int, frame: Any) -> None:
        ctx.stop_reason = ctx.stop_reason or "interrupted"
        ctx.stop_event.set()

    signal.signal(signal.SIGINT, graceful)
    signal.signal(signal.SIGTERM, graceful)
    worker = Worker(ctx, name=f"worker-{index}-{os.getpid()}", driver=parent)
    try:
        return worker.run()
    except StorageError as err:
        if faults is not None:
            text = json.dumps(
                {
                    "error": str(err),
                    "fault": isinstance(err, StorageFaultError),
                    "leases": leases_to_json(worker.left_behind),
                }
            )
            with contextlib.suppress(OSError), os.fdopen(faults, "w") as out:
                out.write(text)
        log.error("%s stopped: %s", worker.info.name, err)
        raise SystemExit(STORAGE_EXIT) from None


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the children started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def refuse_in_memory(*, store: bool, checkpoints: bool) -> None:
    """Refuse a run in worker processes whose store or checkpoints live in memory (the
    processes meet only through them): ``store`` and ``checkpoints`` say which do.

    Raises:
        InvalidArgumentError: naming ``storage`` or ``checkpoints``, with the fix.
    """
    if store:
        raise invalid(
            "run",
            "storage",
            "a durable store when workers > 1",
            "the in-memory store",
            "Fix: storage='sqlite:///pbt.db' (processes meet only through the store).",
        )
    if checkpoints:
        raise invalid(
            "run",
            "checkpoints",
            "a checkpoint folder when workers > 1",
            "in-memory checkpoints",
            "Fix: checkpoints='path/to/dir' (processes share checkpoints through it).",
        )


class ProcessExecutor:
    """Runs ``workers`` worker processes on this machine.

    A population larger than ``workers`` is time-shared: each worker claims the member
    furthest behind, one ready round at a time, and keeps the members it trained resident
    in memory while the store says nobody else changed them.

    Args:
        workers: How many processes.
        threads_per_worker: BLAS / OpenMP / torch threads in each; default
            ``cores // workers`` (at least 1). Variables already set by the user win.
        devices: GPU ids to share out, one per worker in turn (``CUDA_VISIBLE_DEVICES``);
            default: the ids in ``CUDA_VISIBLE_DEVICES`` if set, else none.
        max_restarts: How many dead workers may be replaced during the run.
        grace_seconds: How long workers may take to exit once no member is left to train
            before they are terminated (one hung in user code never exits by itself).
    """

    def __init__(
        self,
        *,
        workers: int,
        threads_per_worker: int | None = None,
        devices: Sequence[str] | None = None,
        max_restarts: int | None = None,
        grace_seconds: float = 10.0,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise invalid("ProcessExecutor", "workers", "an integer >= 1", repr(workers))
        if threads_per_worker is not None and (
            isinstance(threads_per_worker, bool)
            or not isinstance(threads_per_worker, int)
            or threads_per_worker < 1
        ):
            raise invalid(
                "ProcessExecutor",
                "threads_per_worker",
                "an integer >= 1 or None",
                repr(threads_per_worker),
            )
        self.workers = workers
        self.threads_per_worker = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        if devices is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
            devices = [d for d in visible.split(",") if d.strip()] if visible else []
        self.devices = list(devices)
        self.max_restarts = max_restarts if max_restarts is not None else 10 * workers
        self.grace_seconds = grace_seconds
        #: Processes started so far (read by tests).
        self.started_processes = 0

    def _spec(self, ctx: RunContext) -> bytes:
        refuse_in_memory(
            store=isinstance(ctx.store, MemoryStore),
            checkpoints=isinstance(ctx.checkpoints, MemoryCheckpoints),
        )
        spec = (ctx, logging.getLogger().level, self.threads_per_worker)
        return bytes(cloudpickle.dumps(spec))

    def run(self, ctx: RunContext) -> str:
        """Start the workers, replace dead ones, and wait until the run ends."""
        blob = self._spec(ctx)
        parent = os.getpid()
        env = {k: str(self.threads_per_worker) for k in _THREAD_VARS if k not in os.environ}
        procs: list[_Child] = []
        restarts = 0
        signalled = False
        fault: StorageError | None = None  # a worker's storage error: the run stops on it

        def start(index: int) -> None:
            extra = dict(env)
            if self.devices:
                extra["CUDA_VISIBLE_DEVICES"] = self.devices[index % len(self.devices)]
            procs.append(_Child.start(blob, index, parent, {**os.environ, **extra}))
            self.started_processes += 1

        for i in range(self.workers):
            start(i)
        try:
            ended_at: float | None = None  # when no member was left to train
            next_check = 0.0
            while procs:
                now = time.monotonic()
                if ctx.stop_event.is_set() and not signalled:
                    signalled = True  # workers checkpoint, then exit: wait for them
                    for child in procs:
                        child.interrupt()
                if ended_at is None and now >= next_check:
                    # only for workers that never exit by themselves (hung in user code):
                    # a read of the store every 2 s takes next to nothing from the workers
                    next_check = now + 2.0
                    if not self._members_left(ctx):
                        ended_at = now
                if ended_at is not None and now - ended_at > self.grace_seconds:
                    # a worker that will not end (hung in user code): its leases are gone
                    log.warning("%d worker(s) did not exit: killing them", len(procs))
                    for child in procs:
                        child.kill()
                    break
                _wait_for_exit(procs, 0.1)
                for child in [c for c in procs if c.proc.poll() is not None]:
                    procs.remove(child)
                    code = child.proc.returncode
                    said = child.read_fault() if code == STORAGE_EXIT else ""
                    child.close()
                    if code == STORAGE_EXIT:  # stop the others as on Ctrl-C, then raise
                        fault = fault or self._storage_fault(ctx, child.index, said)
                        ctx.stop_reason = "storage"
                        ctx.stop_event.set()
                        continue
                    if code == 0 or ctx.stop_event.is_set() or not self._members_left(ctx):
                        continue
                    if restarts >= self.max_restarts:
                        log.error("worker %d died (exit %s); no restarts left", child.index, code)
                        continue
                    restarts += 1
                    log.warning("worker %d died (exit %s): starting another", child.index, code)
                    start(child.index)
                    _tidy(ctx)  # what it wrote and did not record (its members are free)
        finally:
            for child in procs:
                child.terminate()
                child.close()
        if fault is not None:
            raise fault
        if ctx.stop_event.is_set():
            return ctx.stop_reason or "interrupted"
        return _outcome(ctx)

    @staticmethod
    def _storage_fault(ctx: RunContext, index: int, said: str) -> StorageError:
        """The error worker ``index``, stopped by its storage, ``said`` (as it raised
        it); the leases it left behind are remembered for the next run (see
        :mod:`genepool._faults`)."""
        try:
            found = json.loads(said)
            error, leases = str(found["error"]), leases_from_json(str(found["leases"]))
            kind = StorageFaultError if found.get("fault") else StorageError
        except (ValueError, TypeError, KeyError, AttributeError):
            error, leases = f"worker {index} met a storage fault (see its log above)", []
            kind = StorageFaultError
        abandon(ctx.store, leases)
        log.error("worker %d stopped on its storage: stopping the run", index)
        return kind(error)

    @staticmethod
    def _members_left(ctx: RunContext) -> bool:
        return any(m.status == "active" for m in ctx.store.population(ctx.name))

    def __repr__(self) -> str:
        return f"ProcessExecutor(workers={self.workers})"


class _Child:
    """One worker process: ``python -m genepool.executors._child``, fed its spec on stdin.

    Workers are started as fresh interpreters rather than through ``multiprocessing``, so
    a user's script needs no ``if __name__ == "__main__"`` guard and is never re-imported;
    the trainable travels with cloudpickle (by value when defined in ``__main__``).
    """

    def __init__(self, proc: subprocess.Popen[bytes], index: int, faults: int) -> None:
        self.proc = proc
        self.index = index
        self._faults = faults  # the read end of the pipe it reports a storage fault on

    @classmethod
    def start(cls, blob: bytes, index: int, parent: int, env: Mapping[str, str]) -> _Child:
        read, write = os.pipe()
        try:
            payload = cloudpickle.dumps((sys.path, blob, index, parent, write))
            proc = subprocess.Popen(
                [sys.executable, "-m", "genepool.executors._child"],
                stdin=subprocess.PIPE,
                env=dict(env),
                pass_fds=(write,),
            )
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)  # the child's copy stays open in the child
        assert proc.stdin is not None
        proc.stdin.write(payload)
        proc.stdin.close()
        return cls(proc, index, read)

    def read_fault(self) -> str:
        """What the exited worker wrote on its storage-fault pipe (``""``: nothing)."""
        chunks = []
        with contextlib.suppress(OSError):
            os.set_blocking(self._faults, False)
            while chunk := os.read(self._faults, 1 << 16):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def close(self) -> None:
        """Close the driver's end of the pipe."""
        with contextlib.suppress(OSError):
            os.close(self._faults)

    def interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """End it at once (a worker hung in user code ignores a polite request)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def terminate(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_for_exit(procs: Sequence[_Child], timeout: float) -> None:
    """Return when one of the workers has exited, or after ``timeout`` seconds.

    On Linux the driver sleeps until then (a process file descriptor per worker), so the
    run ends the moment its last worker does and the driver takes no CPU from the workers
    meanwhile; elsewhere it looks every 20 ms.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or not hasattr(select, "poll"):
        time.sleep(min(timeout, 0.02))
        return
    fds: list[int] = []
    try:
        poller = select.poll()
        for child in procs:
            fd = pidfd_open(child.proc.pid)
            fds.append(fd)
            poller.register(fd, select.POLLIN)
        poller.poll(timeout * 1000)
    except OSError:  # gone already (reaped), or no pidfd support in this kernel
        time.sleep(min(timeout, 0.02))
    finally:
        for fd in fds:
            os.close(fd)


def _tidy(ctx: RunContext) -> None:
    """Delete the checkpoints a dead worker left that nothing refers to (a failure to do
    so is only logged: the next start of the run tries again)."""
    try:
        collect_orphans(ctx)
    except Exception:
        log.warning("could not delete the checkpoints a dead worker left", exc_info=True)


def _outcome(ctx: RunContext) -> str:
    """Why the run ended, read from the store (the members' stop reasons): with members
    still active, the call's time was up (``Budget.seconds``) or it was interrupted."""
    population = ctx.store.population(ctx.name)
    if any(m.status == "active" for m in population):
        seconds = ctx.policy.budget.seconds
        if seconds is not None and ctx.clock.now() - ctx.started >= seconds:
            return "time"
        return "interrupted"
    return ended_because(population)
