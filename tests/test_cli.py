"""The command line: ``genepool run`` with a TOML or YAML config, ``genepool status``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from genepool.cli import load_trainable, main
from genepool.member import MemberView
from genepool.store.sql import SQLStore

ROOT = Path(__file__).resolve().parents[1]

TRAINABLE = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import genepool as gp

    CALLS = Path(__file__).with_name("calls.log")


    def train(member):
        state = member.restore()
        x = 0.0 if state is None else state["x"]
        with CALLS.open("a", encoding="utf-8") as f:
            f.write(f"start {member.id} {member.step} {os.getpid()}\\n")
        while member.running:
            x += member.hparams["lr"]
            member.report(score=x, state={"x": x})
    """
)

SPACE_IN_FILE = """
space = gp.Space(lr=gp.Float(0.01, 0.1, log=True))
"""

TOML = textwrap.dedent(
    """
    metric = "score"
    mode = "max"
    population = 4
    seed = 0
    storage = "{storage}"

    [ready]
    every = 4

    [budget]
    steps = 12

    [exploit]
    rule = "truncation"
    fraction = 0.25

    [explore]
    rule = "perturb"

    [space]
    lr = {{ float = [0.01, 0.1], log = true }}
    """
)

YAML = textwrap.dedent(
    """
    metric: score
    mode: max
    population: 4
    seed: 0
    storage: "{storage}"
    ready:
      every: 4
    budget:
      steps: 12
    exploit:
      rule: truncation
      fraction: 0.25
    explore:
      rule: perturb
    space:
      lr: {{float: [0.01, 0.1], log: true}}
    """
)


pytestmark = pytest.mark.usefixtures("clean_imports")


def trainable_file(folder: Path, extra: str = "") -> Path:
    """A trainable file with a name of its own (an imported module is cached by name)."""
    path = folder / f"trainer_{uuid.uuid4().hex[:12]}.py"
    path.write_text(TRAINABLE + extra, encoding="utf-8")
    return path


def config_file(tmp_path: Path, text: str, suffix: str = ".toml", **values: Any) -> Path:
    path = tmp_path / f"pbt{suffix}"
    values.setdefault("storage", f"sqlite:///{tmp_path / 'pbt.db'}")
    path.write_text(text.format(**values), encoding="utf-8")
    return path


def calls(folder: Path) -> list[str]:
    path = folder / "calls.log"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- genepool run ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "suffix"), [(TOML, ".toml"), (YAML, ".yaml")], ids=["toml", "yaml"]
)
def test_run_prints_the_best_member_and_runs_again_as_a_resume(tmp_path, capsys, text, suffix):
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, text, suffix)
    code, out, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config))
    assert code == 0, err
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["stop_reason"] == "budget"
    assert printed["run"] == "run"
    population = SQLStore(f"sqlite:///{tmp_path / 'pbt.db'}").population("run")
    assert len(population) == 4
    assert all(m.status == "finished" and m.step == 12 for m in population)
    best = population.best()
    assert best is not None
    assert printed["best_member"] == best.id
    assert printed["best_score"] == pytest.approx(best.score)
    assert printed["best_step"] == 12
    assert set(printed["best_hparams"]) == {"lr"}
    assert 0.01 <= printed["best_hparams"]["lr"] <= 0.1
    trained = calls(tmp_path)
    assert trained

    code, again, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config))
    assert code == 0, err
    assert json.loads(again.strip().splitlines()[-1]) == printed
    assert calls(tmp_path) == trained, "running the same command again trained again"


def test_the_yaml_and_toml_configs_are_the_same_run(tmp_path, capsys):
    results = []
    for text, suffix in ((TOML, ".toml"), (YAML, ".yaml")):
        folder = tmp_path / suffix[1:]
        folder.mkdir()
        script = trainable_file(folder)
        config = config_file(folder, text, suffix, storage=f"sqlite:///{folder / 'pbt.db'}")
        code, out, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config))
        assert code == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0] == results[1]


