"""The HTML report: its content on small real runs, escaping of hostile names, its
Content-Security-Policy, scale."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import genepool as gp
from genepool.analysis import write_report
from genepool.analysis._report import (
    _axes,
    _minmax,
    collect,
    fmt_value,
    log_ticks,
    nice_ticks,
    script_json,
)
from genepool.store import WorkerInfo
from tests.analysis import _payloads
from tests.analysis._runs import (
    HOSTILE_HP,
    HOSTILE_OPTIONS,
    HOSTILE_RUN,
    RUNNABLE_RUN,
    Climb,
    failing_run,
    hostile_run,
    small_run,
    synthetic_result,
)

SECTIONS = ("scores", "lineage", "hparams", "schedule", "members", "decisions")


class Page(HTMLParser):
    """What a browser's parser would build: elements, text, comments, tables, scripts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.comments: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.styles: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.title = ""
        self._script: dict[str, str | None] | None = None
        self._in_style = False
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_title = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "script":
            self._script = a
        elif tag == "style":
            self._in_style = True
            self.styles.append("")
        elif tag == "table":
            self._table = a.get("class") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "title":
            self._in_title = False
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self.scripts.append((self._script, data))
            self._script = None
            return
        if self._in_style:
            self.styles[-1] += data
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title and not self.title:
            self.title = data

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    def ids(self) -> set[str]:
        return {a["id"] or "" for _, a in self.tags if a.get("id")}

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)


@pytest.fixture(scope="module")
def small() -> gp.Result:
    return small_run(seed=2)  # a run whose best member exploited twice


@pytest.fixture(scope="module")
def small_page(small: gp.Result, tmp_path_factory: pytest.TempPathFactory) -> Page:
    path = write_report(small, tmp_path_factory.mktemp("report") / "report.html")
    return Page(path.read_text(encoding="utf-8"))


def test_the_report_has_every_section_and_figure(small_page: Page) -> None:
    assert set(SECTIONS) <= small_page.ids()
    plots = [a for t, a in small_page.tags if t == "svg" and a.get("class") == "plot"]
    # scores, lineage, 3 varying hyperparameters (+ width), and the schedule's own plots
    assert len(plots) >= 1 + 1 + 4 + 1
    assert small_page.title == "genepool report: run"
    assert small_page.count("path") > 10


def test_the_members_table_lists_every_member(small: gp.Result, small_page: Page) -> None:
    rows = small_page.tables["members"]
    header, body = rows[0], rows[1:]
    assert header[:6] == ["member", "status", "step", "score", "generation", "parent"]
    assert [int(r[0]) for r in body] == [m.id for m in small.members]
    for row, m in zip(body, small.members, strict=True):
        assert row[1] == m.status
        assert int(row[2]) == m.step
        assert row[3] == fmt_value(m.score)
        assert int(row[4]) == m.generation
        assert row[5] == ("" if m.parent is None else str(m.parent))
        assert row[header.index("optimizer")] == m.hparams["optimizer"]


def test_the_best_schedule_is_shown_as_a_table_and_as_json(
    small: gp.Result, small_page: Page
) -> None:
    schedule = small.schedule()
    assert len(schedule) > 1, "the run should have exploited along the best line"
    rows = small_page.tables["schedule"]
    header, body = rows[0], rows[1:]
    assert len(body) == len(schedule)
    for row, change in zip(body, schedule.changes, strict=True):
        assert int(row[0]) == change.step
        assert row[1] == change.cause
        assert int(row[2]) == change.member
        for name, value in change.hparams.items():
            assert row[header.index(name)] == fmt_value(value)
    (data,) = [text for a, text in small_page.scripts if a.get("id") == "schedule-data"]
    assert gp.analysis.Schedule.from_dict(json.loads(data)) == schedule
    text = " ".join(small_page.text)
    assert " \u2192 ".join(str(a) for a in small.lineage().ancestors) in text


def test_hyperparameter_axes_follow_the_space(small: gp.Result) -> None:
    data = collect(small)
    assert data.axes["lr"].kind == "log"
    assert data.axes["width"].kind == "linear"
    optimizer = data.axes["optimizer"]
    assert optimizer.kind == "category"
    seen = {m.hparams["optimizer"] for m in small.members}
    assert set(optimizer.levels) >= seen
    # the space's order of the options, not the order they were met in
    order = ["sgd", "adam", "rmsprop"]
    assert list(optimizer.levels) == [o for o in order if o in optimizer.levels]
    assert data.axes["nesterov"].kind == "category"
    assert set(data.axes["nesterov"].levels) <= {"True", "False"}
    assert data.constants == {"tag": "fixed"}


