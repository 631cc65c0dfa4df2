"""``genepool run``'s config file and flags: every wrong input exits with status 2 and one
line ``genepool: error: ...`` naming the key, the value and the fix; nothing is created
before the config is known good; ``--check`` checks without running."""

from __future__ import annotations

import json
import math
import os
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genepool as gp
from genepool import _config
from genepool._config import CONFIG_KEYS, check_run, load_config, run_arguments
from genepool._errors import GenepoolError
from tests.test_cli import TOML, run_cli, trainable_file

LR = "lr = { float = [0.01, 0.1], log = true }"


pytestmark = pytest.mark.usefixtures("clean_imports")


def good_toml(tmp_path: Path) -> str:
    return TOML.format(storage=f"sqlite:///{tmp_path / 'pbt.db'}")


def fails(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> str:
    """Run the command; it must exit 2 with one error line, train nothing and create no
    store; return the line."""
    before = set(tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("genepool: error: "), err
    assert err.count("\n") == 1, f"one line, got: {err!r}"
    assert "Traceback" not in err
    created = {p for p in set(tmp_path.rglob("*")) - before if "__pycache__" not in p.parts}
    assert not created, f"created {created}"  # no store, no checkpoints, no calls.log
    return err


def run_with(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, *flags: str) -> str:
    """``genepool run`` with the config ``text``: it must fail; return the error line."""
    script = trainable_file(tmp_path)
    config = tmp_path / "pbt.toml"
    config.write_text(text, encoding="utf-8")
    return fails(capsys, tmp_path, "run", f"{script}:train", "--config", str(config), *flags)


def edited(tmp_path: Path, old: str, new: str) -> str:
    good = good_toml(tmp_path)
    text = good.replace(old, new)
    assert text != good
    return text


# -- the file ----------------------------------------------------------------------------


def test_a_missing_config_file_names_the_path_and_the_fix(tmp_path, capsys):
    err = run_with(capsys, tmp_path, "", "--config", str(tmp_path / "nope.toml"))
    assert "'--config'" in err
    assert "nope.toml" in err
    assert "does not exist" in err
    assert "Fix:" in err


def test_a_folder_as_config_file_is_refused(tmp_path, capsys):
    (tmp_path / "folder.toml").mkdir()
    err = run_with(capsys, tmp_path, "", "--config", str(tmp_path / "folder.toml"))
    assert "folder.toml', which is a folder" in err


def test_invalid_toml_names_the_line_and_column(tmp_path, capsys):
    err = run_with(capsys, tmp_path, 'metric = "score"\npopulation = [1,\nseed = \n')
    assert "'--config'" in err
    assert "pbt.toml" in err
    assert "line 3" in err
    assert "column" in err


def test_a_binary_file_is_refused_with_where_its_bytes_are_not_utf8(tmp_path, capsys):
    script = trainable_file(tmp_path)
    config = tmp_path / "pbt.toml"
    config.write_bytes(b'metric = "score"\n\x89PNG\r\n\x1a\n\x00\xff')
    err = fails(capsys, tmp_path, "run", f"{script}:train", "--config", str(config))
    assert "UTF-8" in err
    assert "line 2, column 1" in err


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param("metric: score\n  population: [1,\n", "line 2", id="syntax"),
        pytest.param("metric: score\x00\n", "#x0000", id="nul-byte"),
        pytest.param("metric: 2001-13-01\n", "month", id="bad-date"),
        pytest.param("metric: !!int x\n", "ValueError", id="bad-tag"),
        pytest.param("metric: !!int\n", "IndexError", id="empty-tag"),
        pytest.param("a: " + "[" * 5000 + "]" * 5000 + "\n", "deep", id="too-deep"),
        pytest.param("metric: s\nspace: &x {a: *x}\n", "themselves", id="holds-itself"),
    ],
)
def test_garbage_yaml_is_refused_naming_the_problem(tmp_path, capsys, text, named):
    script = trainable_file(tmp_path)
    config = tmp_path / "pbt.yaml"
    config.write_text(text, encoding="utf-8")
    err = fails(capsys, tmp_path, "run", f"{script}:train", "--config", str(config))
    assert "'--config'" in err
    assert "pbt.yaml" in err
    assert named in err


