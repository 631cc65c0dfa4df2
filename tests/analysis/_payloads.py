"""A run whose every string the report shows is script (for the report's injection tests).

Each payload sets ``window.__pwned`` if a browser ever runs it: markup with an event
handler, a script element, an attribute break-out, a ``javascript:`` URL and ``</script>``
and ``</style>`` break-outs. :func:`pwned_result` writes a run straight through the store
API (which takes any string) with one in its name, metric, hyperparameter names and
values (numeric, category and fixed), other metrics and a string score, event kinds, the
error and traceback of a failure, a checkpoint's score, a member's status and the reason
the run stopped.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import genepool as gp
from genepool.store import WorkerInfo

PAYLOADS = (
    '<img src=x onerror="window.__pwned=1">',
    '"><script>window.__pwned=1</script>',
    "'><svg onload=window.__pwned=1>",
    "</script><script>window.__pwned=1</script>",
    "javascript:window.__pwned=1//",
    "</title></svg><img src=x onerror=window.__pwned=1>",
    "\u2028</style><script>window.__pwned=1</script>",
    "<a href=javascript:window.__pwned=1 id=pwn>x</a>",
)
#: The run's name, metric, and hyperparameter names (numeric, category, fixed).
RUN = "run " + PAYLOADS[0]
METRIC = "score " + PAYLOADS[1]
NUMERIC = "lr " + PAYLOADS[2]
CATEGORY = "opt " + PAYLOADS[3]
FIXED = "fixed " + PAYLOADS[4]
#: The category's values, and the fixed hyperparameter's value.
LEVELS = (PAYLOADS[5], PAYLOADS[6])
FIXED_VALUE = PAYLOADS[7]
#: Where the rest go: another metric, an event kind, a failure's error and traceback, the
#: reason the run stopped, a member's status.
NOTE = PAYLOADS[0]
KIND = "note " + PAYLOADS[1]
ERROR = "ValueError: " + PAYLOADS[2]
TRACEBACK = "Traceback (most recent call last):\n" + PAYLOADS[3]
STOP = PAYLOADS[5]
STATUS = PAYLOADS[7]
#: A checkpoint's score (a store takes any value), also reported as the metric.
STRING_SCORE = PAYLOADS[6]
#: The strings above that the report shows as text (it does not show NOTE or TRACEBACK).
SHOWN: tuple[str, ...] = (RUN, METRIC, NUMERIC, CATEGORY, FIXED, *LEVELS, FIXED_VALUE)
SHOWN += (KIND, ERROR, STOP, STATUS, STRING_SCORE)


def pwned_result() -> gp.Result:
    """Three members: member 0 stops at step 4 (in a status of script), member 1 copies
    it at step 4 and explores (it ends best), member 2 explores and fails a round; member
    2's checkpoint score is a string."""
    space = gp.Space(
        {NUMERIC: gp.Float(0.1, 1.0, log=True), CATEGORY: gp.Choice(list(LEVELS)), FIXED: "x"}
    )
    config = {"metric": METRIC, "mode": "max", "seed": 3, "space": repr(space)}
    start = [
        {NUMERIC: 0.2 * (i + 1), CATEGORY: LEVELS[i % 2], FIXED: FIXED_VALUE} for i in range(3)
    ]
    store = gp.MemoryStore()
    store.create_run(
        RUN, config=config, members=[gp.MemberView(id=i, hparams=h) for i, h in enumerate(start)]
    )
    worker = WorkerInfo("test")
    clock = 0.0

    def commit(
        member: int,
        steps: range,
        events: list[gp.Event],
        hparams: dict[str, Any],
        ckpt_score: Any = None,
        **changes: Any,
    ) -> None:
        nonlocal clock
        held = []
        lease = store.claim(RUN, worker, lease_seconds=60.0)
        while lease is not None and lease.member != member:
            held.append(lease)
            lease = store.claim(RUN, worker, lease_seconds=60.0)
        assert lease is not None
        reports = []
        for s in steps:
            clock += 1.0
            score = (member + 1) * s / 10.0
            reports.append(gp.Report(member, s, {METRIC: score, "note": NOTE}, clock))
        reports.append(gp.Report(member, steps[-1], {METRIC: STRING_SCORE}, clock))
        view = store.population(RUN)[member]
        last, score = steps[-1], (member + 1) * steps[-1] / 10.0
        ckpt_score = score if ckpt_score is None else ckpt_score
        ckpt = gp.CheckpointRef(f"c{member}-{last}", member, last, last, ckpt_score, hparams)
        new = dataclasses.replace(
            view, hparams=dict(hparams), step=last, checkpoint=ckpt, score=score, **changes
        )
        store.commit(lease, member=new, reports=reports, events=events, release=True)
        for other in held:
            store.commit(other, release=True)

    commit(0, range(1, 5), [], start[0], status=STATUS)
    for m in (1, 2):
        commit(m, range(1, 5), [], start[m])
    copied = {**start[0], NUMERIC: 0.9}
    exploit = {
        "donor": 0,
        "donor_step": 4,
        "old_step": 4,
        "old_hparams": start[1],
        "new_hparams": copied,
        "generation": 1,
    }
    clock += 0.5
    events = [gp.Event("exploit", 1, 4, exploit, clock), gp.Event(KIND, 1, 4, {}, clock)]
    commit(1, range(5, 9), events, copied, generation=1, parent=0)
    explored = {**start[2], CATEGORY: LEVELS[0]}
    clock += 0.5
    explore = gp.Event("explore", 2, 4, {"old_hparams": start[2], "new_hparams": explored}, clock)
    failure = gp.Event("failure", 2, 6, {"error": ERROR, "traceback": TRACEBACK}, clock + 0.5)
    commit(2, range(5, 7), [explore, failure], explored, ckpt_score=STRING_SCORE, failures=1)
    return gp.Result(
        name=RUN,
        seed=3,
        metric=METRIC,
        stop_reason=STOP,
        store=store,
        checkpoints=gp.MemoryCheckpoints(),
    )