def test_categories_of_mixed_types_stay_apart() -> None:
    axes, constants = _axes({"x": [1, "auto", None, True, 1.0, "auto"], "k": [3, 3]}, {})
    assert axes["x"].kind == "category"
    assert axes["x"].levels == ("1", "auto", "None", "True", "1")
    assert axes["x"].value(True) != axes["x"].value(1)
    assert constants == {"k": 3}


def _check_escaped(page: Page, raw: str, *, run: str) -> None:
    # the only elements are the report's own: two scripts, no image, no <b> or <i>
    assert page.count("script") == 2
    kinds = sorted((a.get("type") or "") for a, _ in page.scripts)
    assert kinds == ["", "application/json"]
    for tag in ("img", "b", "i", "iframe", "object"):
        assert page.count(tag) == 0, tag
    assert page.comments == []
    assert all(not k.startswith("on") for _, a in page.tags for k in a)
    text = "".join(page.text)
    assert HOSTILE_HP in text
    assert run in text
    assert page.title == f"genepool report: {run}"
    assert HOSTILE_HP not in raw
    assert "<img" not in raw
    (data,) = [body for a, body in page.scripts if a.get("type") == "application/json"]
    assert "<" not in data
    decoded = json.loads(data)
    assert decoded["run"] == run
    assert HOSTILE_HP in decoded["changes"][0]["hparams"]


def test_hostile_names_render_as_text(tmp_path: Path) -> None:
    result = synthetic_result(HOSTILE_RUN)
    raw = write_report(result, tmp_path / "hostile.html").read_text(encoding="utf-8")
    page = Page(raw)
    _check_escaped(page, raw, run=HOSTILE_RUN)
    text = "".join(page.text)
    for option in HOSTILE_OPTIONS:
        assert option in text
    assert "\u0394\u2603" in text
    # the download link holds the schedule, percent-encoded inside a quoted attribute
    (link,) = [a for t, a in page.tags if t == "a" and a.get("download")]
    assert link["download"] == f"{HOSTILE_RUN}-schedule.json"
    assert (link["href"] or "").startswith("data:application/json")


def test_hostile_names_in_a_real_run(tmp_path: Path) -> None:
    result = hostile_run()
    raw = write_report(result, tmp_path / "hostile.html").read_text(encoding="utf-8")
    _check_escaped(Page(raw), raw, run=RUNNABLE_RUN)


def test_a_title_is_escaped_too(tmp_path: Path) -> None:
    result = synthetic_result("plain")
    raw = write_report(result, tmp_path / "r.html", title="</title><script>x()</script>")
    page = Page(raw.read_text(encoding="utf-8"))
    assert page.title == "</title><script>x()</script>"
    assert page.count("script") == 2


def test_the_synthetic_lineage_is_drawn(tmp_path: Path) -> None:
    result = synthetic_result("plain")
    data = collect(result)
    assert data.line is not None
    assert data.line.ancestors == (0, 2, 0)
    assert [(j.recipient, j.donor, j.step) for j in data.jumps] == [(2, 0, 4), (0, 2, 8)]
    # member 0's own stretch 4..8 died out; member 2's 4..8 lives on in member 0
    assert (2, 4, 8) in data.surviving
    assert (0, 4, 8) not in data.surviving
    assert [(s.start, s.end) for s in data.lives[0]] == [(0, 8), (8, 12)]
    raw = write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert raw.count('class="jumpline alive"') == 2


def test_failed_rounds_are_marked_and_do_not_break_the_plots(tmp_path: Path) -> None:
    result = failing_run()
    failures = [e for e in result.events if e.kind == "failure"]
    assert failures
    raw = write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert raw.count('class="failure"') == len(failures)
    # each mark's tooltip says what went wrong (here: "... the metric 'score' was nan")
    page = Page(raw)
    for e in failures:
        assert f"member {e.member} failed at step {e.step}: {e.data['error']}" in page.text
    # and no NaN reached a coordinate
    drawn = re.sub(r"<title>.*?</title>", "", raw, flags=re.DOTALL)
    assert "nan" not in drawn.lower().replace("nav", "")


def _empty_result() -> gp.Result:
    store = gp.MemoryStore()
    store.create_run(
        "fresh",
        config={"metric": "score", "mode": "max", "seed": 0},
        members=[gp.MemberView(id=i, hparams={"lr": 0.1 * (i + 1)}) for i in range(3)],
    )
    return gp.Result(
        name="fresh",
        seed=0,
        metric="score",
        stop_reason="running",
        store=store,
        checkpoints=gp.MemoryCheckpoints(),
    )