def test_yaml_aliases_that_expand_beyond_reason_are_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    config = tmp_path / "laughs.yaml"
    config.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(gp.InvalidArgumentError, match="more than"):
        load_config(config)


@pytest.mark.parametrize(("text", "kind"), [("- 1\n- 2\n", "list"), ("hello\n", "str")])
def test_a_file_that_is_not_a_table_is_refused(tmp_path, capsys, text, kind):
    script = trainable_file(tmp_path)
    config = tmp_path / "pbt.yaml"
    config.write_text(text, encoding="utf-8")
    err = fails(capsys, tmp_path, "run", f"{script}:train", "--config", str(config))
    assert "table of settings" in err
    assert f"holds {kind}" in err


# -- the settings ------------------------------------------------------------------------


def test_an_unknown_setting_suggests_the_known_one(tmp_path, capsys):
    err = run_with(capsys, tmp_path, edited(tmp_path, "population = 4", "populaton = 4"))
    assert "'populaton'" in err
    assert "did you mean 'population'?" in err


def test_trust_checkpoints_is_a_flag_never_a_setting_of_the_file(tmp_path, capsys):
    text = edited(tmp_path, "seed = 0\n", "seed = 0\ntrust_checkpoints = true\n")
    err = run_with(capsys, tmp_path, text)
    assert "'trust_checkpoints'" in err
    assert "--trust-checkpoints" in err


def test_every_known_setting_is_a_key_of_the_file():
    assert {"space", "ready", "budget", "exploit", "explore", "metric", "workers"} <= CONFIG_KEYS
    assert "trust_checkpoints" not in CONFIG_KEYS


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("population = 4", 'population = "8"', "The 'population' parameter of genepool run"),
        ("seed = 0", "seed = 0\nworkers = 0", "The 'workers' parameter of genepool run"),
        ("seed = 0", "seed = -1", "The 'seed' parameter of genepool run"),
        ('mode = "max"', 'mode = "maximize"', "The 'mode' parameter of genepool run"),
        ("seed = 0", "seed = 0\ninitial = 5", "The 'initial' parameter of genepool run"),
        ('metric = "score"', "metric = 5", "The 'metric' parameter of genepool run"),
        ("seed = 0", "seed = 0\nfsync = 'yes'", "The 'fsync' parameter of genepool run"),
        ("seed = 0", "seed = 0\nlease_seconds = nan", "The 'lease_seconds' parameter"),
    ],
)
def test_a_setting_of_the_wrong_type_is_checked_as_gp_run_checks_it(
    tmp_path, capsys, old, new, named
):
    err = run_with(capsys, tmp_path, edited(tmp_path, old, new))
    assert named in err
    assert "must be" in err


def test_a_flag_of_the_wrong_value_is_named_as_the_flag(tmp_path, capsys):
    err = run_with(capsys, tmp_path, good_toml(tmp_path), "--workers", "0")
    assert "'--workers'" in err
    assert "Got 0" in err


# -- the sections ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "value", "got"),
    [
        ("space", "5", "5"),
        ("ready", "5", "5"),
        ("budget", '"x"', "'x'"),
        ("exploit", "[1, 2]", "[1, 2]"),
        ("explore", "3", "3"),
    ],
)
def test_a_section_that_is_not_a_table_is_refused(tmp_path, capsys, section, value, got):
    good = good_toml(tmp_path)
    head, _, _ = good.partition(f"[{section}]")
    rest = good[len(head) :].split("\n", 1)[1]
    # drop the section's table, then give it as a plain value at the top
    body = rest.split("\n[", 1)[1] if "\n[" in rest else ""
    text = f"{section} = {value}\n{head}" + (f"[{body}" if body else "")
    assert f"[{section}]" not in text
    err = run_with(capsys, tmp_path, text)
    assert f"The '{section}' parameter of genepool run must be a table" in err
    assert f"Got {got} instead" in err


