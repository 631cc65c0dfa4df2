"""A second Ctrl-C aborts a run at once, whatever the member is doing (issue 14, item 5).

The first Ctrl-C lets members checkpoint before the run stops; a member hung in its code
never gets there, and the second one must not wait for it (a function trainable's thread
kept the run for a minute, then three presses were needed).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    sys.path.insert(0, {root!r})
    import genepool as gp

    class Hang(gp.Trainable):
        def setup(self, hparams): pass
        def step(self):
            print("hanging", flush=True)
            threading.Event().wait()
            return {{"score": 0.0}}
        def save(self): return {{}}
        def load(self, state): pass

    def hang(member):
        print("hanging", flush=True)
        while True:  # never reports
            time.sleep(0.01)

    gp.run(
        {trainable}, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score", population=2,
        ready=gp.Every(2), budget=gp.Budget(steps=4),
    )
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("trainable", ["Hang", "hang"], ids=["class", "function"])
def test_a_second_ctrl_c_aborts_at_once(trainable: str):
    code = SCRIPT.format(root=str(ROOT), trainable=trainable)
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as run:
        try:
            assert run.stdout is not None
            assert run.stdout.readline().strip() == "hanging"
            run.send_signal(signal.SIGINT)  # members checkpoint ... but this one hangs
            time.sleep(0.5)
            second = time.monotonic()
            run.send_signal(signal.SIGINT)
            run.wait(timeout=10)
            took = time.monotonic() - second
        finally:
            run.kill()
        err = run.stderr.read() if run.stderr is not None else ""
    assert "KeyboardInterrupt" in err
    assert took < 5.0, took


#: A function trainable whose thread receives both Ctrl-Cs itself: the kernel may hand a
#: process's SIGINT to any of its threads, and only the main thread runs Python's handler.
TO_ANOTHER_THREAD = textwrap.dedent(
    """
    import signal, sys, threading, time
    sys.path.insert(0, {root!r})
    import genepool as gp

    def hang(member):
        for _ in range(2):
            time.sleep(0.3)
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        print("sent", flush=True)
        while True:  # never reports
            time.sleep(0.01)

    gp.run(
        hang, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score", population=2,
        ready=gp.Every(2), budget=gp.Budget(steps=4),
    )
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_ctrl_c_another_thread_receives_still_reaches_the_run() -> None:
    code = TO_ANOTHER_THREAD.format(root=str(ROOT))
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as run:
        try:
            assert run.stdout is not None
            assert run.stdout.readline().strip() == "sent"
            run.wait(timeout=10)
        finally:
            run.kill()
        err = run.stderr.read() if run.stderr is not None else ""
    assert "Ctrl-C again to abort" in err
    assert "KeyboardInterrupt" in err