def test_a_run_that_has_not_scored_yet_still_reports(tmp_path: Path) -> None:
    page = Page(write_report(_empty_result(), tmp_path / "r.html").read_text(encoding="utf-8"))
    text = " ".join(page.text)
    assert "No scores were reported" in text
    assert "no best schedule" in text
    assert [int(r[0]) for r in page.tables["members"][1:]] == [0, 1, 2]


def test_a_run_still_going_reports_what_it_has(tmp_path: Path) -> None:
    store = gp.MemoryStore()
    space = gp.Space(lr=gp.Float(0.01, 0.5))
    store.create_run(
        "live",
        config={"metric": "score", "mode": "max", "seed": 0, "space": repr(space)},
        members=[gp.MemberView(id=i, hparams={"lr": 0.1 * (i + 1)}) for i in range(2)],
    )
    lease = store.claim("live", WorkerInfo("w"), lease_seconds=60.0)
    assert lease is not None
    store.commit(lease, reports=[gp.Report(lease.member, 1, {"score": 0.5}, 1.0)])
    result = gp.Result(
        name="live",
        seed=0,
        metric="score",
        stop_reason="running",
        store=store,
        checkpoints=gp.MemoryCheckpoints(),
    )
    page = Page(write_report(result, tmp_path / "r.html").read_text(encoding="utf-8"))
    assert set(SECTIONS) <= page.ids()
    assert [r[1] for r in page.tables["members"][1:]] == ["active", "active"]


def test_long_lines_are_downsampled_and_the_best_line_keeps_its_jumps() -> None:
    result = gp.run(
        Climb,
        gp.Space(lr=gp.Float(0.001, 0.05, log=True)),
        metric="score",
        population=4,
        ready=gp.Every(20),
        budget=gp.Budget(steps=400),
        seed=0,
    )
    data = collect(result, max_points=40)
    for member, pieces in data.scores.items():
        points = sum(len(xs) for xs, _ in pieces)
        assert points <= 40 + 2 * len(pieces), member
    full = collect(result, max_points=10_000)
    for member in data.scores:
        all_ys = np.concatenate([ys for _, ys in full.scores[member]])
        kept = np.concatenate([ys for _, ys in data.scores[member]])
        assert kept.min() == all_ys.min()
        assert kept.max() == all_ys.max()
    assert data.line is not None
    assert data.line.jumps
    xs, _ = data.best_scores
    for jump in data.line.jumps:
        assert jump.step in xs.tolist()
        assert jump.step + 1 in xs.tolist()
    assert len(xs) <= 40 + 3 * len(data.line.jumps) + 2


def test_minmax_keeps_the_extremes_of_every_bucket() -> None:
    xs = np.arange(1000)
    ys = np.sin(xs / 7.0) + (xs == 517) * 5.0
    kx, ky = _minmax(xs, ys, 100)
    assert len(kx) <= 102
    assert 517 in kx.tolist()
    assert ky.max() == ys.max()
    assert ky.min() == ys.min()
    assert kx[0] == 0
    assert kx[-1] == 999
    assert list(kx) == sorted(kx)
    same_x, _ = _minmax(xs[:50], ys[:50], 100)
    assert len(same_x) == 50


@pytest.mark.parametrize("bad", [0, 5, 2.5, True, "100"])
def test_max_points_must_be_a_sensible_int(bad: Any, tmp_path: Path) -> None:
    with pytest.raises(gp.InvalidArgumentError, match="max_points"):
        write_report(synthetic_result("plain"), tmp_path / "r.html", max_points=bad)


def test_write_report_makes_its_folder_and_returns_the_path(tmp_path: Path) -> None:
    out = write_report(synthetic_result("plain"), str(tmp_path / "a" / "b" / "r.html"))
    assert out == tmp_path / "a" / "b" / "r.html"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # self-contained: nothing is fetched from elsewhere
    for needle in ("https://", "@import", "url("):
        assert needle not in text, needle
    page = Page(text)
    for tag, attrs in page.tags:
        assert tag not in ("link", "img", "iframe"), tag
        assert "src" not in attrs, tag
        href = attrs.get("href") or "#"
        assert href.startswith(("#", "data:")), href
        assert attrs.get("xmlns", "http://www.w3.org/2000/svg") == "http://www.w3.org/2000/svg"