@pytest.mark.parametrize("section", ["space", "ready", "budget", "exploit", "explore"])
def test_a_yaml_section_left_empty_is_no_table(tmp_path, section):
    config = tmp_path / "pbt.yaml"
    config.write_text(yaml.safe_dump(_minimal()) + f"{section}:\n", encoding="utf-8")
    with pytest.raises(gp.InvalidArgumentError, match=rf"'{section}'.*Got None instead"):
        run_arguments(load_config(config))


def test_a_rule_may_be_named_alone(tmp_path, capsys, monkeypatch):
    text = good_toml(tmp_path)
    text = text.replace('[exploit]\nrule = "truncation"\nfraction = 0.25\n', "")
    text = text.replace('[explore]\nrule = "perturb"\n', "")
    text = 'exploit = "tournament"\nexplore = "none"\n' + text
    script = trainable_file(tmp_path)
    config = tmp_path / "pbt.toml"
    config.write_text(text, encoding="utf-8")
    code, out, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config), "--check")
    assert code == 0, err
    checked = json.loads(out)
    assert checked["exploit"] == "Tournament()"
    assert checked["explore"] == "None"
    none = run_arguments({**_minimal(), "exploit": "none", "explore": "resample"})
    assert none["exploit"] is None
    assert isinstance(none["explore"], gp.Resample)


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("fraction = 0.25", "fractoin = 0.25", "did you mean 'fraction'?"),
        ("steps = 12", "colour = 12", "Budget takes (steps, seconds, target, plateau, min_delta)"),
        ("every = 4", "evry = 4", "(every, counter, burn_in, min_seconds)"),
        ('rule = "truncation"', 'rule = "tournament"', "Tournament takes (it takes none)"),
        ('rule = "truncation"', 'rule = "none"', "'none' takes no options"),
        ("every = 4", "every = 4\nsteps = 4", "same option"),
    ],
)
def test_an_unknown_option_of_a_rule_names_the_options_it_takes(tmp_path, capsys, old, new, named):
    err = run_with(capsys, tmp_path, edited(tmp_path, old, new))
    assert named in err


@pytest.mark.parametrize(
    "rule", ["5", '["truncation"]', "{ name = 'truncation' }"], ids=["int", "list", "table"]
)
def test_a_rule_that_is_not_a_string_is_refused(tmp_path, capsys, rule):
    err = run_with(capsys, tmp_path, edited(tmp_path, 'rule = "truncation"', f"rule = {rule}"))
    assert "The 'rule' parameter of the [exploit] table" in err
    assert "Fix: rule = 'truncation'." in err


def test_a_type_error_inside_a_rule_is_not_taken_for_an_unknown_option(monkeypatch):
    class Broken(gp.Truncation):
        def __init__(self, fraction: float = 0.2) -> None:
            raise TypeError("deep inside")

    monkeypatch.setitem(_config._EXPLOIT, "truncation", Broken)
    with pytest.raises(TypeError, match="deep inside"):
        run_arguments({**_minimal(), "exploit": {"fraction": 0.3}})


def test_an_error_of_a_rule_names_its_section(tmp_path, capsys):
    err = run_with(capsys, tmp_path, edited(tmp_path, "fraction = 0.25", "fraction = 0.9"))
    assert err.startswith("genepool: error: [exploit] The 'fraction' parameter of Truncation")


