"""Local worker processes: the embedded default for real training on one machine.

Each process runs the same :class:`~genepool.worker.Worker` loop as the serial executor;
the processes meet only through the durable store and the checkpoint directory. The
driver starts them, replaces one that dies, and forwards a stop, with the supervisor it
shares with the Ray executor (:mod:`genepool.executors._supervisor`); it holds no state
of its own that a crash could lose. A worker starts as a Ray actor does
(:mod:`genepool.executors._bootstrap`), and adds only what is a process's own: it dies
with its driver, and takes Ctrl-C as a stop.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import cloudpickle

from genepool._errors import StorageError, StorageFaultError, invalid
from genepool._faults import STORAGE_EXIT, abandon, leases_from_json, leases_to_json
from genepool.checkpoints import MemoryCheckpoints
from genepool.executors._bootstrap import THREAD_VARS, pack, run_worker, unpack
from genepool.executors._supervisor import Supervision, supervise
from genepool.store import Lease, MemoryStore, Store
from genepool.worker import RunContext, collect_orphans

__all__ = ["ProcessExecutor", "refuse_in_memory"]

log = logging.getLogger("genepool.executors")


def worker_main(blob: bytes, index: int, parent: int, faults: int | None = None) -> str:
    """The body of a worker process (see ``genepool.executors._child``). On a storage
    fault it writes the error and the leases it left behind to the file descriptor
    ``faults`` (JSON) and exits with :data:`~genepool._faults.STORAGE_EXIT`."""
    _die_with_parent(parent)
    return run_worker(
        unpack(blob),
        name=f"worker-{index}-{os.getpid()}",
        idle_wait=0.02,
        driver=parent,
        prepare=_stop_on_signals,
        report_fault=functools.partial(_send_fault, faults),
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


def _stop_on_signals(ctx: RunContext) -> None:
    """Ctrl-C or a polite kill (the driver forwards its stop so): the worker's members
    checkpoint, then it ends."""

    def graceful(signum: int, frame: Any) -> None:
        ctx.stop_reason = ctx.stop_reason or "interrupted"
        ctx.stop_event.set()

    signal.signal(signal.SIGINT, graceful)
    signal.signal(signal.SIGTERM, graceful)


def _send_fault(faults: int | None, err: StorageError, left_behind: list[Lease]) -> NoReturn:
    """Hand a storage fault to the driver: the error and the leases left behind as JSON
    on the file descriptor ``faults``, and the exit status
    :data:`~genepool._faults.STORAGE_EXIT`."""
    if faults is not None:
        text = json.dumps(
            {
                "error": str(err),
                "fault": isinstance(err, StorageFaultError),
                "leases": leases_to_json(left_behind),
            }
        )
        with contextlib.suppress(OSError), os.fdopen(faults, "w") as out:
            out.write(text)
    raise SystemExit(STORAGE_EXIT) from None


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

    def run(self, ctx: RunContext) -> str:
        """Start the workers, replace dead ones, and wait until the run ends."""
        refuse_in_memory(
            store=isinstance(ctx.store, MemoryStore),
            checkpoints=isinstance(ctx.checkpoints, MemoryCheckpoints),
        )
        how = Supervision(
            workers=self.workers,
            max_restarts=self.max_restarts,
            grace_seconds=self.grace_seconds,
            # only for workers that never exit by themselves (hung in user code): a read
            # of the store every 2 s takes next to nothing from the workers
            check_every=2.0,
        )
        return supervise(ctx, _Processes(self, ctx), how)

    def __repr__(self) -> str:
        return f"ProcessExecutor(workers={self.workers})"


class _Processes:
    """Starts the worker processes of one run, and waits for them (the supervisor's
    launcher)."""

    def __init__(self, executor: ProcessExecutor, ctx: RunContext) -> None:
        self.executor = executor
        self.ctx = ctx
        self.blob = pack(ctx, executor.threads_per_worker)
        self.parent = os.getpid()
        threads = str(executor.threads_per_worker)
        self.env = {k: threads for k in THREAD_VARS if k not in os.environ}

    def start(self, index: int) -> _Child:
        extra = dict(self.env)
        devices = self.executor.devices
        if devices:
            extra["CUDA_VISIBLE_DEVICES"] = devices[index % len(devices)]
        child = _Child.start(
            self.blob, index, self.parent, {**os.environ, **extra}, store=self.ctx.store
        )
        self.executor.started_processes += 1
        return child

    def replace(self, dead: _Child) -> _Child:
        child = self.start(dead.index)
        _tidy(self.ctx)  # what it wrote and did not record (its members are free)
        return child

    def wait(self, handles: Sequence[_Child], timeout: float) -> list[_Child]:
        _wait_for_exit(handles, timeout)
        return [child for child in handles if child.proc.poll() is not None]


class _Child:
    """One worker process: ``python -m genepool.executors._child``, fed its spec on stdin
    (a :class:`~genepool.executors._supervisor.WorkerHandle`).

    Workers are started as fresh interpreters rather than through ``multiprocessing``, so
    a user's script needs no ``if __name__ == "__main__"`` guard and is never re-imported;
    the trainable travels with cloudpickle (by value when defined in ``__main__``).
    """

    def __init__(
        self, proc: subprocess.Popen[bytes], index: int, faults: int, store: Store
    ) -> None:
        self.proc = proc
        self.index = index
        self._faults = faults  # the read end of the pipe it reports a storage fault on
        self._store = store  # where the leases it leaves behind on a fault belong

    @classmethod
    def start(
        cls, blob: bytes, index: int, parent: int, env: Mapping[str, str], *, store: Store
    ) -> _Child:
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
        return cls(proc, index, read, store)

    def placed(self) -> bool:
        return True  # a process runs from its start

    def stop(self, reason: str) -> None:
        """Ctrl-C, forwarded: its members checkpoint, then it exits."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """End it at once (a worker hung in user code ignores a polite request)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def outcome(self) -> bool:
        """Whether the exited worker ended normally (exit status 0).

        Raises:
            StorageError: It stopped on a storage fault (what it wrote on its pipe).
        """
        code = self.proc.returncode
        said = self._read_fault() if code == STORAGE_EXIT else ""
        self._close_pipe()
        if code == STORAGE_EXIT:
            raise _storage_fault(self._store, self.index, said)
        if code != 0:
            log.info("worker %d exited with status %s", self.index, code)
        return code == 0

    def close(self) -> None:
        """End it (politely first, for 5 s) and close the driver's end of its pipe."""
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            self._close_pipe()

    def _read_fault(self) -> str:
        """What the exited worker wrote on its storage-fault pipe (``""``: nothing)."""
        chunks = []
        with contextlib.suppress(OSError):
            os.set_blocking(self._faults, False)
            while chunk := os.read(self._faults, 1 << 16):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def _close_pipe(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._faults)


def _storage_fault(store: Store, index: int, said: str) -> StorageError:
    """The error worker ``index``, stopped by its storage, ``said`` (as it raised it); the
    leases it left behind are remembered for the next run (see :mod:`genepool._faults`)."""
    try:
        found = json.loads(said)
        error, leases = str(found["error"]), leases_from_json(str(found["leases"]))
        kind = StorageFaultError if found.get("fault") else StorageError
    except (ValueError, TypeError, KeyError, AttributeError):
        error, leases = f"worker {index} met a storage fault (see its log above)", []
        kind = StorageFaultError
    abandon(store, leases)
    log.error("worker %d stopped on its storage: stopping the run", index)
    return kind(error)


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
