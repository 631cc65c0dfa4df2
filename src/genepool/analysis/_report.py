"""The run's report: one self-contained HTML file (inline SVG, no network, no server).

It shows the population's scores over steps, every member's hyperparameters over steps,
the lineage as a phylogenetic tree (members as lines through steps, exploits as jumps, the
winning ancestry highlighted), a table of members and the best member's schedule. Every
name and value from the run is escaped (the schedule's JSON too, so that it cannot close
its ``<script>``), and the page's Content-Security-Policy runs only its own script and
style, by their SHA-256 hashes: no inline ``style`` or ``on*`` attribute, nothing loaded
from elsewhere.

The report is three modules: its data (:mod:`genepool.analysis._report_data`, which the
PNG figures draw too, with the hyperparameters' axes in
:mod:`genepool.analysis._hparam_axes`), its plots in SVG (:mod:`genepool.analysis._svg`)
and this one, the page around them. The names this module had before the split are
importable from it still.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genepool.analysis import _report_data
from genepool.analysis._hparam_axes import Axis, fit_axes, fmt_value
from genepool.analysis._report_data import (
    DEFAULT_MAX_POINTS,
    MANY_JUMPS,
    ReportData,
    Stretch,
    collect,
    hparam_lines,
    member_color,
    member_rgb,
)
from genepool.analysis._schedule import Schedule
from genepool.analysis._svg import (
    Scale,
    esc,
    fmt_tick,
    hparam_svg,
    log_ticks,
    nice_ticks,
    scores_svg,
    tree_svg,
)

if TYPE_CHECKING:
    from genepool.result import Result

__all__ = [
    "CSP",
    "DEFAULT_MAX_POINTS",
    "MANY_JUMPS",
    "Axis",
    "ReportData",
    "Scale",
    "Stretch",
    "collect",
    "csp_source",
    "fmt_tick",
    "fmt_value",
    "hparam_lines",
    "log_ticks",
    "member_color",
    "member_rgb",
    "nice_ticks",
    "render",
    "script_json",
    "write_report",
]

log = logging.getLogger(__name__)

# two private names that tests read here, as before the split
_axes = fit_axes
_minmax = _report_data._minmax


# -- tables ----------------------------------------------------------------------------------
def _members_table(data: ReportData) -> str:
    names = data.names
    best_id = data.best.id if data.best is not None else None
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = []
    for m in data.members:
        cls = ' class="top"' if m.id == best_id else ""
        hp = "".join(f"<td>{esc(fmt_value(m.hparams.get(n, '')))}</td>" for n in names)
        parent = "" if m.parent is None else str(int(m.parent))
        score = "" if m.score is None else fmt_value(m.score)
        rows.append(
            f'<tr{cls} data-m="{int(m.id)}"><td>{int(m.id)}</td><td>{esc(m.status)}</td>'
            f"<td>{int(m.step)}</td><td>{esc(score)}</td><td>{int(m.generation)}</td>"
            f"<td>{parent}</td>{hp}</tr>"
        )
    return (
        '<table class="members"><thead><tr><th>member</th><th>status</th><th>step</th>'
        f"<th>{esc(data.metric)}</th><th>generation</th><th>parent</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _judged_table(data: ReportData) -> str:
    """The exploits and explores whose rules said why: which rule chose each value, the
    model's prediction, the donor's lead against the bar."""
    if not data.judged:
        return (
            '<p class="empty">This run\'s rules record no account of their choices '
            "(gp.PB2 and gp.Calm do).</p>"
        )
    rows = []
    for j in data.judged:
        values = ", ".join(f"{k} = {fmt_value(v)}" for k, v in j.values.items())
        donor = "" if j.donor is None else str(int(j.donor))
        rows.append(
            f'<tr data-m="{int(j.member)}"><td>{int(j.step)}</td><td>{int(j.member)}</td>'
            f"<td>{esc(j.kind)}</td><td>{donor}</td><td>{esc(values)}</td>"
            f"<td>{esc(j.chosen_by)}</td><td>{esc(j.prediction)}</td><td>{esc(j.lead)}</td></tr>"
        )
    return (
        '<table class="judged"><thead><tr><th>step</th><th>member</th><th>decision</th>'
        "<th>donor</th><th>new values</th><th>chosen by</th><th>predicted improvement</th>"
        f"<th>donor's lead</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _schedule_table(schedule: Schedule) -> str:
    names = schedule.names
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = []
    for c in schedule.changes:
        hp = "".join(f"<td>{esc(fmt_value(c.hparams.get(n, '')))}</td>" for n in names)
        rows.append(
            f'<tr data-m="{int(c.member)}"><td>{int(c.step)}</td><td>{esc(c.cause)}</td>'
            f"<td>{int(c.member)}</td><td>{int(c.generation)}</td>{hp}</tr>"
        )
    return (
        '<table class="schedule"><thead><tr><th>from step</th><th>cause</th><th>member</th>'
        f"<th>generation</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` appear raw."""
    text = json.dumps(value, allow_nan=False, default=str, ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


_CSS = """
:root{--fg:#1d1d1f;--muted:#6b6b70;--line:#d8d8dc;--best:#d62728}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
margin:0 auto;max-width:960px;padding:16px 20px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:28px 0 6px}
p.lead,p.note,p.empty{color:var(--muted);margin:4px 0 8px}
nav a{margin-right:12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:10px 0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;word-break:break-word}
svg.plot{display:block;max-width:100%;height:auto;background:#fff}
.plots{display:flex;flex-wrap:wrap;gap:8px}
.plots figure{margin:0}.plots figcaption{font-size:12px;color:var(--muted);word-break:break-all}
rect.frame{fill:none;stroke:#bbb;stroke-width:1}
line.grid{stroke:#eee;stroke-width:1}
text.tick{font-size:10px;fill:#555}text.axis{font-size:12px;fill:#333}
path.line,path.hp{fill:none;stroke-width:1;stroke-opacity:.55;stroke-linejoin:round}
path.best{fill:none;stroke:var(--best);stroke-width:2;stroke-opacity:.85;stroke-linejoin:round}
circle.jump{fill:#fff;stroke:var(--best);stroke-width:1.5}
line.life{stroke:#cfcfd4;stroke-width:1.2}
line.alive-seg{stroke:#6b6b70;stroke-width:1.6}
line.jumpline{stroke:#e2e2e6;stroke-width:.6}line.jumpline.alive{stroke:#8a8a90;stroke-width:1}
body.crowd path.line,body.crowd path.hp{stroke-opacity:.3}
body.hide-dead g.dead-jumps{display:none}
label.toggle{font-size:12.5px;color:var(--muted)}
path.failure{stroke:#b00;stroke-width:1.5;fill:none}
body.picking .m:not(.on){opacity:.12}
path.m.on{stroke-width:2.2;stroke-opacity:1}line.m.on{stroke:#1f77b4;stroke-width:3}
tr.on td{background:#e8f0fb}
[data-m]{cursor:pointer}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0;display:block;overflow-x:auto}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f6f6f8;position:sticky;top:0}
tr.top td{font-weight:600}
.legend span{display:inline-block;margin-right:14px}
.legend .swatch{display:inline-block;width:18px;height:3px;vertical-align:middle;margin:0 4px 0 0;
background:var(--best)}
#picked{font-weight:600}
"""

_JS = """
(function () {
  var picked = null;
  function pick(m) {
    picked = picked === m ? null : m;
    document.body.classList.toggle('picking', picked !== null);
    var on = document.querySelectorAll('.on');
    for (var i = 0; i < on.length; i++) on[i].classList.remove('on');
    if (picked !== null) {
      var els = document.querySelectorAll('[data-m="' + picked + '"]');
      for (var k = 0; k < els.length; k++) els[k].classList.add('on');
    }
    var label = document.getElementById('picked');
    if (label) label.textContent = picked === null ? '' : 'member ' + picked + ' picked';
  }
  var dead = document.getElementById('show-dead');
  if (dead) dead.addEventListener('change', function () {
    document.body.classList.toggle('hide-dead', !dead.checked);
  });
  document.addEventListener('click', function (ev) {
    var t = ev.target;
    while (t && t.getAttribute && !t.getAttribute('data-m')) t = t.parentNode;
    var m = t && t.getAttribute ? t.getAttribute('data-m') : null;
    if (m && /^[0-9]+$/.test(m)) pick(m);
  });
})();
"""


def csp_source(text: str) -> str:
    """The CSP source that allows an inline ``<script>`` or ``<style>`` holding ``text``."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


#: The page's Content-Security-Policy: nothing but its own script and style (by hash); no
#: inline ``style`` or ``on*`` attribute, no ``javascript:`` URL, nothing from elsewhere.
CSP = (
    f"default-src 'none'; script-src {csp_source(_JS)}; style-src {csp_source(_CSS)}; "
    "base-uri 'none'; form-action 'none'"
)


def render(data: ReportData, *, title: str | None = None) -> str:
    """The report as HTML text."""
    from genepool.version import __version__

    heading = title if title is not None else f"genepool report: {data.name}"
    many_jumps = data.hides_dead_jumps
    body_classes = ["crowd" if len(data.members) > 16 else "few"]
    if many_jumps:
        body_classes.append("hide-dead")
    best = data.best
    facts = [
        ("run", data.name),
        ("metric", f"{data.metric} ({'higher' if data.mode == 'max' else 'lower'} is better)"),
        ("members", str(len(data.members))),
        ("reports", f"{data.reports:,}"),
        (
            "events",
            ", ".join(f"{k} {v}" for k, v in sorted(data.counts.items())) or "none",
        ),
        ("seed", str(data.seed)),
        ("ended", data.stop_reason),
    ]
    if best is not None:
        facts.insert(
            1,
            (
                "best",
                f"member {best.id}: {data.metric} {fmt_value(best.score)} at step {best.step}",
            ),
        )
    if data.line is not None:
        facts.insert(2, ("winning ancestry", " \u2192 ".join(str(a) for a in data.line.ancestors)))
    for name, value in data.constants.items():
        facts.append((f"fixed: {name}", fmt_value(value)))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    legend = (
        '<p class="legend"><span><span class="swatch"></span>the best member\'s '
        "line</span><span>click a line or a row to pick a member</span>"
        '<span id="picked"></span></p>'
    )
    hp_figs = "".join(
        f"<figure>{hparam_svg(data, axis)}<figcaption>{esc(axis.name)}"
        f"{' (log scale)' if axis.kind == 'log' else ''}</figcaption></figure>"
        for axis in data.varying(data.names)
    )
    hp_section = (
        f'<div class="plots">{hp_figs}</div>'
        if hp_figs
        else '<p class="empty">No hyperparameter varied in this run.</p>'
    )
    if data.schedule is not None:
        sched = data.schedule
        sched_figs = "".join(
            f"<figure>{hparam_svg(data, axis, schedule_only=True)}"
            f"<figcaption>{esc(axis.name)}</figcaption></figure>"
            for axis in data.varying(sched.names)
        )
        try:
            sched_json: str | None = script_json(sched.to_dict())
            plain = json.dumps(sched.to_dict(), indent=2, ensure_ascii=False, default=str)
        except ValueError:
            sched_json = plain = None
        download = ""
        if sched_json is not None and plain is not None:
            href = "data:application/json;charset=utf-8," + urllib.parse.quote(plain)
            download = (
                f'<p><a download="{esc(data.name)}-schedule.json" href="{esc(href)}">'
                "Download the schedule (JSON)</a> \u2014 the same as "
                "<code>genepool export</code>.</p>"
                f'<script type="application/json" id="schedule-data">{sched_json}</script>'
            )
        schedule_html = (
            f'<p class="lead">The hyperparameters in effect along member {esc(sched.member)}\'s '
            f"line, to step {esc(sched.final_step)} "
            f"({esc(data.metric)} {esc(fmt_value(sched.score))}): each row holds from its step on."
            "</p>"
            f"{_schedule_table(sched)}"
            f'<div class="plots">{sched_figs}</div>{download}'
        )
    else:
        schedule_html = '<p class="empty">No member has a score yet: no best schedule.</p>'
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
        f"<title>{esc(heading)}</title><style>{_CSS}</style></head>",
        f'<body class="{" ".join(body_classes)}">',
        f"<header><h1>{esc(heading)}</h1>",
        '<nav><a href="#scores">scores</a><a href="#lineage">lineage</a>'
        '<a href="#hparams">hyperparameters</a><a href="#schedule">best schedule</a>'
        '<a href="#members">members</a><a href="#decisions">decisions</a></nav>',
        f'<dl class="facts">{dl}</dl></header>',
        legend,
        f'<section id="scores"><h2>{esc(data.metric)} over steps</h2>',
        '<p class="lead">Every member is one line; an exploit is a jump in it. Red: the '
        "scores along the best member's line (its ancestors', then its own), circles at "
        "its exploits.</p>",
        scores_svg(data),
        "</section>",
        '<section id="lineage"><h2>Lineage</h2>',
        '<p class="lead">Each row is a member through its steps; a vertical line is an '
        "exploit, from the donor's row at the step copied to the member that copied it. "
        "Dark: lines whose weights survive in some member at the end; red: the best "
        "member's ancestry.</p>",
        tree_svg(data),
        '<label class="toggle"><input type="checkbox" id="show-dead"'
        f"{'' if many_jumps else ' checked'}> show the exploits whose line died out "
        f"({len(data.jumps) - len(data.surviving_jumps)})</label>",
        "</section>",
        '<section id="hparams"><h2>Hyperparameters over steps</h2>',
        "<p class=\"lead\">Every member's values; red: the best member's schedule.</p>",
        hp_section,
        "</section>",
        f'<section id="schedule"><h2>Best schedule</h2>{schedule_html}</section>',
        f'<section id="members"><h2>Members</h2>{_members_table(data)}</section>',
        '<section id="decisions"><h2>Decisions</h2>',
        f'<p class="lead">The latest {len(data.judged)} exploits and explores whose rules '
        "said why.</p>",
        _judged_table(data),
        "</section>",
        f'<footer><p class="note">Written by genepool {esc(__version__)}.</p></footer>',
        f"<script>{_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(body)


def write_report(
    result: Result,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> Path:
    """Write the run's report: one self-contained HTML file.

    It opens in any browser with no network and no server: scores of every member over
    steps, hyperparameters over steps, the lineage tree with the winning ancestry, the
    members and the best schedule. It works on a run that is still going.

    Args:
        result: The run (from :func:`genepool.run` or :meth:`genepool.Result.open`).
        path: The file to write (its folder is made if missing).
        title: The page's title (default: ``"genepool report: <run name>"``).
        max_points: Points per member's score line, at most (longer lines are downsampled).

    Returns:
        The path written.

    Example:
        >>> import tempfile, pathlib
        >>> import genepool as gp
        >>> from genepool.analysis import write_report
        >>> def train(member):
        ...     x = member.restore() or 0.0
        ...     while member.running:
        ...         x += member.hparams["lr"]
        ...         member.report(score=x, state=lambda: x)
        >>> result = gp.run(train, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score",
        ...                 population=4, ready=gp.Every(5), budget=gp.Budget(steps=20), seed=0)
        >>> out = write_report(result, pathlib.Path(tempfile.mkdtemp()) / "report.html")
        >>> "Lineage" in out.read_text(encoding="utf-8")
        True
    """
    data = collect(result, max_points=max_points)
    text = render(data, title=title)
    out = Path(os.fspath(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    log.info("report of run %r written to %s (%d bytes)", result.name, out, len(text))
    return out