# -- the space ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        pytest.param("lr = { choice = 5 }", "choice = 5", id="choice-number"),
        pytest.param('lr = { choice = "abc" }', "choice = 'abc'", id="choice-string"),
        pytest.param('lr = { choice = [1, 2], ordered = "no" }', "ordered = 'no'", id="ordered"),
        pytest.param('lr = { float = [0.01, 0.1], log = "no" }', "log = 'no'", id="log-string"),
        pytest.param("lr = { float = [0.01, 0.1], log = 1 }", "log = 1", id="log-int"),
        pytest.param('lr = { float = ["a", 0.1] }', "two numbers", id="float-string"),
        pytest.param("lr = { int = [1, true] }", "two numbers", id="int-bool"),
        pytest.param("lr = { float = 0.1 }", "two numbers", id="float-scalar"),
        pytest.param("lr = { float = [0.01, 0.1], choice = [1] }", "float and choice", id="two"),
        pytest.param("lr = {}", "exactly one of", id="empty-entry"),
        pytest.param("lr = [0.01, 0.1]", "choice = [...]", id="plain-list"),
        pytest.param("lr = { float = [0.01, 0.1], lgo = true }", "did you mean 'log'", id="typo"),
        pytest.param("lr = { float = [0.01, 0.1], 1 = true }", "option '1'", id="number-key"),
    ],
)
def test_a_wrong_space_entry_names_it(tmp_path, capsys, entry, named):
    err = run_with(capsys, tmp_path, edited(tmp_path, LR, entry))
    assert "The 'lr' parameter of the [space] table" in err
    assert named in err


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        pytest.param("lr = { float = [0.5, 0.1] }", "space.lr: The 'low' parameter of Float"),
        pytest.param("lr = { float = [0.0, 0.1], log = true }", "space.lr: The 'low' parameter"),
        pytest.param("lr = { int = [0.5, 3] }", "space.lr: "),
        pytest.param("lr = { choice = [] }", "space.lr: The 'options' parameter of Choice"),
        pytest.param("lr = { choice = [1, 1] }", "space.lr: "),
    ],
)
def test_a_domain_that_refuses_its_bounds_names_the_space_entry(tmp_path, capsys, entry, named):
    err = run_with(capsys, tmp_path, edited(tmp_path, LR, entry))
    assert named in err


def test_an_empty_space_table_names_the_space(tmp_path, capsys):
    err = run_with(capsys, tmp_path, edited(tmp_path, LR, ""))
    assert "The 'space' parameter of genepool run" in err
    assert "an empty table" in err


@pytest.mark.parametrize(
    ("text", "got"),
    [('"" = 1', "''"), ('"\\u0000" = 1', "'\\x00'")],
    ids=["empty", "nul"],
)
def test_a_space_name_that_is_no_name_is_refused(tmp_path, capsys, text, got):
    err = run_with(capsys, tmp_path, edited(tmp_path, LR, f"{LR}\n{text}"))
    assert "[space] table" in err
    assert f"Got {got}" in err


def test_a_space_name_that_is_not_a_string_is_refused():
    with pytest.raises(gp.InvalidArgumentError, match=r"\[space\] table.*Got 1 instead"):
        run_arguments({**_minimal(), "space": {1: 2}})


# -- the trainable -----------------------------------------------------------------------


def test_a_missing_parent_package_is_named(tmp_path, capsys):
    config = tmp_path / "pbt.toml"
    config.write_text(good_toml(tmp_path), encoding="utf-8")
    err = fails(
        capsys, tmp_path, "run", "nosuchpkg_for_genepool.train:train", "--config", str(config)
    )
    assert "no module named 'nosuchpkg_for_genepool'" in err


def test_an_unknown_module_is_named(tmp_path, capsys):
    config = tmp_path / "pbt.toml"
    config.write_text(good_toml(tmp_path), encoding="utf-8")
    err = fails(capsys, tmp_path, "run", "nosuchmod_for_genepool:train", "--config", str(config))
    assert "'trainable'" in err
    assert "'nosuchmod_for_genepool': no such module" in err
    assert "Fix:" in err


@pytest.mark.parametrize(
    ("code", "named"),
    [
        ("raise RuntimeError('boom\\nsecond line')", "RuntimeError: boom second line"),
        ("import nosuchdependency_for_genepool", "ModuleNotFoundError"),
        ("def broken(:\n    pass", "SyntaxError"),
        ("import sys\nsys.exit(3)", "SystemExit"),
    ],
    ids=["raises", "missing-dependency", "syntax", "exits"],
)
def test_a_module_that_fails_to_import_is_reported_with_its_error(tmp_path, capsys, code, named):
    script = tmp_path / "broken_trainer.py"
    script.write_text(code + "\n", encoding="utf-8")
    config = tmp_path / "pbt.toml"
    config.write_text(good_toml(tmp_path), encoding="utf-8")
    err = fails(capsys, tmp_path, "run", f"{script}:train", "--config", str(config))
    assert "imports without error" in err
    assert named in err
    assert "broken_trainer.py" in err


