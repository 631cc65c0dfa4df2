"""Entry point of a worker process: ``python -m genepool.executors._child``.

Reads ``(sys.path, spec, index, parent pid, reason fd)`` (cloudpickle) from stdin, runs the
worker loop, and writes why it ended to the reason pipe.
"""

from __future__ import annotations

import os
import sys

import cloudpickle


def main() -> None:
    """Run one worker."""
    path, blob, index, parent, reason_fd = cloudpickle.loads(sys.stdin.buffer.read())
    for entry in reversed(path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    from genepool.executors.processes import worker_main

    reason = worker_main(blob, index, parent)
    with os.fdopen(reason_fd, "wb") as f:
        f.write(reason.encode())


if __name__ == "__main__":
    main()
