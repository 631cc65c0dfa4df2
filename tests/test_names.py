"""Run names, and run data on a terminal (issue 12, item 5).

A run's name names a directory of checkpoints: ``gp.run``, ``Result.open`` and every
checkpoint backend refuse one that could lead elsewhere (``..``, ``../x``, ``/abs``,
``a/b``) before anything touches the filesystem or the store. Run data (names, metrics,
hyperparameter values) is shown as text on a terminal: never read as rich markup, and
never writing an escape sequence (an OSC-8 hyperlink is ``ESC ] 8 ;``).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import genepool as gp
from genepool.checkpoints import LocalCheckpoints, MemoryCheckpoints
from genepool.member import MemberView
from genepool.store import MemoryStore

fsspec = pytest.importorskip("fsspec")
from genepool._fsspec_checkpoints import FsspecCheckpoints  # noqa: E402

#: Names that are no run's: each could lead out of the checkpoints' root, or is no name.
HOSTILE = [
    "..",
    "../x",
    "../../etc",
    "/abs",
    "/abs/dir",
    "a/b",
    "a\\b",
    ".",
    "",
    ".hidden",
    "[/]",
    "[link=https://x]y[/link]",
    "C:",
    "x\x00y",
    "x\x1b]8;;https://x\x1b\\",
    "\udc80",
    "ok.",
    "ok ",
    "é" * 101,  # 202 bytes
]
hostile = st.sampled_from(HOSTILE) | st.builds(
    "{}{}{}".format, st.text(max_size=5), st.sampled_from(["/", "\\", ":", "\x00"]), st.text()
)
#: Names that are fine, if unusual.
GOOD = ["run", "lr-sweep_2", "运行", "ünïcödé", "[bold]x", "a b", "名前.v2"]


def _train(member: gp.Member) -> None:
    while member.running:
        member.report(score=float(member.step), state={"step": member.step})


class SpyStore(MemoryStore):
    """A store that records whether anything asked it about a run."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def run_config(self, run: str) -> Any:
        self.asked.append(run)
        return super().run_config(run)

    def create_run(self, run: str, **kwargs: Any) -> bool:
        self.asked.append(run)
        return super().create_run(run, **kwargs)


def _run(name: object, **options: Any) -> gp.Result:
    return gp.run(
        _train,
        gp.Space(lr=gp.Float(0.1, 1.0)),
        metric="score",
        population=2,
        ready=gp.Every(2),
        budget=gp.Budget(steps=2),
        seed=0,
        name=name,  # type: ignore[arg-type]
        **options,
    )


def _names_the_problem(err: BaseException, argument: str, value: object) -> None:
    message = str(err)
    assert f"{argument!r} parameter" in message, message
    assert repr(value) in message, message
    assert "Fix:" in message, message


# -- gp.run and Result.open ---------------------------------------------------------------


@given(name=hostile)
def test_run_refuses_a_hostile_name_before_touching_a_store_or_a_file(name):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spy = SpyStore()
        with pytest.raises(gp.InvalidArgumentError) as info:
            _run(name, storage=spy, checkpoints=str(root / "ckpt"))
        _names_the_problem(info.value, "name", name)
        assert spy.asked == []
        with pytest.raises(gp.InvalidArgumentError):
            _run(name, storage=f"sqlite:///{root / 'pbt.db'}", workers=2)
        assert list(root.iterdir()) == []  # no database, no checkpoints, nothing


@given(name=hostile)
def test_result_open_refuses_a_hostile_name_before_opening_the_store(name):
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'pbt.db'}"
        with pytest.raises(gp.InvalidArgumentError) as info:
            gp.Result.open(url, name, checkpoints=str(Path(folder) / "ckpt"))
        _names_the_problem(info.value, "name", name)
        assert list(Path(folder).iterdir()) == []


@pytest.mark.parametrize("name", GOOD)
def test_an_unusual_but_good_name_runs_in_a_directory_of_its_own(name, tmp_path):
    root = tmp_path / "ckpt"
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    result = _run(name, storage=url, checkpoints=str(root))
    assert result.best.step == 2
    assert [p.name for p in root.iterdir()] == [name]
    again = gp.Result.open(url, name, checkpoints=str(root))
    assert again.best == result.best
    assert again.load() is not None
    # the same name, pointing elsewhere
    for elsewhere in (f"../{name}", f"{name}/..", str(tmp_path / name)):
        with pytest.raises(gp.InvalidArgumentError):
            _run(elsewhere, storage=url, checkpoints=str(root))
        with pytest.raises(gp.InvalidArgumentError):
            gp.Result.open(url, elsewhere, checkpoints=str(root))
    assert [p.name for p in root.iterdir()] == [name]


# -- the checkpoint backends ---------------------------------------------------------------

BACKENDS: list[Any] = [
    pytest.param(lambda root: MemoryCheckpoints(), id="memory"),
    pytest.param(lambda root: LocalCheckpoints(root / "ckpt"), id="local"),
    pytest.param(lambda root: FsspecCheckpoints((root / "ckpt").as_uri()), id="fsspec-file"),
    pytest.param(
        lambda root: FsspecCheckpoints(f"memory://genepool-names-{os.getpid()}-{time.time_ns()}"),
        id="fsspec-memory",
    ),
]