@pytest.mark.parametrize(
    ("extra", "name"),
    [("NOT_A_TRAINABLE = 5\n", "NOT_A_TRAINABLE"), ("class Plain:\n    pass\n", "Plain")],
)
def test_a_name_that_is_not_a_trainable_is_refused(tmp_path, capsys, extra, name):
    script = trainable_file(tmp_path, "\n" + extra)
    config = tmp_path / "pbt.toml"
    config.write_text(good_toml(tmp_path), encoding="utf-8")
    err = fails(capsys, tmp_path, "run", f"{script}:{name}", "--config", str(config))
    assert "gp.Trainable subclass or a function" in err
    assert f"{name} = " in err


# -- export and report -------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A finished run's store."""
    script = trainable_file(tmp_path)
    config = tmp_path / "pbt.toml"
    config.write_text(good_toml(tmp_path), encoding="utf-8")
    code, _, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config))
    assert code == 0, err
    return f"sqlite:///{tmp_path / 'pbt.db'}"


def test_export_to_a_missing_folder_or_a_folder_is_refused_before_reading(tmp_path, capsys, store):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("", encoding="utf-8")
    for output, named in [
        (tmp_path / "missing" / "schedule.json", "folder does not exist"),
        (tmp_path / "adir", "which is a folder"),
        (tmp_path / "afile" / "schedule.json", "which is a file"),
    ]:
        err = fails(capsys, tmp_path, "export", "--storage", store, "-o", str(output))
        assert "'--output'" in err
        assert named in err


def test_report_to_a_folder_or_under_a_file_is_refused_before_the_work(tmp_path, capsys, store):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("", encoding="utf-8")
    argv = ["report", "--storage", store, "-o"]
    err = fails(capsys, tmp_path, *argv, str(tmp_path / "adir"))
    assert "'--output'" in err
    assert "which is a folder" in err
    err = fails(capsys, tmp_path, *argv, str(tmp_path / "afile" / "r.html"))
    assert "which is a file" in err
    # a wrong --png is told before the report is written
    err = fails(capsys, tmp_path, *argv, str(tmp_path / "r.html"), "--png", str(tmp_path / "afile"))
    assert "'--png'" in err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere"
)
def test_export_and_report_into_a_read_only_folder_are_refused(tmp_path, capsys, store):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        for command in ("export", "report"):
            out = str(locked / "out")
            err = fails(capsys, tmp_path, command, "--storage", store, "-o", out)
            assert "may not write" in err
    finally:
        locked.chmod(0o700)


# -- --check -----------------------------------------------------------------------------


CHECKED = textwrap.dedent(
    """
    metric = "score"
    population = 4
    seed = 3
    workers = 2
    storage = "sqlite:///pbt.db"
    checkpoints = "ckpt"

    [budget]
    steps = 12

    [space]
    lr = { float = [0.01, 0.1], log = true }
    """
)


