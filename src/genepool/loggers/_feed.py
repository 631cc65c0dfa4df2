"""Feeding loggers from what a run wrote to its store.

One path for a live run and an export: a :class:`LogFeed` reads the run's reports and
events from the store (only what it has not sent yet: a store that keeps its history in
order, the memory store and SQLite, is read on from where the last read ended; another,
PostgreSQL, is read whole each time), hands each logger a
:class:`~genepool.loggers.Batch`, and at the end every member's lineage curve. During a
run (:func:`feeding`) a thread of the driver polls the store every ``every`` seconds, and
once more when the run ends; no logger call ever sits inside a worker's round, and it is
the same for the serial, processes and Ray executors and for ask/tell.
:func:`export_logs` is the very same feed run once over a finished (or going) run.

A logger that raises (on start, on log, on finish) is dropped with a warning through
``logging``; the run goes on. A store read that fails is warned about and tried again at
the next poll.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from genepool._errors import invalid
from genepool._redact import redact_url, shown
from genepool.analysis._curves import (
    CurveReader,
    MemberPoint,
    describe_event,
    lineage_curves,
    points_with,
)
from genepool.analysis._lineage import TimelinesReadOn, hparams_timeline
from genepool.loggers._base import Batch, LoggedEvent, Logger, RunInfo
from genepool.member import Event, Report
from genepool.store import History, Store

__all__ = ["LogFeed", "check_loggers", "export_logs", "feeding"]

log = logging.getLogger("genepool.loggers")

#: Reading the run takes at most about 1/LOAD_FACTOR of a CPU (0.5%): the wait after a poll
#: is at least this many times as long as its read took (a large run's history takes longer
#: to read, so it is read less often). Sending what was read is the loggers' own cost. With
#: two workers on two cores, 2% of a CPU (a factor of 50) cost 0.01 of efficiency alone.
LOAD_FACTOR = 200.0


def check_loggers(loggers: Any, *, owner: str) -> list[Logger]:
    """``loggers`` as a list, each checked to have ``start``, ``log`` and ``finish``.

    Raises:
        InvalidArgumentError: ``loggers`` is not a list of loggers.
    """
    if loggers is None:
        return []
    fix = "Fix: loggers=[gp.MLflowLogger(tracking_uri='sqlite:///mlflow.db')], or None."
    if isinstance(loggers, str | bytes | Mapping) or not isinstance(loggers, Sequence):
        raise invalid(owner, "loggers", "a list of loggers", shown(loggers), fix)
    for i, one in enumerate(loggers):
        if not all(callable(getattr(one, name, None)) for name in ("start", "log", "finish")):
            must = "a logger (with start, log and finish methods: gp.Logger)"
            raise invalid(owner, f"loggers[{i}]", must, shown(one), fix)
    return list(loggers)


def _logged(event: Event) -> LoggedEvent:
    data = event.data
    exploit = event.kind == "exploit"
    new = data.get("new_hparams") if event.kind in ("exploit", "explore") else None
    return LoggedEvent(
        member=event.member,
        step=event.step,
        time=event.time,
        kind=event.kind,
        text=describe_event(event),
        donor=int(data["donor"]) if exploit and data.get("donor") is not None else None,
        donor_step=(
            int(data["donor_step"]) if exploit and data.get("donor_step") is not None else None
        ),
        hparams=dict(new) if isinstance(new, Mapping) else None,
    )


class LogFeed:
    """Sends a run in a store to loggers: :meth:`start`, :meth:`poll` (repeatedly),
    :meth:`finish`. Thread-safe: one call at a time.

    Args:
        loggers: The loggers.
        store: The run's store.
        name: The run's name.
    """

    def __init__(self, loggers: Sequence[Logger], store: Store, name: str) -> None:
        self.loggers = list(loggers)
        self.store = store
        self.name = name
        self._reader = CurveReader()  # for a store that is read whole each time
        #: The run as read so far: its lineages are drawn from it at the end.
        self._reports: list[Report] = []
        self._events: list[Event] = []
        self._ends = (-1, -1)  # the positions the last read ended at (reports, events)
        self._timelines = TimelinesReadOn()  # the hyperparameters over the events read on
        self._lock = threading.Lock()
        self._started = False
        #: The loggers dropped for raising, in the order they failed.
        self.dropped: list[Logger] = []
        #: The CPU seconds the last poll took to read the run (not to send it).
        self.read_seconds = 0.0

    def _call(self, what: str, method: Callable[[Logger], None]) -> None:
        """Call ``method`` on each logger; a logger that raises is warned about and dropped."""
        for logger in list(self.loggers):
            try:
                method(logger)
            except Exception as err:  # a logger never stops the run
                self.loggers.remove(logger)
                self.dropped.append(logger)
                log.warning(
                    "the logger %s failed in %s and is dropped (the run goes on): %s: %s",
                    redact_url(type(logger).__name__),
                    what,
                    type(err).__name__,
                    redact_url(str(err))[:2000],
                )

    def start(self) -> None:
        """Tell the loggers which run starts (its members and their first hyperparameters)."""
        with self._lock:
            if self._started:
                return
            config = self.store.run_config(self.name)
            population = self.store.population(self.name)
            timelines = hparams_timeline(self.store.events(self.name), population)
            run = RunInfo(
                name=self.name,
                metric=str(config.get("metric", "score")),
                mode=str(population.mode),
                seed=int(config.get("seed", 0)),
                members={m.id: dict(timelines[m.id][0][2]) for m in population},
            )
            self._started = True  # once the run is read: a failed read is tried again
            self._call("start", lambda logger: logger.start(run))

    def poll(self) -> int:
        """Send what the run wrote since the last poll; return how many points (none
        before :meth:`start`)."""
        with self._lock:
            return self._poll()

    def _poll(self) -> int:
        """:meth:`poll`, under the lock."""
        if not self.loggers or not self._started:
            return 0
        began = time.thread_time()
        points, new_events = self._read()
        events = [_logged(e) for e in new_events]
        self.read_seconds = time.thread_time() - began
        if points or events:
            batch = Batch(points=points, events=events)
            self._call("log", lambda logger: logger.log(batch))
        return len(points)

    def _read(self) -> tuple[list[MemberPoint], list[Event]]:
        """What the run wrote since the last read, each report and event once: as points,
        and as events. A store that keeps its history in order
        (:attr:`Store.history_in_order`) is read on from where the last read ended;
        another is read whole, and what each member wrote beyond what was read of it is
        new."""
        if self.store.history_in_order:
            reports_after, events_after = self._ends
            found = self.store.history_after(
                self.name, reports_after=reports_after, events_after=events_after
            )
            self._ends = (found.reports_end, found.events_end)
            self._reports += found.reports
            self._events += found.events
            timelines = self._timelines.read(self._events, found.population)
            return points_with(found.reports, timelines), list(found.events)
        found = self.store.history_after(self.name)
        self._reports, self._events = list(found.reports), list(found.events)
        points = self._reader.read(found.reports, found.events, found.population)
        return points, self._reader.new_events(found.events)

    def finish(self) -> None:
        """Send what is left and every member's lineage curve; the loggers close."""
        from genepool.checkpoints import MemoryCheckpoints
        from genepool.result import Result

        self.start()
        with self._lock:
            self._poll()
            if not self.loggers:
                return
            config = self.store.run_config(self.name)
            result = Result(
                name=self.name,
                seed=int(config.get("seed", 0)),
                metric=str(config.get("metric", "score")),
                stop_reason="",
                store=self.store,
                checkpoints=MemoryCheckpoints(),
                history=History(tuple(self._reports), tuple(self._events)),  # read already
            )
            curves = lineage_curves(result)
            self._call("finish", lambda logger: logger.finish(curves))
            self.loggers.clear()

    def once(self) -> int:
        """The whole run at once (an export): start, one poll, finish; return how many
        points were sent."""
        self.start()
        sent = self.poll()
        self.finish()
        return sent