def test_flags_override_the_config_and_the_space_may_live_beside_the_trainable(tmp_path, capsys):
    script = trainable_file(tmp_path, SPACE_IN_FILE)
    text = TOML.split("[space]")[0]
    config = config_file(tmp_path, text, storage=f"sqlite:///{tmp_path / 'config.db'}")
    storage = f"sqlite:///{tmp_path / 'flags.db'}"
    code, out, err = run_cli(
        capsys,
        "run",
        f"{script}:train",
        "--config",
        str(config),
        "--storage",
        storage,
        "--name",
        "flagged",
        "--population",
        "3",
        "--seed",
        "7",
    )
    assert code == 0, err
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["run"] == "flagged"
    store = SQLStore(storage)
    assert store.runs() == ["flagged"]
    assert len(store.population("flagged")) == 3
    assert store.run_config("flagged")["seed"] == 7
    assert not (tmp_path / "config.db").exists()


def test_resume_flag_needs_an_existing_run(tmp_path, capsys):
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, TOML)
    code, _, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config), "--resume")
    assert code == 2
    assert "genepool: error:" in err
    assert "resume" in err
    assert calls(tmp_path) == []


def test_two_trainable_files_with_the_same_name_each_load_their_own(tmp_path):
    for n in ("one", "two"):
        (tmp_path / n).mkdir()
        (tmp_path / n / "train.py").write_text(f"def train(member):\n    return {n!r}\n")
    one, _ = load_trainable(f"{tmp_path / 'one' / 'train.py'}:train")
    two, _ = load_trainable(f"{tmp_path / 'two' / 'train.py'}:train")
    assert one(None) == "one"
    assert two(None) == "two"


# -- errors: exit code 2, and a message that names the problem ----------------------------

LR = "lr = { float = [0.01, 0.1], log = true }"


def bad(old: str, new: str, named: str, id: str) -> Any:
    """A config with ``old`` replaced by ``new``, and what the error message must name."""
    return pytest.param((old, new), named, id=id)


BAD = [
    bad('metric = "score"\n', "", "metric", "missing-metric"),
    bad("seed = 0\n", "seed = 0\ncolour = 'blue'\n", "'colour'", "unknown-setting"),
    bad(LR, "lr = { low = 0.01 }", "'lr'", "space-no-kind"),
    bad(LR, "lr = { float = [0.01], int = [1, 2] }", "'lr'", "space-two-kinds"),
    bad(LR, "lr = { float = [0.01, 0.1, 1.0] }", "'lr'", "space-three-bounds"),
    bad(LR, "lr = { float = [0.5, 0.1] }", "'low'", "space-low-above-high"),
    bad(LR, "lr = { float = [0.01, 0.1], lgo = true }", "'lgo'", "unknown-space-option"),
    bad('rule = "truncation"', 'rule = "roulette"', "'roulette'", "unknown-exploit-rule"),
    bad('rule = "perturb"', 'rule = "mutate"', "'mutate'", "unknown-explore-rule"),
    bad("fraction = 0.25", "fraction = 0.9", "fraction", "bad-exploit-argument"),
    bad("fraction = 0.25", "fractoin = 0.25", "'fractoin'", "unknown-exploit-argument"),
    bad("steps = 12", "step = 12", "'step'", "unknown-budget-key"),
    bad("every = 4", "evry = 4", "'evry'", "unknown-ready-key"),
]


@pytest.mark.parametrize(("edit", "named"), BAD)
def test_a_bad_config_exits_with_code_2_naming_the_problem(tmp_path, capsys, edit, named):
    old, new = edit
    good = TOML.format(storage=f"sqlite:///{tmp_path / 'pbt.db'}")
    text = good.replace(old, new)
    assert text != good
    script = trainable_file(tmp_path)
    config = tmp_path / "pbt.toml"
    config.write_text(text, encoding="utf-8")
    code, out, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config))
    assert code == 2, (out, err)
    assert err.startswith("genepool: error:"), err
    assert named in err, err
    assert calls(tmp_path) == [], "a bad config must not train"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(("{script}:nope",), "'nope'", id="unknown-trainable"),
        pytest.param(("{script}",), "file.py:name", id="no-trainable-name"),
        pytest.param(("{missing}:train",), "missing.py", id="missing-file"),
        pytest.param(
            ("{script}:train", "--config", "{missing_config}"), "nope.toml", id="no-config"
        ),
        pytest.param(("{script}:train", "--config", "{no_space}"), "space", id="no-space"),
    ],
)
def test_a_bad_command_exits_with_code_2_naming_the_problem(tmp_path, capsys, args, named):
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, TOML)
    no_space = tmp_path / "no_space.toml"
    no_space.write_text(config.read_text(encoding="utf-8").split("[space]")[0])
    values = {
        "script": script,
        "missing": tmp_path / "missing.py",
        "missing_config": tmp_path / "nope.toml",
        "no_space": no_space,
    }
    argv = [a.format(**values) for a in args]
    if "--config" not in argv:
        argv += ["--config", str(config)]
    code, out, err = run_cli(capsys, "run", *argv)
    assert code == 2, (out, err)
    assert err.startswith("genepool: error:"), err
    assert named in err, err