def test_check_prints_the_run_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = trainable_file(tmp_path)
    config = tmp_path / "pbt.toml"
    config.write_text(CHECKED, encoding="utf-8")
    before = set(tmp_path.rglob("*"))
    argv = ["run", f"{script.name}:train", "--config", "pbt.toml", "--check"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert set(tmp_path.rglob("*")) == before, "--check created a file"
    assert len(out.splitlines()) == 1
    checked = json.loads(out)
    assert checked["check"] == "ok"
    assert checked["trainable"] == f"{script.name}:train"
    assert checked["population"] == 4
    assert checked["workers"] == 2
    assert checked["seed"] == 3
    assert checked["storage"] == "sqlite:///pbt.db"
    assert checked["exploit"] == "Truncation(0.2)"
    assert "Float(0.01, 0.1, log=True)" in checked["space"]


def test_check_hides_a_password_and_applies_the_flags(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = trainable_file(tmp_path)
    (tmp_path / "pbt.toml").write_text(CHECKED, encoding="utf-8")
    url = "postgresql://pbt:hunter2@db.example/pbt"
    argv = ["run", f"{script.name}:train", "--config", "pbt.toml", "--check"]
    code, out, err = run_cli(capsys, *argv, "--storage", url, "--population", "6")
    assert code == 0, err
    checked = json.loads(out)
    assert checked["storage"] == "postgresql://pbt:***@db.example/pbt"
    assert "hunter2" not in out
    assert checked["population"] == 6


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('storage = "sqlite:///pbt.db"', 'storage = "sqlite:///:memory:"', "'storage'"),
        ("seed = 3", "seed = 3\ninitial = [{ lr = 5.0 }]", "lr"),
        ("population = 4", "population = 4\nname = 'a/b'", "'name'"),
        ("steps = 12", "seconds = 0", "[budget]"),
    ],
)
def test_check_refuses_what_the_run_would_refuse(tmp_path, capsys, monkeypatch, old, new, named):
    monkeypatch.chdir(tmp_path)
    script = trainable_file(tmp_path)
    text = CHECKED.replace(old, new)
    assert text != CHECKED
    (tmp_path / "pbt.toml").write_text(text, encoding="utf-8")
    argv = ["run", f"{script.name}:train", "--config", "pbt.toml", "--check"]
    err = fails(capsys, tmp_path, *argv)
    assert named in err


def test_an_empty_config_path_is_not_taken_for_no_config(tmp_path, capsys):
    script = trainable_file(tmp_path)
    err = fails(capsys, tmp_path, "run", f"{script}:train", "--config", "", "--check")
    assert "'--config'" in err


# -- any config: an answer, or a clear error ---------------------------------------------


def _minimal() -> dict[str, Any]:
    return {"metric": "score", "population": 2, "budget": {"steps": 4}, "space": {"lr": 0.1}}


def _train(member: Any) -> None:
    while member.running:
        member.report(score=1.0)


_MODULE = types.ModuleType("genepool_test_config_module")
_MODULE.space = gp.Space(lr=gp.Float(0.01, 0.1))  # type: ignore[attr-defined]

