"""No password of a store's URL is ever shown (issue 12, item 4).

A known fake password goes into every form of URL (``user:password@``, ``?password=``, a
misspelt or unsupported scheme, a URL that cannot be parsed or opened) and through every
API path and ``genepool`` command; then every output is searched for it: exceptions (their
str, repr and chained causes), log records at DEBUG, stdout and stderr (of worker
processes too), the files written, and the run config stored in the database. The test
server trusts every connection, so a run on PostgreSQL with a password in its URL works.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import genepool as gp
from genepool._errors import GenepoolError
from genepool.cli import main
from genepool.member import MemberView
from genepool.store import open_store
from genepool.store.server import RemoteStore
from genepool.store.sql import SQLStore
from tests.store.test_contract import POSTGRES_URL, postgres_url

ROOT = Path(__file__).resolve().parents[1]

#: The password every test hides; it must never be seen.
FAKE = "Fake-Pa55word-q7Z"
#: The environment variable the commands read the URL from.
ENV = "GENEPOOL_STORAGE"


def with_password(url: str, form: str) -> str:
    """``url`` (``postgresql://postgres@host...``) with FAKE as its password, in ``form``."""
    if form == "userinfo":
        return url.replace("://postgres@", f"://postgres:{FAKE}@", 1)
    return f"{url}{'&' if '?' in url else '?'}password={FAKE}"


def shown(err: BaseException) -> str:
    """All an exception shows: its traceback (str of it and of every chained cause) and
    its repr."""
    return "".join(traceback.format_exception(err)) + repr(err)


# -- redact_url ----------------------------------------------------------------------------


def redact_url(text: str) -> str:
    from genepool._redact import redact_url  # (imported here: the other tests run without)

    return redact_url(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:secret@host:5432/db", "postgresql://u:***@host:5432/db"),
        ("postgresql://u@host/db?password=secret", "postgresql://u@host/db?password=***"),
        (
            "postgresql://u@h/db?sslmode=require&pass=secret&application_name=x",
            "postgresql://u@h/db?sslmode=require&pass=***&application_name=x",
        ),
        ("postgress://u:secret@h/db", "postgress://u:***@h/db"),
        ("mysql://u:secret@h/db", "mysql://u:***@h/db"),
        ("postgresql://u:secret@h:notaport/db", "postgresql://u:***@h:notaport/db"),
        ("postgresql://u:sec ret/?#'x@h/db", "postgresql://u:***@h/db"),
        ("postgresql://:secret@h/db", "postgresql://:***@h/db"),
        ("Got 'postgresql://u:secret@h/db' instead.", "Got 'postgresql://u:***@h/db' instead."),
        ("SQLStore('sqlite:///x.db?pwd=secret')", "SQLStore('sqlite:///x.db?pwd=***')"),
        ("host=h password=secret user=u", "host=h password=*** user=u"),
        ("host=h password='sec ret' user=u", "host=h password=*** user=u"),
        ("s3://key:secret@bucket/prefix?token=secret", "s3://key:***@bucket/prefix?token=***"),
        # nothing to hide: left as it is
        ("postgresql://u@host:5432/db", "postgresql://u@host:5432/db"),
        ("sqlite:////abs/pbt.db", "sqlite:////abs/pbt.db"),
        ("The run 'x' has 4 members", "The run 'x' has 4 members"),
        ("bypass=1, passes=3, max_tokens=512", "bypass=1, passes=3, max_tokens=512"),
        (
            "must be a 'sqlite:///path' or 'postgresql://user@host/database' URL. "
            "Got 'postgresql://h:5432/db' instead.",
            "must be a 'sqlite:///path' or 'postgresql://user@host/database' URL. "
            "Got 'postgresql://h:5432/db' instead.",
        ),
    ],
)
def test_redact_url_masks_the_password_and_keeps_the_rest(text, expected):
    assert redact_url(text) == expected