# -- genepool status -----------------------------------------------------------------------


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a rich table: the cells of each line drawn with '│'."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.strip().startswith("│")
    ]


def test_status_prints_every_member(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, TOML)
    code, out, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config))
    assert code == 0, err
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    code, out, err = run_cli(capsys, "status", "--storage", storage)
    assert code == 0, err
    assert "run 'run'" in out
    header = next(line for line in out.splitlines() if "member" in line)
    assert re.findall(r"\w+", header) == [
        "member",
        "status",
        "step",
        "score",
        "hyperparameters",
        "parent",
        "gen",
    ]
    rows = table_rows(out)
    population = SQLStore(storage).population("run")
    assert [int(r[0]) for r in rows] == [m.id for m in population]
    for row, m in zip(rows, population, strict=True):
        assert row[1] == "finished"
        assert int(row[2]) == m.step == 12
        assert m.score is not None
        assert float(row[3]) == pytest.approx(m.score, rel=1e-3)
        assert row[4].startswith("lr=")


def test_status_of_a_store_with_several_runs_needs_a_name(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, TOML)
    for name, population in (("first", "2"), ("second", "3")):
        argv = ["--name", name, "--population", population]
        code, _, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config), *argv)
        assert code == 0, err
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    code, out, err = run_cli(capsys, "status", "--storage", storage)
    assert code == 2
    assert "'first'" in err
    assert "'second'" in err
    code, out, err = run_cli(capsys, "status", "--storage", storage, "--name", "second")
    assert code == 0, err
    assert "run 'second'" in out
    assert [int(r[0]) for r in table_rows(out)] == [0, 1, 2]
    code, out, err = run_cli(capsys, "status", "--storage", storage, "--name", "third")
    assert code == 2
    assert "'third'" in err


def test_status_of_a_missing_database_says_so_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "typo.db"
    code, _, err = run_cli(capsys, "status", "--storage", f"sqlite:///{missing}")
    assert code == 2
    assert err.startswith("genepool: error:")
    assert "several runs" not in err, err
    assert not missing.exists(), "status created a database"


# -- end to end, in new processes ----------------------------------------------------------