numbers = st.one_of(
    st.integers(-3, 20),
    st.floats(-2, 2),
    st.sampled_from([0.5, 1e-5, 0.1, 2**53 + 1, 2**64, 2**1100, -(2**70), math.nan, math.inf]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["max", "min", "memory", "sqlite:///x.db", "score", "truncation", "none"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
bounds = st.one_of(st.lists(numbers | scalars, min_size=2, max_size=2), values)
flags_of = st.one_of(st.booleans(), values)
domains = st.one_of(
    values,
    st.fixed_dictionaries({"float": bounds}, optional={"log": flags_of}),
    st.fixed_dictionaries({"int": bounds}, optional={"log": flags_of}),
    st.fixed_dictionaries({"choice": values}, optional={"ordered": flags_of}),
    st.fixed_dictionaries({"fixed": values}),
    st.dictionaries(
        st.sampled_from(["float", "int", "choice", "fixed", "log", "lgo"]) | st.integers(0, 2),
        values,
    ),
)
OPTIONS = {
    "ready": ["every", "steps", "counter", "burn_in", "min_seconds"],
    "budget": ["steps", "seconds", "target", "plateau", "min_delta"],
    "exploit": ["rule", "fraction", "window", "alpha", "min_samples"],
    "explore": ["rule", "factors", "resample", "probability", "sigma"],
}
RULES = ["truncation", "tournament", "welch", "none", "perturb", "resample", "noise", "x"]


def section(name: str) -> st.SearchStrategy[Any]:
    option = st.sampled_from(OPTIONS[name]) | st.text(max_size=6) | st.integers(0, 2)
    value = st.one_of(numbers, st.sampled_from(RULES), st.lists(numbers, max_size=3), values)
    return st.one_of(st.sampled_from(RULES), st.dictionaries(option, value, max_size=4), values)


PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "space": st.one_of(
        st.dictionaries(
            st.sampled_from(["lr", "x", ""]) | st.text(max_size=4) | st.integers(), domains
        ),
        values,
    ),
    **{name: section(name) for name in OPTIONS},
    "initial": st.lists(st.dictionaries(st.sampled_from(["lr", "x"]), numbers | values)),
    "population": numbers,
    "workers": numbers,
    "seed": numbers,
    "mode": st.sampled_from(["max", "min", "maximize"]),
    "storage": st.sampled_from(["memory", "sqlite:///x.db", "sqlite:///", "postgresql://u:p@h/db"]),
}
_GONE = object()  # a mutation that removes the key
# mostly real keys, the tables most of all; now and then a random one
keys = st.integers(0, 19).flatmap(
    lambda i: (
        st.text(max_size=10) | st.integers()
        if i == 0
        else st.sampled_from([*sorted(OPTIONS), "space"])
        if i < 12
        else st.sampled_from(sorted(CONFIG_KEYS))
    )
)
mutations = keys.flatmap(
    lambda key: st.tuples(
        st.just(key), st.one_of(PLAUSIBLE.get(str(key), values), values, st.just(_GONE))
    )
)


def mutated(changes: list[tuple[Any, Any]]) -> dict[Any, Any]:
    config: dict[Any, Any] = _minimal()
    for key, value in changes:
        if value is _GONE:
            config.pop(key, None)
        else:
            config[key] = value
    return config


configs = st.lists(mutations, max_size=4).map(mutated)
flags = st.fixed_dictionaries(
    {},
    optional={
        "workers": numbers,
        "seed": numbers,
        "population": numbers,
        "name": st.text(max_size=8),
        "storage": st.text(max_size=20) | PLAUSIBLE["storage"],
    },
)
overrides = st.integers(0, 3).flatmap(lambda i: flags if i == 0 else st.just({}))

TOKENS = ["metric", "space", "lr", "float", "choice", "log", "[space]", "[exploit]", "rule"]
TOKENS += ["=", ":", " ", "\n", "- ", "{", "}", "[", "]", ",", '"', "'", "1", "0.5", "-1", "nan"]
TOKENS += ["inf", "true", "no", "&a", "*a", "!!int", "#", "\t", "\x00", "\ufeff", "é", "\\"]
config_text = st.lists(st.sampled_from(TOKENS) | st.text(max_size=3), max_size=60).map(
    lambda parts: "".join(parts).encode("utf-8")
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the property tests write their files (one folder for all examples)."""
    return tmp_path_factory.mktemp("configs")


def _answer(config: Any, flags: dict[str, Any] | None = None) -> None:
    """The config turned into gp.run's arguments and checked: success or a GenepoolError."""
    try:
        arguments = run_arguments(config, trainable_module=_MODULE, overrides=flags)
        check_run(_train, arguments)
    except GenepoolError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, flags=overrides)
def test_any_config_gets_an_answer_or_a_clear_error(folder, config, flags):
    _answer(config, flags)  # the dict itself
    path = folder / "config.yaml"
    try:
        text = yaml.safe_dump(config, allow_unicode=True)
    except yaml.YAMLError:
        return
    path.write_text(text, encoding="utf-8")
    try:
        loaded = load_config(path)
    except GenepoolError:
        return
    _answer(loaded, flags)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300) | config_text, suffix=st.sampled_from([".toml", ".yaml"]))
def test_any_bytes_as_a_config_file_get_an_answer_or_a_clear_error(folder, data, suffix):
    path = folder / f"bytes{suffix}"
    path.write_bytes(data)
    try:
        config = load_config(path)
    except GenepoolError:
        return
    assert isinstance(config, dict)
    _answer(config)


def test_nan_and_huge_numbers_in_a_config_are_told_not_taken():
    for key, value in [("lease_seconds", math.nan), ("seed", 2**1100), ("keep", math.inf)]:
        with pytest.raises(gp.InvalidArgumentError, match=repr(key)):
            run_arguments({**_minimal(), key: value})
