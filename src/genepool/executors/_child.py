"""Entry point of a worker process: ``python -m genepool.executors._child``.

Reads ``(sys.path, spec, index, parent pid)`` (cloudpickle) from stdin and runs the worker
loop. Why the run ended is read from the store by the driver, not sent back.
"""

from __future__ import annotations

import sys

import cloudpickle


def main() -> None:
    """Run one worker."""
    path, blob, index, parent = cloudpickle.loads(sys.stdin.buffer.read())
    for entry in reversed(path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    from genepool.executors.processes import worker_main

    worker_main(blob, index, parent)


if __name__ == "__main__":
    main()
