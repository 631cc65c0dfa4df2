"""What a run leaves: the best member, every member, and the full history."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, cast

from genepool._errors import GenepoolError, invalid, missing_dependency
from genepool._storage import close_store, open_storage
from genepool.analysis import (
    Lineage,
    Schedule,
    ancestry_scores,
    hparams_timeline,
    lineage,
    schedule_changes,
)
from genepool.analysis._lineage import EventIndex, event_index, hparams_of_reports
from genepool.checkpoints import CheckpointStore, check_run_name, decode
from genepool.member import ACTIVE, FAILED, Event, MemberView, Population, Report
from genepool.policy.stop import ended_because
from genepool.store import History, Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MemberResult", "Result"]


@dataclass(frozen=True)
class MemberResult:
    """A member at the end of the run.

    Attributes:
        id: The member's number.
        hparams: The hyperparameters its final checkpoint was trained with.
        score: The score attached to its final checkpoint.
        step: The training its final weights had.
        checkpoint: The id of its final checkpoint (load it with :meth:`Result.load`).
        status: ``"finished"``, ``"failed"``, or ``"active"`` for an interrupted run.
        generation: How many times it exploited another member.
        parent: The donor of its last exploit.
        stop_reason: Why it stopped (``"budget"``, ``"failed"`` after ``max_failures``
            failed rounds, ``"crashed"`` after ``max_crashes`` dead workers, ...);
            ``None`` while active.
    """

    id: int
    hparams: Mapping[str, Any]
    score: float | None
    step: int
    checkpoint: str | None
    status: str
    generation: int
    parent: int | None
    stop_reason: str | None = None

    @classmethod
    def of(cls, m: MemberView) -> MemberResult:
        ckpt = m.checkpoint
        return cls(
            id=m.id,
            hparams=dict(ckpt.hparams) if ckpt is not None else dict(m.hparams),
            score=ckpt.score if ckpt is not None else None,
            step=ckpt.step if ckpt is not None else 0,
            checkpoint=ckpt.id if ckpt is not None else None,
            status=m.status,
            generation=m.generation,
            parent=m.parent,
            stop_reason=m.stop_reason,
        )


class Result:
    """The outcome of :func:`genepool.run`, read from the store.

    Made, it holds only the population and the run's settings: the history
    (:attr:`reports`, :attr:`events`, and all that is drawn from them) is read from the
    store when first asked for, and kept.

    A result that opened its store (:meth:`open` given a URL, or :func:`genepool.run`
    given one) closes the store's connections with :meth:`close`, or at the end of a
    ``with`` block; asked for more afterwards, it reopens them. A store passed in is
    the caller's: never closed here.

    Attributes:
        name: The run's name.
        seed: The run seed (pass it again to reproduce a serial run exactly).
        stop_reason: Why the run ended: ``"budget"`` (every member trained its budget,
            or stopped: see :attr:`failed`), ``"time"``, ``"target"``, ``"plateau"``,
            ``"all_failed"`` (every member failed), or ``"interrupted"`` (Ctrl-C, a
            stop signal, or, for :meth:`open`, a run still going or cut short). A run
            that meets a storage fault (a full disk, an I/O error, a lost database)
            raises :class:`~genepool.StorageError` instead, with its members left active
            (``genepool run`` reports it as ``"storage"``): the same call resumes it.
        population: Every member as the store has it (read when the result was made).

    Example: ``with gp.Result.open("sqlite:///pbt.db") as result: print(result.best)``.
    """

    def __init__(
        self,
        *,
        name: str,
        seed: int,
        metric: str,
        stop_reason: str,
        store: Store,
        checkpoints: CheckpointStore,
        trust: bool = False,
        owns_store: bool = False,
        history: History | None = None,
    ) -> None:
        self.name = name
        self.seed = seed
        self.metric = metric
        self.stop_reason = stop_reason
        self._store = store
        self._checkpoints = checkpoints
        self._trust = trust
        self._owns_store = owns_store
        self.population: Population = store.population(name)
        # the history, when the maker has read it already (a logger's feed, at the run's end)
        self._history: History | None = history
        self._events: tuple[Event, ...] | None = None if history is None else history.events
        # the events, their index and the lines drawn from them so far (by member)
        self._index: tuple[tuple[Event, ...], EventIndex, dict[int, Lineage]] | None = None
        self._config: Mapping[str, Any] | None = None

    @property
    def reports(self) -> tuple[Report, ...]:
        """Every report, in the order written (read from the store on first use)."""
        if self._history is None:
            self._history = self._store.history(self.name)
            self._events = self._history.events
        return self._history.reports

    @property
    def events(self) -> tuple[Event, ...]:
        """Every event (exploits, explores, failures, stops), in the order written (read
        from the store on first use, without the reports)."""
        if self._events is None:
            self._events = self._store.events(self.name)
        return self._events

    @property
    def config(self) -> Mapping[str, Any]:
        """The run's stored settings (metric, mode, seed, rules, ...), as the store keeps
        them; empty where the store has none for this run."""
        if self._config is None:
            try:
                self._config = self._store.run_config(self.name)
            except (KeyError, GenepoolError):
                self._config = {}
        return self._config

    def _event_index(self) -> tuple[EventIndex, dict[int, Lineage]]:
        """The events' :func:`~genepool.analysis._lineage.event_index` and the lineages
        drawn with it, built once for every member's lineage and schedule (afresh if the
        events were read again)."""
        events = self.events
        if self._index is None or self._index[0] is not events:
            self._index = (events, event_index(events), {})
        return self._index[1], self._index[2]

    def close(self) -> None:
        """Close the store's connections if this result opened the store (see the class);
        the history already read stays readable."""
        if self._owns_store:
            close_store(self._store)

    def __enter__(self) -> Result:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @classmethod
    def open(
        cls,
        storage: str | Store,
        name: str = "run",
        *,
        checkpoints: str | CheckpointStore | None = None,
        trust: bool = False,
    ) -> Result:
        """Read a run back from a durable store, finished or still going.

        Reading never writes: a store given by its URL is opened read-only (a database
        that does not exist is an error, not created; its schema is neither created nor
        upgraded), and the checkpoints' folder is neither created nor swept.

        Args:
            storage: The store's URL, or a store.
            name: The run's name.
            checkpoints: Where its checkpoints are (default: as :func:`genepool.run`'s).
            trust: Also read checkpoints that hold pickled objects (a run with
                ``trust_checkpoints=True``) or are in genepool's first format. Reading
                those can run code: pass it only for checkpoint storage as trusted as
                this code. Without it, reading a checkpoint never runs code.

        Raises:
            StorageError: The database does not exist, is not a genepool database, or is
                corrupt.
            InvalidArgumentError: The store has no run called ``name`` (the message lists
                those it has), or an argument is wrong.

        The result holds the store open while it is used: close it with
        :meth:`close`, or open it in a ``with`` block (a store passed in stays open).

        Example: ``with gp.Result.open("sqlite:///pbt.db") as result: state = result.load()``
        is the best member's state.
        """
        from genepool._settings import READ_BACK, check

        check("Result.open", {"storage": storage, "checkpoints": checkpoints}, READ_BACK)
        if type(trust) is not bool:  # never a truthy string: it lets code run
            raise invalid("Result.open", "trust", "True or False", repr(trust))
        check_run_name(name, owner="Result.open", name="name")  # before the store opens
        from genepool.clock import SystemClock

        store, the_checkpoints = open_storage(
            storage, checkpoints, 1, SystemClock(), read_only=True
        )
        opened = not isinstance(storage, Store)
        try:
            config = _run_config(store, name)
            result = cls(
                name=name,
                seed=int(config.get("seed", 0)),
                metric=str(config.get("metric", "score")),
                stop_reason="interrupted",
                store=store,
                checkpoints=the_checkpoints,
                trust=trust,
                owns_store=opened,
            )
            result._config = config
        except BaseException:
            if opened:
                close_store(store)
            raise
        if not any(m.status == ACTIVE for m in result.population):
            result.stop_reason = ended_because(result.population)
        return result

    @property
    def members(self) -> list[MemberResult]:
        """Every member, by id."""
        return [MemberResult.of(m) for m in self.population]

    @property
    def failed(self) -> list[MemberResult]:
        """The members that failed, whatever the reason (their :attr:`MemberResult.stop_reason`
        says which); ``genepool revive`` or ``gp.run(..., revive=True)`` brings them back."""
        return [MemberResult.of(m) for m in self.population if m.status == FAILED]

    @property
    def best(self) -> MemberResult:
        """The member whose final checkpoint scores best."""
        best = self.population.best()
        if best is None:
            raise invalid(
                "Result",
                "best",
                "defined",
                "no member with a scored checkpoint",
                "Every member failed before its first checkpoint: see result.events.",
            )
        return MemberResult.of(best)

    def load(self, member: int | None = None) -> Any:
        """The state of a member's final checkpoint (the best member's by default)."""
        target = self.best if member is None else MemberResult.of(self._member("load", member))
        if target.checkpoint is None:
            raise invalid("Result.load", "member", "a member with a checkpoint", repr(member))
        blob = self._checkpoints.get(target.checkpoint)
        return decode(blob, checkpoint_id=target.checkpoint, trust=self._trust)["state"]

    def records(self) -> list[dict[str, Any]]:
        """One dict per report: ``member``, ``step``, ``time`` and the metrics."""
        return [
            {"member": r.member, "step": r.step, "time": r.time, **r.metrics} for r in self.reports
        ]

    def event_records(self) -> list[dict[str, Any]]:
        """One dict per event: ``kind``, ``member``, ``step``, ``time`` and its details."""
        return [
            {"kind": e.kind, "member": e.member, "step": e.step, "time": e.time, **e.data}
            for e in self.events
        ]

    # -- what PBT found ----------------------------------------------------------------
    def _member_id(self, member: int | None, method: str = "lineage") -> int:
        return self.best.id if member is None else self._member(method, member).id

    def _member(self, method: str, member: object) -> MemberView:
        """The member ``member`` names, or an error naming ``Result.<method>``'s argument."""
        ids = [m.id for m in self.population]
        if (
            isinstance(member, bool)
            or not isinstance(member, numbers.Integral)
            or member not in ids
        ):
            shown_ids = f"[{ids[0]}, ..., {ids[-1]}]" if len(ids) > 8 else repr(ids)
            raise invalid(
                f"Result.{method}",
                "member",
                f"a member id of run {self.name!r}: one of {shown_ids}, or None for the best",
                repr(member)[:200],
            )
        return self.population[int(member)]

    def lineage(self, member: int | None = None) -> Lineage:
        """The family line of a member's final weights (the best member's by default).

        ``lineage().ancestors`` are the members along it, root first; ``.jumps`` the
        exploits, each with the step the recipient continued from.
        """
        member_id = self._member_id(member)
        index, lines = self._event_index()
        if member_id not in lines:  # a Lineage is immutable: drawn once per member
            lines[member_id] = lineage(self.events, self.population, member_id, index=index)
        return lines[member_id]

    def schedule(self, member: int | None = None) -> Schedule:
        """The hyperparameters in effect at every step along a member's line.

        By default the best member's: the schedule that produced the best final model.
        ``schedule().at(s)`` is what trained step ``s + 1``; ``.save(path)`` writes JSON.

        Example:
            >>> import genepool as gp
            >>> class Climb(gp.Trainable):
            ...     def setup(self, hparams): self.x, self.lr = 0.0, hparams["lr"]
            ...     def apply_hparams(self, hparams): self.lr = hparams["lr"]
            ...     def step(self): self.x += self.lr; return {"score": self.x}
            ...     def save(self): return {"x": self.x}
            ...     def load(self, state): self.x = state["x"]
            >>> result = gp.run(Climb, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score",
            ...                 population=4, ready=gp.Every(5), budget=gp.Budget(steps=20),
            ...                 seed=0)
            >>> schedule = result.schedule()
            >>> schedule.final_step, sorted(schedule.at(0))
            (20, ['lr'])
        """
        line = self.lineage(member)
        final = self.population[line.member]
        ckpt = final.checkpoint
        return Schedule(
            changes=schedule_changes(
                self.events, self.population, line, index=self._event_index()[0]
            ),
            final_step=line.final_step,
            run=self.name,
            member=line.member,
            metric=self.metric,
            score=ckpt.score if ckpt is not None else final.score,
            seed=self.seed,
        )

    def ancestry_scores(self, member: int | None = None) -> list[tuple[int, float, int]]:
        """The scores along a member's line: ``(step, score, member that trained it)``."""
        return ancestry_scores(self.reports, self.events, self.lineage(member), self.metric)

    def history_frame(self) -> pd.DataFrame:
        """Every report with the hyperparameters that trained it, as a DataFrame.

        Columns: ``member``, ``step``, ``time``, each metric, then one ``hp.<name>`` column
        per hyperparameter (needs ``pandas``).
        """
        pandas = _pandas("Result.history_frame()")
        reports = self.reports
        trained = hparams_of_reports(hparams_timeline(self.events, self.population), reports)
        rows = []
        for r, hp in zip(reports, trained, strict=True):
            rows.append(
                {
                    "member": r.member,
                    "step": r.step,
                    "time": r.time,
                    **r.metrics,
                    **{f"hp.{k}": v for k, v in hp.items()},
                }
            )
        return cast("pd.DataFrame", pandas.DataFrame.from_records(rows))

    def events_frame(self) -> pd.DataFrame:
        """The events (exploits, explores, failures, stops) as a DataFrame."""
        pandas = _pandas("Result.events_frame()")
        return cast("pd.DataFrame", pandas.DataFrame.from_records(self.event_records()))

    def to_frame(self) -> pd.DataFrame:
        """The reports as a pandas DataFrame (needs ``pandas``)."""
        pandas = _pandas("Result.to_frame()")
        return cast("pd.DataFrame", pandas.DataFrame.from_records(self.records()))

    def __repr__(self) -> str:
        best = self.population.best()
        score = best.score if best is not None else None
        return (
            f"Result(name={self.name!r}, members={len(self.population)}, best_score={score!r}, "
            f"stop_reason={self.stop_reason!r})"
        )


def _pandas(what: str) -> ModuleType:
    try:
        import pandas
    except ImportError:
        raise missing_dependency("pandas", "pandas", what) from None
    return pandas


def _run_config(store: Store, name: str) -> Mapping[str, Any]:
    """The stored settings of the run ``name``, or an error listing the runs there are."""
    try:
        return store.run_config(name)
    except KeyError:
        runs = store.runs()
        raise invalid(
            "Result.open",
            "name",
            f"the name of a run in {store!r}: one of {runs}" if runs else "a run's name",
            repr(name),
            "Fix: pass one of those names." if runs else "Fix: check the URL (it holds no run).",
        ) from None