def test_script_json_cannot_close_its_script() -> None:
    value = {"a": "</script><!-- & \u2028", "b": [1.5, None]}
    text = script_json(value)
    assert "<" not in text
    assert ">" not in text
    assert "&" not in text
    assert json.loads(text) == value


def test_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0.0, 1.0) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(3.0, 3.0) == [3.0]
    ticks = nice_ticks(-0.42, 1.2)
    assert ticks[0] >= -0.42
    assert ticks[-1] <= 1.2
    assert len(ticks) >= 3
    assert log_ticks(1e-4, 0.1) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert log_ticks(0.02, 0.3) == pytest.approx([0.02, 0.05, 0.1, 0.2])
    assert log_ticks(0.24, 0.31) == pytest.approx([0.24, 0.26, 0.28, 0.3])


def test_many_exploits_hide_the_dead_ones_behind_a_toggle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = synthetic_result("plain")
    few = Page(write_report(result, tmp_path / "few.html").read_text(encoding="utf-8"))
    (body,) = [a for t, a in few.tags if t == "body"]
    assert "hide-dead" not in (body["class"] or "")
    (box,) = [a for t, a in few.tags if t == "input"]
    assert "checked" in box
    monkeypatch.setattr("genepool.analysis._report_data.MANY_JUMPS", 1)
    many = Page(write_report(result, tmp_path / "many.html").read_text(encoding="utf-8"))
    (body,) = [a for t, a in many.tags if t == "body"]
    assert "hide-dead" in (body["class"] or "")
    (box,) = [a for t, a in many.tags if t == "input"]
    assert "checked" not in box


def _csp(page: Page) -> dict[str, list[str]]:
    """The page's Content-Security-Policy (its one meta tag), as directive: sources."""
    (policy,) = [
        a.get("content") or ""
        for t, a in page.tags
        if t == "meta" and (a.get("http-equiv") or "").lower() == "content-security-policy"
    ]
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_csp_allows_only_the_pages_own_script_and_style(small_page: Page) -> None:
    csp = _csp(small_page)
    for sources in csp.values():
        for unsafe in ("'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "data:", "*"):
            assert unsafe not in sources
    assert csp["default-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["form-action"] == ["'none'"]
    # the one script that runs and the one style element, by their hashes
    (code,) = [text for a, text in small_page.scripts if a.get("type") is None]
    (style,) = small_page.styles
    assert csp["script-src"] == [_sha256(code)]
    assert csp["style-src"] == [_sha256(style)]
    assert csp.keys() == {"default-src", "script-src", "style-src", "base-uri", "form-action"}
    # nothing the policy refuses: no inline style or event handler attribute anywhere
    for tag, attrs in small_page.tags:
        assert "style" not in attrs, tag
        assert not any(k.startswith("on") for k in attrs), tag


def test_script_in_any_string_of_a_run_is_written_escaped(tmp_path: Path) -> None:
    raw = write_report(_payloads.pwned_result(), tmp_path / "r.html").read_text("utf-8")
    for payload in _payloads.PAYLOADS:
        if any(c in payload for c in "<>\"'"):
            assert payload not in raw, payload
    page = Page(raw)
    # the page's own elements only: no element, attribute or URL from the run
    tags = {t for t, _ in page.tags}
    assert not tags & {"img", "iframe", "object", "embed", "base", "form", "link"}
    assert page.count("script") == 2
    for tag, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        assert "style" not in attrs, tag
        assert attrs.get("id") != "pwn", tag
        for key in ("href", "src", "action", "xlink:href"):
            assert not (attrs.get(key) or "").lstrip().lower().startswith("javascript:"), tag
    (link,) = [a for t, a in page.tags if t == "a" and a.get("download")]
    assert link["download"] == f"{_payloads.RUN}-schedule.json"
    assert sum(1 for t, _ in page.tags if t == "a") == 7  # the nav's six and the download
    # each string shows as text: in the page, a table cell or a figure's tooltip
    text = "".join(page.text)
    for shown in _payloads.SHOWN:
        assert shown in text, shown
    assert page.title == f"genepool report: {_payloads.RUN}"
    # the schedule's JSON cannot end its script: no <, >, & or line separator in it
    (data,) = [body for a, body in page.scripts if a.get("type") == "application/json"]
    for char in "<>&\u2028\u2029":
        assert char not in data, char
    schedule = json.loads(data)
    assert (schedule["run"], schedule["metric"]) == (_payloads.RUN, _payloads.METRIC)
    assert set(_payloads.LEVELS) >= {c["hparams"][_payloads.CATEGORY] for c in schedule["changes"]}