def test_the_command_with_two_worker_processes(tmp_path):
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, TOML)
    command = [sys.executable, "-m", "genepool.cli", "run", f"{script.name}:train"]
    with subprocess.Popen(
        [*command, "--config", str(config), "--workers", "2", "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as driver:
        try:
            out, err = driver.communicate(timeout=120)
        finally:
            driver.kill()
    assert driver.returncode == 0, err[-3000:]
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["stop_reason"] == "budget"
    assert printed["best_step"] == 12
    store = SQLStore(f"sqlite:///{tmp_path / 'pbt.db'}")
    assert all(m.status == "finished" and m.step == 12 for m in store.population("run"))
    # the members trained in worker processes (that imported the file), not in the driver
    pids = {int(line.split()[3]) for line in calls(tmp_path)}
    assert driver.pid not in pids
    assert 1 <= len(pids) <= 2


SCRIPT = textwrap.dedent(
    """
    import os

    import genepool as gp

    def train(member):
        state = member.restore()
        x = 0.0 if state is None else state
        with open({log!r}, "a", encoding="utf-8") as f:
            f.write(f"{{member.id}} {{os.getpid()}}\\n")
        while member.running:
            x += member.hparams["lr"]
            member.report(score=x, state=x)

    result = gp.run(
        train, gp.Space(lr=gp.Float(0.01, 0.1)), metric="score", population=4,
        ready=gp.Every(4), budget=gp.Budget(steps=12), seed=0,
        storage={storage!r}, workers=2,
    )
    print(result.stop_reason, os.getpid())
    """
)


def test_a_script_without_a_main_guard_runs_workers(tmp_path):
    # the trainable lives in __main__: workers get it by value and never import the script
    log = tmp_path / "log.txt"
    script = tmp_path / "script.py"
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    script.write_text(SCRIPT.format(log=str(log), storage=storage), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, "the script ran more than once"
    reason, driver = lines[0].split()
    assert reason == "budget"
    population = SQLStore(storage).population("run")
    assert all(m.status == "finished" and m.step == 12 for m in population)
    pids = {line.split()[1] for line in log.read_text(encoding="utf-8").splitlines()}
    assert driver not in pids
    assert 1 <= len(pids) <= 2


# -- the store from the environment: GENEPOOL_STORAGE --------------------------------------


def test_every_command_reads_the_store_from_genepool_storage(tmp_path, capsys, monkeypatch):
    """A URL with a password stays off the command line (``ps`` shows argv to all)."""
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("GENEPOOL_STORAGE", storage)
    script = trainable_file(tmp_path)
    config = tmp_path / "pbt.toml"
    config.write_text(TOML.replace('storage = "{storage}"\n', "").format(), encoding="utf-8")
    assert "storage" not in config.read_text(encoding="utf-8")
    code, out, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config))
    assert code == 0, err
    assert SQLStore(storage).runs() == ["run"]
    code, out, err = run_cli(capsys, "status")
    assert code == 0, err
    assert [r[1] for r in table_rows(out)] == ["finished"] * 4
    for argv in (["export"], ["report", "-o", "r.html"], ["tensorboard", "--logdir", "tb"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, (argv, err)
    assert (tmp_path / "r.html").is_file()
    # the config file's storage, and --storage, come before the environment's
    other = f"sqlite:///{tmp_path / 'config.db'}"
    config = config_file(tmp_path, TOML, storage=other)
    argv = ["--config", str(config), "--name", "second", "--population", "2"]
    code, _, err = run_cli(capsys, "run", f"{script}:train", *argv)
    assert code == 0, err
    assert SQLStore(other).runs() == ["second"]
    assert SQLStore(storage).runs() == ["run"]
    code, out, err = run_cli(capsys, "status", "--storage", other)
    assert code == 0, err
    assert "run 'second'" in out
    assert len(table_rows(out)) == 2


def test_a_command_without_a_store_names_the_flag_and_the_variable(capsys, monkeypatch):
    monkeypatch.delenv("GENEPOOL_STORAGE", raising=False)
    for command in ("status", "export", "report", "tensorboard"):
        argv = [command, "--logdir", "tb"] if command == "tensorboard" else [command]
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, err
        assert err.startswith("genepool: error:"), err
        assert "'--storage' parameter" in err, err
        assert "GENEPOOL_STORAGE" in err, err


@pytest.mark.parametrize("command", [[], ["run"], ["status"], ["export"]])
def test_the_help_names_genepool_storage(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*command, "--help"])
    assert exit.value.code == 0
    assert "GENEPOOL_STORAGE" in " ".join(capsys.readouterr().out.split())


# -- run data on the terminal: text, never markup -------------------------------------------

#: Run data a terminal would act on if it were read as rich markup or written raw.
MARKUP = [
    "[/]",
    "[link=https://x]y[/link]",
    "[bold red]z",
    "\x1b]8;;https://x\x1b\\y\x1b]8;;\x1b\\",
]


@pytest.mark.parametrize("value", MARKUP)
def test_status_shows_run_data_as_written_on_a_terminal(value, tmp_path, capsys, monkeypatch):
    """The run's name, its metric's name, and a hyperparameter's name and value."""
    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal: colours and hyperlinks work
    monkeypatch.setenv("COLUMNS", "200")
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    store = SQLStore(storage)
    run = f"r{value}"  # made in the store by hand: gp.run refuses some of these names
    store.create_run(
        run,
        config={"metric": f"m{value}"},
        members=[MemberView(id=0, hparams={f"h{value}": value, "lr": 0.1})],
    )
    store.close()
    code, out, err = run_cli(capsys, "status", "--storage", storage)
    assert code == 0, err
    shown = value.replace("\x1b", "\\x1b")  # control characters escaped
    for text in (f"run {run!r}", f"m{shown}", f"h{shown}={shown}"):
        assert text in out, out
    assert "\x1b]8;" not in out  # no hyperlink
    assert "\x1b[" in out  # (a terminal indeed: the header is styled)