def _safely(what: str, action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception as err:  # a store read that failed: the next poll tries again
        log.warning("logging the run: %s failed: %s", what, redact_url(str(err))[:2000])


@contextlib.contextmanager
def feeding(
    loggers: Sequence[Logger], store: Store, name: str, *, every: float = 1.0
) -> Iterator[LogFeed | None]:
    """While the block runs, a thread starts the loggers and sends them the run every
    ``every`` seconds or longer (see :data:`LOAD_FACTOR`); at its end, what is left and the
    lineages. Nothing (``None``) without loggers.

    The thread runs at the process's priority: on a machine the workers keep busy, what
    it sends while they train shares the CPUs with them, where at a lower priority it
    would wait for the run's end and be sent then, on one core."""
    if not loggers:
        yield None
        return
    feed = LogFeed(loggers, store, name)
    stop = threading.Event()

    def loop() -> None:
        _safely("starting the loggers", feed.start)  # a server, files: not in the way
        wait = every
        while not stop.wait(wait):
            _safely("starting the loggers", feed.start)  # if the first read failed
            _safely("reading the run", feed.poll)
            # reading the whole history again costs more as the run grows: read less often
            wait = max(every, LOAD_FACTOR * feed.read_seconds)

    thread = threading.Thread(target=loop, name="genepool-loggers", daemon=True)
    thread.start()
    try:
        yield feed
    finally:
        stop.set()
        thread.join()
        _safely("finishing the loggers", feed.finish)


def export_logs(result: Any, loggers: Sequence[Logger]) -> int:
    """Send a run, finished or still going, to loggers: every member's points and events,
    and its lineage curve, as :func:`genepool.run` sends them with ``loggers=`` (the same
    code, run once). ``genepool export-logs`` is this from a shell.

    Args:
        result: The run (:func:`genepool.run`'s result, or :meth:`genepool.Result.open`).
        loggers: Where to send it (``gp.MLflowLogger(...)``, ``gp.WandbLogger(...)``).

    Returns:
        How many points (reports) were sent.

    Raises:
        InvalidArgumentError: ``loggers`` is not a list of loggers.

    Example:
        >>> import genepool as gp
        >>> class Keep:
        ...     def start(self, run): self.points = []
        ...     def log(self, batch): self.points += batch.points
        ...     def finish(self, lineages): self.lineages = lineages
        >>> def train(member):
        ...     while member.running:
        ...         member.report(score=member.hparams["lr"] * member.step, state=0)
        >>> result = gp.run(train, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score",
        ...                 population=2, ready=gp.Every(2), budget=gp.Budget(steps=4), seed=0)
        >>> keep = Keep()
        >>> gp.export_logs(result, [keep])
        8
        >>> sorted(keep.lineages) == [m.id for m in result.population]
        True
    """
    feed = LogFeed(check_loggers(loggers, owner="export_logs"), result._store, result.name)
    return feed.once()