_USER = st.text(st.characters(exclude_characters=":/@\r\n", exclude_categories=["Z", "C"]))
_PASSWORD = st.text(st.characters(exclude_characters="@\r\n"), min_size=1)
# a query value: up to '&', '#' or white space; a quote or bracket that ends the text is
# taken for the text's own (a repr's closing quote) and kept
_VALUE = st.text(
    st.characters(exclude_characters="&#'\")]},;", exclude_categories=["Z", "C"]), min_size=1
)


@given(
    scheme=st.sampled_from(["postgresql", "postgres", "postgress", "mysql", "sqlite", "s3"]),
    user=_USER,
    password=_PASSWORD,
    quote=st.sampled_from(["", "'", '"']),
)
def test_any_userinfo_password_is_masked(scheme, user, password, quote):
    url = f"{scheme}://{user}:{password}@db.example:5432/runs?sslmode=require"
    text = f"Got {quote}{url}{quote} instead."
    assert redact_url(text) == (
        f"Got {quote}{scheme}://{user}:***@db.example:5432/runs?sslmode=require{quote} instead."
    )


@given(
    key=st.sampled_from(["password", "PASSWORD", "pass", "pwd", "sslpassword", "client_secret"]),
    value=_VALUE,
    quote=st.sampled_from(["", "'", '"']),
)
def test_any_query_password_is_masked(key, value, quote):
    url = f"postgresql://u@h/db?application_name=gp&{key}={value}"
    assert redact_url(f"{quote}{url}{quote}") == (
        f"{quote}postgresql://u@h/db?application_name=gp&{key}=***{quote}"
    )
    assert redact_url(f"{url}&sslmode=require") == (
        f"postgresql://u@h/db?application_name=gp&{key}=***&sslmode=require"
    )


# -- API paths, with URLs that cannot be opened ---------------------------------------------

#: URLs that cannot be opened, each with the password in it.
BAD_URLS = [
    pytest.param(f"postgress://u:{FAKE}@db.example/runs", id="misspelt"),
    pytest.param(f"mysql://u:{FAKE}@db.example/runs", id="unsupported"),
    pytest.param(f"mysql://u@db.example/runs?password={FAKE}", id="unsupported-query"),
    pytest.param(f"postgresql://u:{FAKE}@db.example:notaport/runs", id="bad-port"),
    pytest.param(f"postgresql+nosuchdriver://u:{FAKE}@db.example/runs", id="unknown-driver"),
    pytest.param(f"postgresql://postgres:{FAKE}@127.0.0.1:1/test", id="refused"),
    pytest.param(
        with_password(POSTGRES_URL.replace("/test", "/genepool_no_such_database"), "userinfo"),
        id="no-database",
    ),
    pytest.param(
        with_password(POSTGRES_URL.replace("/test", "/genepool_no_such_database"), "query"),
        id="no-database-query",
    ),
]
#: ... and for the commands, which refuse a SQLite file that does not exist, one more.
BAD_URLS_OF_COMMANDS = [
    *BAD_URLS,
    pytest.param(f"sqlite:////genepool/no/such/dir/pbt.db?password={FAKE}", id="sqlite-query"),
]


TRAINABLE = textwrap.dedent(
    """
    def train(member):
        state = member.restore()
        x = 0.0 if state is None else state["x"]
        while member.running:
            x += member.hparams["lr"]
            member.report(score=x, state={"x": x})
    """
)


def _train(member: gp.Member) -> None:
    while member.running:
        member.report(score=float(member.step), state={"step": member.step})


def _api_calls(url: str, tmp_path: Path) -> dict[str, Callable[[], Any]]:
    """Every public call that takes a store's URL."""
    return {
        "open_store": lambda: open_store(url),
        "SQLStore": lambda: SQLStore(url),
        "run": lambda: gp.run(
            _train,
            gp.Space(lr=gp.Float(0.1, 1.0)),
            metric="score",
            population=2,
            ready=gp.Every(2),
            budget=gp.Budget(steps=2),
            storage=url,
            checkpoints=str(tmp_path / "ckpt"),
        ),
        "Result.open": lambda: gp.Result.open(url, checkpoints=str(tmp_path / "ckpt")),
        "load_best": lambda: gp.load_best(url),
    }