def _calls(store: Any) -> dict[str, Callable[[str], Any]]:
    """The methods of ``store`` that take a run's name."""
    calls: dict[str, Callable[[str], Any]] = {
        "put": lambda run: store.put(run, 0, 1, b"x"),
        "ids": lambda run: store.ids(run),
        "ids(older_than=)": lambda run: store.ids(run, older_than=0.0),
        "sweep": lambda run: store.sweep(run=run, grace_seconds=0.0),
    }
    if isinstance(store, LocalCheckpoints):
        calls["_member_dirs"] = lambda run: store._member_dirs(run)
    return calls


@pytest.mark.parametrize("make", BACKENDS)
@given(name=hostile)
def test_every_checkpoint_method_refuses_a_hostile_run_name(make, name):
    with tempfile.TemporaryDirectory() as folder:
        store = make(Path(folder))
        for call in _calls(store).values():
            with pytest.raises(gp.InvalidArgumentError) as info:
                call(name)
            _names_the_problem(info.value, "run", name)


@pytest.mark.parametrize("make", BACKENDS)
@pytest.mark.parametrize("name", GOOD)
def test_a_good_run_name_lists_and_sweeps_its_own_checkpoints(make, name, tmp_path):
    store = make(tmp_path)
    cid = store.put(name, 0, 1, b"x")
    assert store.ids(name) == [cid]
    assert store.sweep(run=name, grace_seconds=0.0) == 0
    assert store.ids(name) == [cid]
    for elsewhere in (f"../{name}", f"{name}/..", f"./{name}"):  # the same, pointing elsewhere
        for call in _calls(store).values():
            with pytest.raises(gp.InvalidArgumentError):
                call(elsewhere)


def test_a_sweep_never_reaches_outside_the_root(tmp_path):
    """``sweep(run='../outside')`` used to list, and remove, ``outside/m0/.tmp-*``."""
    store = LocalCheckpoints(tmp_path / "ckpt")
    store.put("run", 0, 1, b"x")
    leftover = tmp_path / "outside" / "m0" / ".tmp-precious"
    leftover.mkdir(parents=True)
    (tmp_path / "outside" / "m0" / f"s1-{'0' * 32}").mkdir()
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    for call in (
        lambda: store.sweep(run="../outside", grace_seconds=0.0),
        lambda: store.ids("../outside"),
        lambda: store.ids(str(tmp_path / "outside")),
        lambda: store.sweep(run=str(tmp_path / "outside"), grace_seconds=0.0),
    ):
        with pytest.raises(gp.InvalidArgumentError):
            call()
    assert leftover.is_dir()


@given(name=st.text(max_size=20) | hostile)
def test_a_name_is_refused_by_every_method_or_is_one_directory_inside_the_root(name):
    with tempfile.TemporaryDirectory() as folder:
        store = LocalCheckpoints(Path(folder) / "ckpt")
        try:
            cid = store.put(name, 0, 1, b"x")
        except gp.InvalidArgumentError:
            for call in _calls(store).values():
                with pytest.raises(gp.InvalidArgumentError):
                    call(name)
            return
        root = store.root
        path = os.path.join(root, name)
        assert os.path.dirname(os.path.normpath(path)) == os.path.normpath(root)
        assert os.path.basename(os.path.normpath(path)) == name
        assert store.ids(name) == [cid]


# -- the live table ------------------------------------------------------------------------

#: Run data a terminal would act on if it were read as markup or written raw.
MARKUP = [
    "[/]",
    "[link=https://x]y[/link]",
    "[bold red]z",
    "\x1b]8;;https://x\x1b\\y\x1b]8;;\x1b\\",
]


def shown_as(value: str) -> str:
    """How a value reads on the terminal: as written, control characters escaped."""
    return value.replace("\x1b", "\\x1b")


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """rich's console, as a terminal that would show colours and hyperlinks."""
    import rich
    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr(
        rich,
        "_console",
        Console(file=screen, force_terminal=True, width=200, color_system="truecolor"),
    )
    return screen


@pytest.mark.parametrize("value", MARKUP)
def test_the_live_table_shows_run_data_as_text(value, terminal):
    """``gp.run(progress=True)``: a hyperparameter value and a metric's name."""
    metric = f"m{value}"

    def train(member: gp.Member) -> None:
        while member.running:
            member.report(**{metric: float(member.step)}, state=0)

    space = gp.Space(opt=gp.Choice([value]), lr=gp.Float(0.1, 1.0))
    result = gp.run(
        train,
        space,
        metric=metric,
        population=2,
        ready=gp.Every(2),
        budget=gp.Budget(steps=4),
        seed=0,
        name="live",
        progress=True,
    )
    assert result.best.step == 4
    screen = terminal.getvalue()
    assert f"opt={shown_as(value)}" in screen
    assert shown_as(metric) in screen
    assert "\x1b]8;" not in screen  # no hyperlink


@pytest.mark.parametrize("value", MARKUP)
def test_the_live_table_shows_a_run_name_made_in_the_store_as_text(value, terminal):
    from genepool._progress import live_progress

    store = MemoryStore()
    run = f"r{value}"  # made by hand, not by gp.run (which refuses some of these)
    store.create_run(
        run, config={"metric": "score"}, members=[MemberView(id=0, hparams={value: value})]
    )
    with live_progress(store, run, metric=value, every=0.01):
        time.sleep(0.05)
    screen = terminal.getvalue()
    for shown in (shown_as(run), f"{shown_as(value)}={shown_as(value)}"):
        assert shown in screen
    assert "\x1b]8;" not in screen
