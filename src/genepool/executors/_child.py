"""Entry point of a worker process: ``python -m genepool.executors._child``.

Reads ``(sys.path, spec, index, parent pid, fault pipe)`` (cloudpickle) from stdin and
runs the worker loop. Why the run ended is read from the store by the driver, not sent
back; a storage fault is (on the pipe, see :func:`~genepool.executors.processes.worker_main`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading

import cloudpickle


def main() -> None:
    """Run one worker."""
    path, blob, index, parent, faults = cloudpickle.loads(sys.stdin.buffer.read())
    for entry in reversed(path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    from genepool.executors.processes import worker_main

    worker_main(blob, index, parent, faults)
    exit_at_once()


def exit_at_once() -> None:
    """End the process without tearing the interpreter down, as ``multiprocessing``'s
    children do: everything the worker did is in the store and the checkpoint directory,
    and the run waits for its workers to end, while tearing down SQLAlchemy, NumPy and the
    user's modules takes a tenth of a second or more. The ``atexit`` callbacks (the
    user's, logging's) still run, and the output is flushed. A process that still has
    another non-daemon thread ends the usual way, which waits for it."""
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream: nothing more to write
                stream.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