@pytest.mark.parametrize("url", BAD_URLS)
def test_no_api_call_shows_the_password_of_a_url_it_cannot_open(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    calls = _api_calls(url, tmp_path)
    calls["RemoteStore.start"] = lambda: RemoteStore.start(url)
    for name, call in calls.items():
        with pytest.raises(GenepoolError) as info:
            call()
        assert FAKE not in shown(info.value), name
    assert FAKE not in caplog.text


def run_cli(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``genepool *argv`` in this process; its exit code, and all it printed."""
    try:
        code = main(list(argv))
    except SystemExit as exit:  # argparse
        code = int(exit.code or 0)
    out, err = capfd.readouterr()
    return code, out + err


READERS = [
    ["status"],
    ["export"],
    ["report", "-o", "report.html"],
    ["tensorboard", "--logdir", "tb"],
]


@pytest.mark.parametrize("url", BAD_URLS_OF_COMMANDS)
def test_no_command_shows_the_password_of_a_url_it_cannot_open(
    url, tmp_path, capfd, caplog, monkeypatch
):
    """Each command, given the URL by ``--storage`` and by GENEPOOL_STORAGE."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "train.py"
    script.write_text(TRAINABLE, encoding="utf-8")
    config = tmp_path / "pbt.toml"
    config.write_text(
        'metric = "score"\npopulation = 2\ncheckpoints = "ckpt"\n'
        "[budget]\nsteps = 2\n[space]\nlr = { float = [0.1, 1.0] }\n",
        encoding="utf-8",
    )
    commands = [*READERS, ["run", f"{script}:train", "--config", str(config)]]
    for command in commands:
        ways: list[tuple[list[str], dict[str, str]]] = [
            ([*command, "--storage", url], {}),
            (command, {ENV: url}),
        ]
        for argv, environment in ways:
            with monkeypatch.context() as m:
                for name, value in environment.items():
                    m.setenv(name, value)
                code, printed = run_cli(capfd, *argv)
            # a database out of reach is a fault of the storage: try again later (75)
            assert code == (75 if ":1/" in url else 2), (argv, environment, printed)
            assert "genepool: error:" in printed, (argv, environment, printed)
            assert FAKE not in printed, (argv, environment)
    assert FAKE not in caplog.text
    assert not any(FAKE in str(path) for path in tmp_path.rglob("*"))


# -- a run on PostgreSQL with a password in its URL ---------------------------------------------


def files_holding(folder: Path, secret: str, *, skip: Path) -> list[Path]:
    """The files under ``folder`` (but ``skip``) whose name or bytes hold ``secret``."""
    return [
        path
        for path in folder.rglob("*")
        if path != skip
        and (secret in str(path) or (path.is_file() and secret.encode() in path.read_bytes()))
    ]


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_a_run_on_postgresql_with_a_password_shows_it_nowhere(
    form, request, tmp_path, capfd, caplog, monkeypatch
):
    """Two worker processes (handed the store: they must connect with the password), then
    every command on the run; the password is nowhere but in the config file it was
    given in."""
    url = with_password(postgres_url(request), form)
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "160")
    checkpoints = tmp_path / "ckpt"

    result = gp.run(
        _train,
        gp.Space(lr=gp.Float(0.1, 1.0)),
        metric="score",
        population=3,
        ready=gp.Every(2),
        budget=gp.Budget(steps=4),
        seed=0,
        name="api",
        storage=url,
        checkpoints=str(checkpoints),
        workers=2,
    )
    assert result.best.step == 4  # the workers connected
    store = open_store(url)
    assert isinstance(store, SQLStore)
    again = pickle.loads(pickle.dumps(store))  # a worker's copy carries the credential
    assert again.url == url
    assert again.runs() == ["api"]
    seen = [repr(store), str(store), repr(again), repr(result.best)]
    opened = gp.Result.open(url, "api", checkpoints=str(checkpoints))
    seen.append(repr(opened.best))
    assert set(opened.load()) == {"step"}  # its checkpoint, found through the store

    script = tmp_path / "train.py"
    script.write_text(TRAINABLE, encoding="utf-8")
    config = tmp_path / "pbt.toml"
    config.write_text(
        f'metric = "score"\npopulation = 2\nseed = 1\ncheckpoints = "{checkpoints}"\n'
        f'storage = "{url}"\n[ready]\nevery = 2\n[budget]\nsteps = 4\n'
        "[space]\nlr = { float = [0.1, 1.0] }\n",
        encoding="utf-8",
    )
    code, printed = run_cli(capfd, "run", f"{script}:train", "--config", str(config))
    assert code == 0, printed
    seen.append(printed)
    monkeypatch.setenv(ENV, url)
    for command in READERS:
        for run_name in ("api", "run"):
            code, printed = run_cli(capfd, *command, "--run", run_name, "--storage", url)
            assert code == 0, (command, printed)
            seen.append(printed)
            code, printed = run_cli(capfd, *command, "--run", run_name)  # GENEPOOL_STORAGE
            assert code == 0, (command, printed)
            seen.append(printed)
    code, printed = run_cli(capfd, "export", "--run", "api", "-o", "schedule.json")
    assert code == 0, printed
    seen.append(printed)

    assert FAKE not in "\n".join(seen)
    assert FAKE not in caplog.text
    for name in ("api", "run"):
        assert FAKE not in json.dumps(store.run_config(name), default=repr)
        history = store.history(name)
        assert FAKE not in repr(history.events) + repr(history.reports)
    assert (tmp_path / "tb").is_dir()
    assert (tmp_path / "report.html").is_file()
    assert files_holding(tmp_path, FAKE, skip=config) == []
    # the stores opened on the way (gp.run's, the commands'): the log records hold each
    opened_stores = {
        id(a): a for r in caplog.records for a in r.args or () if isinstance(a, SQLStore)
    }
    for each in [store, again, *opened_stores.values()]:
        each.close()


@pytest.mark.filterwarnings("ignore:Query string argument.*'password'")  # SQLAlchemy: unused
def test_a_sqlite_url_with_a_password_parameter_shows_it_nowhere(
    tmp_path, capfd, caplog, monkeypatch
):
    """SQLite has no password, but a URL may carry one (for SQLCipher, say); it shows
    nowhere, not even in the name of the checkpoint directory made beside the file."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("COLUMNS", "160")
    url = f"sqlite:///{tmp_path / 'pbt.db'}?password={FAKE}"
    result = gp.run(
        _train,
        gp.Space(lr=gp.Float(0.1, 1.0)),
        metric="score",
        population=2,
        ready=gp.Every(2),
        budget=gp.Budget(steps=2),
        storage=url,
        workers=2,
    )
    assert result.best.step == 2
    store = open_store(url)
    seen = [repr(store), repr(pickle.loads(pickle.dumps(store)))]
    code, printed = run_cli(capfd, "status", "--storage", url)
    assert code == 0, printed
    assert "finished" in printed
    seen.append(printed)
    assert FAKE not in "\n".join(seen)
    assert FAKE not in caplog.text
    assert files_holding(tmp_path, FAKE, skip=tmp_path) == []
    assert (tmp_path / "pbt.db.checkpoints").is_dir()


def test_the_command_line_reads_the_url_from_the_environment_not_argv(request, tmp_path):
    """In a new process, as a user runs it: the URL is in no argument (``ps`` shows those)."""
    url = with_password(postgres_url(request), "userinfo")
    store = SQLStore(url)
    store.create_run("run", config={"metric": "score"}, members=[MemberView(id=0, hparams={})])
    store.close()
    env = {**os.environ, ENV: url, "COLUMNS": "120"}
    out = subprocess.run(
        [sys.executable, "-m", "genepool.cli", "status"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "run 'run'" in out.stdout
    assert FAKE not in out.stdout + out.stderr
