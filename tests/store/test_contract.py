"""The datastore contract (see ``genepool.store._base``) as a class, :class:`StoreContract`,
that each backend's test module subclasses: ``test_memory.py``, ``test_sqlite.py``,
``test_postgresql.py`` and ``test_server.py``.

Every test goes through the :class:`~genepool.store.Store` API only. The ``clock`` is a
:class:`~genepool.clock.ManualClock` that the tests move to expire leases. Here too: the
databases the SQL backends' tests use (a SQLite file under the test's ``tmp_path``; a
fresh PostgreSQL schema, skipped when no server answers, but failed when the ``CI``
environment variable is set).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import numpy as np
import pytest

import genepool as gp
from genepool.member import CheckpointRef, Event, MemberView, Report
from genepool.store import History, Lease, MemoryStore, Store, WorkerInfo, _leases

#: The PostgreSQL server the tests use (a fresh schema per test, dropped after it).
POSTGRES_URL = os.environ.get(
    "GENEPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
_postgres_down: list[str] = []  # why the server is unusable, once found out


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail on CI, which must run every backend."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run on CI: {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


def postgres_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh schema on the test server, dropped when the test ends.

    Skips the test (fails it when ``CI`` is set) if psycopg or the server is missing.
    """
    if _postgres_down:
        _unavailable(_postgres_down[0])
    try:
        import psycopg
    except ImportError:
        _postgres_down.append("psycopg is not installed (pip install 'genepool[postgres]')")
        _unavailable(_postgres_down[0])
    dsn = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    schema = f"gp_test_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as err:
        _postgres_down.append(f"no PostgreSQL server at {POSTGRES_URL} ({err})")
        _unavailable(_postgres_down[0])

    def drop() -> None:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    request.addfinalizer(drop)
    options = quote(f"-csearch_path={schema}", safe="")
    return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}options={options}"


def sql_store(url: str, clock: gp.ManualClock) -> Iterator[Store]:
    """A SQL store on ``url`` (a fixture's body: closed when the test ends)."""
    from genepool.store.sql import SQLStore

    store = SQLStore(url, clock=clock)
    yield store
    store.close()


def sqlite_url(request: pytest.FixtureRequest) -> str:
    """The URL of a new SQLite file in the test's temporary directory."""
    tmp_path = request.getfixturevalue("tmp_path")
    return f"sqlite:///{tmp_path / 'store.db'}"


RUN = "run"
LEASE = 10.0
W1 = WorkerInfo(name="w1")
W2 = WorkerInfo(name="w2")


def members(n: int, **overrides: object) -> list[MemberView]:
    return [MemberView(id=i, hparams={"lr": 0.1 * (i + 1)}, **overrides) for i in range(n)]  # type: ignore[arg-type]


def ref(checkpoint_id: str, member: int, step: int = 4) -> CheckpointRef:
    return CheckpointRef(checkpoint_id, member, step, float(step), 1.0, {"lr": 0.1})


def claim(store: Store, worker: WorkerInfo = W1, max_ahead: int | None = None) -> Lease | None:
    return store.claim(RUN, worker, lease_seconds=LEASE, max_ahead=max_ahead)


def must_claim(store: Store, worker: WorkerInfo = W1) -> Lease:
    lease = claim(store, worker)
    assert lease is not None
    return lease


def claim_all(store: Store, max_ahead: int | None = None) -> list[int]:
    """Claim until nothing is claimable (holding every lease); the member ids, in order."""
    out = []
    while (lease := claim(store, max_ahead=max_ahead)) is not None:
        out.append(lease.member)
        assert len(out) < 100
    return out


def view(store: Store, member: int) -> MemberView:
    return store.population(RUN)[member]


def exited_pid() -> int:
    """The pid of a process of this machine that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


linux_only = pytest.mark.skipif(
    not os.path.exists("/proc/self/ns/pid"), reason="boot ids and PID namespaces are Linux's"
)


#: A boot id that no kernel has: another machine (a twin container host, a cloned image).
OTHER_BOOT = "00000000-0000-4000-8000-000000000000"


def dead_holder(machine: str) -> WorkerInfo:
    """A lease holder with this host name whose pid has exited, on ``machine``."""
    return WorkerInfo(name="gone", pid=exited_pid(), proc_start=1, machine=machine)


def holder_with_driver(*, holder_alive: bool, driver_alive: bool, machine: str) -> WorkerInfo:
    """A lease holder (this host name) on ``machine`` that records a driver: each of
    them this very process (alive) or a process that has exited."""
    here = os.getpid()
    return WorkerInfo(
        name="worker",
        pid=here if holder_alive else exited_pid(),
        proc_start=_leases._process_start(here) if holder_alive else 1,
        machine=machine,
        driver_pid=here if driver_alive else exited_pid(),
        driver_start=_leases._process_start(here) if driver_alive else 1,
    )


def fail(store: Store, member: int, **fields: object) -> None:
    """Stop ``member`` as failed (as a worker does), with these fields."""
    lease = must_claim(store)
    assert lease.member == member
    store.commit(
        lease,
        member=dataclasses.replace(view(store, member), status="failed", **fields),  # type: ignore[arg-type]
        events=[Event("stop", member, 4, {"reason": "crashed"}, 1.0)],
        release=True,
    )


# -- pins and collection -----------------------------------------------------------------


def own_checkpoint(store: Store, lease: Lease, checkpoint_id: str, step: int) -> Lease:
    """Commit ``checkpoint_id`` as the member's own new checkpoint."""
    row = dataclasses.replace(
        view(store, lease.member), step=step, checkpoint=ref(checkpoint_id, lease.member, step)
    )
    store.commit(lease, member=row)
    return lease


def collected_donor_checkpoint(store: Store, population: int) -> tuple[Lease, MemberView]:
    """A recipient's lease, and its view as copied from the donor's checkpoint ``d1``,
    which the store has collected already (the donor moved on to ``d2``)."""
    store.create_run(RUN, config={}, members=members(population))
    donor, recipient = must_claim(store), must_claim(store)
    own_checkpoint(store, donor, "d1", 4)
    own_checkpoint(store, donor, "d2", 8)
    assert store.collect(RUN, ["d1"]) == ["d1"]
    copied = dataclasses.replace(
        view(store, recipient.member), step=4, generation=1, checkpoint=ref("d1", donor.member, 4)
    )
    return recipient, copied


def keep_previous(store: Store, lease: Lease, checkpoint_id: str, step: int, keep: int) -> None:
    """Commit ``checkpoint_id`` as the member's own new checkpoint, keeping ``keep`` of the
    ones before it in ``previous`` (as the worker does)."""
    old = view(store, lease.member)
    held = ((old.checkpoint,) if old.checkpoint is not None else ()) + old.previous
    row = dataclasses.replace(
        old,
        step=step,
        checkpoint=ref(checkpoint_id, lease.member, step),
        previous=held[:keep],
    )
    store.commit(lease, member=row)


class StoreContract:
    """The datastore contract, one test per promise, for a backend's test class to subclass.

    A backend joins the suite with a test module of its own: a class named ``Test...``
    that subclasses this one and gives the ``store`` fixture (a new store whose leases the
    ``clock`` fixture times). Every test here then runs on it, and a test added here runs
    on every backend, with no list to update.
    """

    @pytest.fixture
    def clock(self) -> gp.ManualClock:
        return gp.ManualClock()

    @pytest.fixture
    def store(self, clock: gp.ManualClock) -> Store:
        raise NotImplementedError("a backend's test class gives its store fixture")

    # -- runs and snapshots ------------------------------------------------------------------

    def test_create_run_returns_true_then_false_and_changes_nothing(self, store):
        assert store.create_run(RUN, config={"mode": "max", "seed": 1}, members=members(3)) is True
        again = store.create_run(RUN, config={"mode": "min", "seed": 2}, members=members(5))
        assert again is False
        assert store.run_config(RUN)["seed"] == 1
        assert len(store.population(RUN)) == 3
        assert store.create_run("other", config={}, members=members(2)) is True
        assert len(store.population("other")) == 2

    def test_run_config_round_trips(self, store):
        config = {
            "mode": "min",
            "metric": "loss",
            "seed": 123,
            "initial": [{"lr": 0.1, "opt": "adam"}, {"lr": 0.2, "opt": "sgd"}],
            "synchronous": True,
            "budget": "Budget(steps=10)",
        }
        store.create_run(RUN, config=config, members=members(2))
        assert dict(store.run_config(RUN)) == config

    def test_held_names_the_members_a_live_lease_holds(self, store, clock):
        store.create_run(RUN, config={"mode": "max"}, members=members(3))
        assert store.held(RUN) == frozenset()
        first = store.claim(RUN, W1, lease_seconds=10.0)
        second = store.claim(RUN, W1, lease_seconds=30.0)
        assert first is not None
        assert second is not None
        assert store.held(RUN) == {first.member, second.member}
        store.commit(first, release=True)  # released
        assert store.held(RUN) == {second.member}
        clock.advance(31.0)  # run out
        assert store.held(RUN) == frozenset()
        dead = WorkerInfo(name="dead", pid=exited_pid())  # its holder is known dead
        lease = store.claim(RUN, dead, lease_seconds=60.0)
        assert lease is not None
        assert lease.member not in store.held(RUN)

    def test_a_members_curve_round_trips_and_ranks_it(self, store):
        # the curve (its own ready scores) is what it ranks by, even holding a donor's checkpoint
        store.create_run(RUN, config={"mode": "max"}, members=members(2))
        lease = claim(store)
        assert lease is not None
        donor = CheckpointRef("run/m1/s8-x", 1, 8, 8.0, 0.9, {"lr": 0.2})
        view = dataclasses.replace(
            store.population(RUN)[lease.member],
            checkpoint=donor,
            score=0.9,
            curve=((4.0, 0.25), (8.0, float("-inf")), (12.0, 0.5)),
        )
        store.commit(lease, member=view, release=True)
        population = store.population(RUN)
        assert population[lease.member].curve == view.curve
        assert population.rank_value(population[lease.member]) == 0.5

    def test_the_identity_is_the_datastores_own_and_writes_never_change_it(self, store):
        identity = store.identity
        assert isinstance(identity, str)
        assert re.fullmatch(r"[0-9a-f]{32}", identity)
        store.create_run(RUN, config={"mode": "max"}, members=members(2))
        lease = must_claim(store)
        store.commit(lease, member=dataclasses.replace(view(store, lease.member), step=4))
        store.collect(RUN, ["gone"])
        assert store.identity == identity
        assert MemoryStore().identity not in (identity, MemoryStore().identity)

    def test_unknown_run_raises_key_error(self, store):
        with pytest.raises(KeyError):
            store.run_config("nope")

    def test_population_has_the_members_and_mode(self, store):
        store.create_run(RUN, config={"mode": "min"}, members=members(3))
        pop = store.population(RUN)
        assert [m.id for m in pop] == [0, 1, 2]
        assert pop.mode == "min"
        assert pop[1].hparams == {"lr": pytest.approx(0.2)}

    def test_population_snapshot_is_immutable(self, store):
        store.create_run(RUN, config={}, members=members(2))
        before = store.population(RUN)
        lease = must_claim(store)
        updated = dataclasses.replace(
            view(store, lease.member), step=7, ready_count=1, checkpoint=ref("c", lease.member, 7)
        )
        after = store.commit(lease, member=updated, release=True)
        assert before[lease.member].step == 0
        assert before[lease.member].checkpoint is None
        assert before[lease.member].ready_count == 0
        assert after[lease.member].step == 7
        assert store.population(RUN)[lease.member].step == 7
        with pytest.raises(dataclasses.FrozenInstanceError):
            before[0].step = 3

    # -- claims ------------------------------------------------------------------------------

    def test_claim_returns_member_furthest_behind(self, store):
        rows = [
            MemberView(id=0, hparams={}, ready_count=2, step=8),
            MemberView(id=1, hparams={}, ready_count=1, step=8),
            MemberView(id=2, hparams={}, ready_count=1, step=4),
            MemberView(id=3, hparams={}, ready_count=1, step=4),
            MemberView(id=4, hparams={}, ready_count=0, step=9),
        ]
        store.create_run(RUN, config={}, members=rows)
        # fewest ready rounds, then lowest step, then lowest id
        assert claim_all(store) == [4, 2, 3, 1, 0]

    def test_claim_counts_a_pending_member_half_a_round_less(self, store):
        rows = [
            MemberView(id=0, hparams={}, ready_count=1, step=4),
            MemberView(id=1, hparams={}, ready_count=1, step=8, pending=True),
        ]
        store.create_run(RUN, config={}, members=rows)
        assert claim_all(store) == [1, 0]

    def test_claim_never_hands_a_leased_member_to_another_caller(self, store):
        store.create_run(RUN, config={}, members=members(3))
        leases = [must_claim(store, W1), must_claim(store, W2), must_claim(store, W1)]
        assert sorted(lease.member for lease in leases) == [0, 1, 2]
        assert claim(store, W2) is None
        assert leases[1].worker == W2
        assert all(lease.run == RUN for lease in leases)

    def test_claim_returns_none_when_nothing_is_claimable(self, store):
        store.create_run(RUN, config={}, members=members(2, status="finished"))
        assert claim(store) is None
        store.create_run(
            "mixed", config={}, members=[*members(1), *members(2, status="failed")[1:]]
        )
        lease = store.claim("mixed", W1, lease_seconds=LEASE)
        assert lease is not None
        assert lease.member == 0
        assert store.claim("mixed", W1, lease_seconds=LEASE) is None

    def test_a_released_member_is_claimable_again(self, store):
        store.create_run(RUN, config={}, members=members(1))
        lease = must_claim(store)
        assert claim(store) is None
        store.commit(lease, release=True)
        again = must_claim(store)
        assert again.member == 0
        assert again.token > lease.token

    def test_commit_and_claim_ends_the_lease_and_claims_the_next(self, store):
        rows = [
            MemberView(id=0, hparams={}, ready_count=0),
            MemberView(id=1, hparams={}, ready_count=0),
            MemberView(id=2, hparams={}, ready_count=1),
        ]
        store.create_run(RUN, config={}, members=rows)
        first = must_claim(store, W1)
        assert first.member == 0
        store.commit(first, member=dataclasses.replace(view(store, 0), ready_count=2))
        second = store.commit_and_claim(first, W1, lease_seconds=LEASE)
        assert second is not None
        assert second.member == 1  # furthest behind, not the member just released
        with pytest.raises(gp.StaleLeaseError):
            store.commit(first, release=True)
        # the released member was not counted a crash, and others may claim it
        assert view(store, 0).crashes == 0
        assert sorted(claim_all(store)) == [0, 2]

    def test_commit_and_claim_may_take_the_member_it_released(self, store):
        store.create_run(RUN, config={}, members=members(1))
        first = must_claim(store)
        again = store.commit_and_claim(first, W1, lease_seconds=LEASE)
        assert again is not None
        assert again.member == 0
        assert again.token > first.token
        assert view(store, 0).crashes == 0
        store.commit(again, reports=[Report(0, 1, {"score": 1.0}, 0.0)])  # the new lease writes
        with pytest.raises(gp.StaleLeaseError):
            store.commit(first, reports=[Report(0, 2, {"score": 1.0}, 0.0)])

    def test_commit_and_claim_releases_even_when_nothing_is_claimable(self, store):
        store.create_run(RUN, config={}, members=members(2))
        mine, theirs = must_claim(store, W1), must_claim(store, W2)
        store.commit(mine, member=dataclasses.replace(view(store, mine.member), status="finished"))
        assert store.commit_and_claim(mine, W1, lease_seconds=LEASE) is None
        store.commit(theirs, release=True)
        assert claim(store, W2) is not None  # the other member, released by its holder
        # the finished member's lease ended: committing with it is stale now
        with pytest.raises(gp.StaleLeaseError):
            store.commit(mine, release=True)

    def test_commit_and_claim_with_a_lost_lease_only_claims(self, store, clock):
        store.create_run(RUN, config={}, members=members(2))
        old = must_claim(store, W1)
        clock.advance(LEASE + 1)
        taken = must_claim(store, W2)  # W1's member, whose lease ran out
        assert taken.member == old.member
        nxt = store.commit_and_claim(old, W1, lease_seconds=LEASE)
        assert nxt is not None
        assert nxt.member != old.member
        store.commit(taken, reports=[Report(taken.member, 1, {"score": 1.0}, 0.0)])  # still W2's

    def test_commit_and_claim_writes_the_round_then_claims_from_it(self, store):
        store.create_run(RUN, config={}, members=members(2))
        first = must_claim(store, W1)
        assert first.member == 0
        done = dataclasses.replace(view(store, 0), step=4, ready_count=1, checkpoint=ref("c0", 0))
        report = Report(0, 4, {"score": 2.0}, 0.0)
        event = Event("explore", 0, 4, {"k": 1}, 0.0)
        nxt = store.commit_and_claim(
            first, W1, lease_seconds=LEASE, member=done, reports=[report], events=[event]
        )
        # member 0 is a round ahead as written in the same call: member 1 is claimed
        assert nxt is not None
        assert nxt.member == 1
        assert view(store, 0) == done
        history = store.history(RUN)
        assert [r.metrics["score"] for r in history.reports] == [2.0]
        assert [e.kind for e in history.events] == ["explore"]
        assert store.collect(RUN, ["c0"]) == []  # member 0's current checkpoint
        again = must_claim(store, W2)  # member 0 was released
        assert again.member == 0

    def test_commit_and_claim_with_a_lost_lease_and_data_raises_and_writes_nothing(
        self, store, clock
    ):
        store.create_run(RUN, config={}, members=members(2))
        old = must_claim(store, W1)
        clock.advance(LEASE + 1)
        taken = must_claim(store, W2)
        changed = dataclasses.replace(view(store, old.member), step=99)
        with pytest.raises(gp.StaleLeaseError):
            store.commit_and_claim(
                old,
                W1,
                lease_seconds=LEASE,
                member=changed,
                reports=[Report(old.member, 99, {"score": 1.0}, 0.0)],
            )
        assert view(store, old.member).step == 0
        assert store.history(RUN).reports == ()
        other = 1 - old.member
        assert claim(store, W1) is not None  # the other member was not claimed by the failed call
        assert view(store, other).crashes == 0
        store.commit(taken, release=True)

    def test_claim_honours_max_ahead(self, store):
        rows = [
            MemberView(id=0, hparams={}, ready_count=0),
            MemberView(id=1, hparams={}, ready_count=3),
            MemberView(id=2, hparams={}, ready_count=1),
        ]
        store.create_run(RUN, config={}, members=rows)
        # member 1 is 3 rounds ahead of the slowest (member 0, even while it is leased)
        assert claim_all(store, max_ahead=1) == [0, 2]
        assert claim(store, max_ahead=3) is not None

    def test_claim_with_max_ahead_zero_keeps_members_in_step(self, store):
        rows = [
            MemberView(id=0, hparams={}, ready_count=2),
            MemberView(id=1, hparams={}, ready_count=2),
            MemberView(id=2, hparams={}, ready_count=3),
        ]
        store.create_run(RUN, config={}, members=rows)
        assert claim_all(store, max_ahead=0) == [0, 1]

    def test_lease_expiry_makes_member_claimable_again(self, store, clock):
        store.create_run(RUN, config={}, members=members(1))
        first = must_claim(store, W1)
        clock.advance(LEASE - 1)
        assert claim(store, W2) is None
        clock.advance(2)
        second = must_claim(store, W2)
        assert second.member == 0
        assert second.token > first.token
        assert second.worker == W2

    @linux_only
    def test_a_dead_holder_on_this_machine_loses_its_member_at_once(self, store):
        store.create_run(RUN, config={}, members=members(1))
        first = must_claim(store, dead_holder(_leases._this_machine()))
        second = must_claim(store, W2)  # no lease expiry needed
        assert second.member == first.member == 0
        assert view(store, 0).crashes == 1

    @pytest.mark.parametrize(
        "where",
        ["another machine with this host name", "another PID namespace", "an unknown machine"],
    )
    @linux_only
    def test_a_dead_pid_elsewhere_keeps_its_member_until_its_lease_expires(
        self, store, clock, where
    ):
        boot, namespace = _leases._this_machine().split("/", 1)
        machine = {
            "another machine with this host name": f"{OTHER_BOOT}/{namespace}",
            "another PID namespace": f"{boot}/pid:[1]",
            "an unknown machine": "",
        }[where]
        store.create_run(RUN, config={}, members=members(1))
        must_claim(store, dead_holder(machine))
        clock.advance(LEASE - 1)
        assert claim(store, W2) is None  # its holder may be alive: the pid is not ours to read
        clock.advance(2)
        assert must_claim(store, W2).member == 0
        assert view(store, 0).crashes == 1

    @linux_only
    def test_a_holder_that_died_with_its_driver_counts_no_crash(self, store):
        store.create_run(RUN, config={}, members=members(1))
        here = _leases._this_machine()
        must_claim(store, holder_with_driver(holder_alive=False, driver_alive=False, machine=here))
        assert must_claim(store, W2).member == 0  # at once: its holder is dead
        assert view(store, 0).crashes == 0  # the driver was killed, not the member's doing

    @linux_only
    def test_a_holder_that_died_while_its_driver_lives_counts_a_crash(self, store):
        store.create_run(RUN, config={}, members=members(1))
        here = _leases._this_machine()
        must_claim(store, holder_with_driver(holder_alive=False, driver_alive=True, machine=here))
        assert must_claim(store, W2).member == 0
        assert view(store, 0).crashes == 1

    @pytest.mark.parametrize("where", ["a hung holder", "another machine", "an unknown machine"])
    @linux_only
    def test_an_expired_lease_whose_driver_cannot_be_checked_counts_a_crash(
        self, store, clock, where
    ):
        # a holder still running (hung), or one whose pids are not this machine's to read,
        # keeps the rule even though its recorded driver pid is gone here
        namespace = _leases._this_machine().split("/", 1)[1]
        machine = {
            "a hung holder": _leases._this_machine(),
            "another machine": f"{OTHER_BOOT}/{namespace}",
            "an unknown machine": "",
        }[where]
        alive = where == "a hung holder"
        store.create_run(RUN, config={}, members=members(1))
        must_claim(
            store, holder_with_driver(holder_alive=alive, driver_alive=False, machine=machine)
        )
        assert claim(store, W2) is None
        clock.advance(LEASE + 1)
        assert must_claim(store, W2).member == 0
        assert view(store, 0).crashes == 1

    def test_revive_makes_failed_members_active_again_from_their_checkpoint(self, store):
        store.create_run(RUN, config={}, members=members(3))
        fail(
            store, 0, crashes=3, failures=1, stop_reason="crashed", checkpoint=ref("c0", 0), step=4
        )
        fail(store, 1, failures=3, stop_reason="failures", checkpoint=ref("c1", 1), step=4)
        before = len(store.events(RUN))
        assert store.revive(RUN) == [0, 1]
        for i in (0, 1):
            v = view(store, i)
            assert (v.status, v.crashes, v.failures, v.stop_reason) == ("active", 0, 0, None)
            assert v.checkpoint == ref(f"c{i}", i)
            assert v.step == 4
        revives = store.events(RUN)[before:]
        assert [(e.kind, e.member, e.step) for e in revives] == [("revive", 0, 4), ("revive", 1, 4)]
        assert dict(revives[0].data) == {"reason": "crashed", "crashes": 3, "failures": 1}
        assert dict(revives[1].data) == {"reason": "failures", "crashes": 0, "failures": 3}
        # they are claimed again like any active member, with no crash counted
        assert sorted(claim_all(store)) == [0, 1, 2]
        assert view(store, 0).crashes == 0
        assert store.revive(RUN) == []  # nothing failed is left
        assert len(store.events(RUN)) == before + 2

    def test_revive_takes_only_the_members_named_and_failed(self, store):
        store.create_run(RUN, config={}, members=members(3))
        fail(store, 0, stop_reason="crashed")
        fail(store, 1, stop_reason="crashed")
        assert store.revive(RUN, [1, 2]) == [1]  # 2 is active: left as it is
        assert [m.status for m in store.population(RUN)] == ["failed", "active", "active"]
        with pytest.raises(gp.StorageError, match="members"):
            store.revive(RUN, [3])
        assert view(store, 0).status == "failed"
        with pytest.raises(KeyError):
            store.revive("no such run")

    def test_renew_extends_the_lease(self, store, clock):
        store.create_run(RUN, config={}, members=members(1))
        lease = must_claim(store)
        clock.advance(LEASE - 2)
        renewed = store.renew(lease, lease_seconds=LEASE)
        assert renewed.token == lease.token
        assert renewed.expires > lease.expires
        clock.advance(LEASE - 2)  # past the first expiry, before the renewed one
        assert claim(store, W2) is None
        store.commit(renewed, reports=[Report(0, 1, {"score": 1.0}, 0.0)])

    # -- fencing -----------------------------------------------------------------------------

    def test_stale_lease_cannot_commit_or_renew(self, store, clock):
        store.create_run(RUN, config={}, members=members(1))
        old = must_claim(store, W1)
        clock.advance(LEASE + 1)
        new = must_claim(store, W2)
        before = store.population(RUN)
        stale_row = dataclasses.replace(view(store, 0), step=99)
        with pytest.raises(gp.StaleLeaseError):
            store.commit(
                old,
                member=stale_row,
                reports=[Report(0, 99, {"score": 1.0}, 0.0)],
                events=[Event("explore", 0, 99, {}, 0.0)],
            )
        with pytest.raises(gp.StaleLeaseError):
            store.commit(old, release=True)
        with pytest.raises(gp.StaleLeaseError):
            store.renew(old, lease_seconds=LEASE)
        # the stale writes changed nothing, and did not end the new holder's lease
        assert store.population(RUN) == before
        assert store.history(RUN).reports == ()
        assert store.history(RUN).events == ()
        assert claim(store, W1) is None
        pop = store.commit(new, member=dataclasses.replace(view(store, 0), step=3), release=True)
        assert pop[0].step == 3

    def test_commit_after_release_is_stale(self, store):
        store.create_run(RUN, config={}, members=members(1))
        lease = must_claim(store)
        store.commit(lease, release=True)
        with pytest.raises(gp.StaleLeaseError):
            store.commit(lease, member=dataclasses.replace(view(store, 0), step=1))

    def test_committing_to_a_finished_member_raises(self, store):
        store.create_run(RUN, config={}, members=members(2))
        lease = must_claim(store)
        finished = dataclasses.replace(
            view(store, lease.member), status="finished", stop_reason="x"
        )
        store.commit(lease, member=finished)
        with pytest.raises(gp.StorageError):
            store.commit(lease, member=dataclasses.replace(finished, step=5, status="active"))
        assert view(store, lease.member).status == "finished"
        assert view(store, lease.member).step == 0
        store.commit(lease, release=True)
        # a finished member is never claimed again
        assert claim_all(store) == [1 - lease.member]

    def test_a_lease_writes_only_its_own_member(self, store):
        store.create_run(RUN, config={}, members=members(2))
        lease = must_claim(store)
        other = 1 - lease.member
        with pytest.raises(gp.StorageError):
            store.commit(lease, member=dataclasses.replace(view(store, other), step=9))
        assert view(store, other).step == 0

    def test_committing_to_a_failed_member_raises(self, store):
        store.create_run(RUN, config={}, members=members(1))
        lease = must_claim(store)
        store.commit(lease, member=dataclasses.replace(view(store, 0), status="failed"))
        with pytest.raises(gp.StorageError):
            store.commit(lease, member=dataclasses.replace(view(store, 0), step=1))

    # -- history -----------------------------------------------------------------------------

    def test_reports_and_events_appear_in_history_in_order(self, store):
        store.create_run(RUN, config={}, members=members(2))
        a = must_claim(store)
        b = must_claim(store)
        r = [Report(m, s, {"score": float(10 * m + s), "extra": "x"}, float(s)) for m, s in
             [(a.member, 1), (a.member, 2), (b.member, 1), (a.member, 3)]]  # fmt: skip
        e = [
            Event("start", a.member, 0, {}, 0.0),
            Event("exploit", b.member, 1, {"donor": a.member, "new_hparams": {"lr": 0.5}}, 1.0),
            Event("stop", a.member, 3, {"reason": "budget"}, 2.0),
        ]
        store.commit(a, reports=r[:2], events=e[:1])
        store.commit(b, reports=r[2:3], events=e[1:2])
        store.commit(a, reports=r[3:], events=e[2:])
        history = store.history(RUN)
        assert history.reports == tuple(r)
        assert history.events == tuple(e)
        assert history.events[1].data["new_hparams"] == {"lr": 0.5}

    def test_history_of_a_new_run_is_empty(self, store):
        store.create_run(RUN, config={}, members=members(2))
        history = store.history(RUN)
        assert history.reports == ()
        assert history.events == ()

    def test_events_are_the_historys_events_in_order(self, store):
        store.create_run(RUN, config={}, members=members(2))
        assert store.events(RUN) == ()
        a = must_claim(store)
        b = must_claim(store)
        e = [
            Event("exploit", b.member, 1, {"donor": a.member, "new_hparams": {"lr": 0.5}}, 1.0),
            Event("stop", a.member, 3, {"reason": "budget"}, 2.0),
        ]
        store.commit(b, reports=[Report(b.member, 1, {"score": 1.0}, 1.0)], events=e[:1])
        store.commit(a, reports=[Report(a.member, 3, {"score": 2.0}, 2.0)], events=e[1:])
        assert store.events(RUN) == tuple(e) == store.history(RUN).events
        with pytest.raises(KeyError):
            store.events("missing")

    def test_history_after_reads_on_from_the_positions_it_handed_out(self, store):
        store.create_run(RUN, config={}, members=members(2))
        a = must_claim(store)
        b = must_claim(store)
        r = [
            Report(m, s, {"score": float(s)}, float(s))
            for s in (1, 2)
            for m in (a.member, b.member)
        ]
        e = [Event("explore", b.member, 1, {"new_hparams": {"lr": 0.5}}, 1.0)]
        store.commit(a, reports=r[:1])
        store.commit(b, reports=r[1:2], events=e)
        first = store.history_after(RUN)
        assert (first.reports, first.events) == (tuple(r[:2]), tuple(e))
        assert first.population == store.population(RUN)
        done = dataclasses.replace(view(store, a.member), status="finished")
        store.commit(a, member=done, reports=r[2:3], release=True)
        store.commit(b, reports=r[3:])
        after = {"reports_after": first.reports_end, "events_after": first.events_end}
        second = store.history_after(RUN, **after)
        assert (second.reports, second.events) == (tuple(r[2:]), ())
        assert second.events_end == first.events_end
        assert second.population[a.member].status == "finished"  # read with its rows
        ends = {"reports_after": second.reports_end, "events_after": second.events_end}
        nothing = store.history_after(RUN, **ends)
        assert (nothing.reports, nothing.events) == ((), ())
        assert (nothing.reports_end, nothing.events_end) == (second.reports_end, second.events_end)
        assert store.history(RUN) == History(tuple(r), tuple(e))
        with pytest.raises(KeyError):
            store.history_after("missing")

    def test_reading_on_while_members_write_reads_each_row_once(self, store):
        """Where the store says its history is read in order, a reader that follows the
        positions it is handed, while several members write at once, reads every row once
        and each member's rows in order."""
        if not store.history_in_order:
            pytest.skip("positions may be seen out of order: a reader reads it all")
        store.create_run(RUN, config={}, members=members(4))
        leases = [must_claim(store) for _ in range(4)]

        def write(lease: Lease) -> None:
            for step in range(1, 41):
                report = Report(lease.member, step, {"score": float(step)}, float(step))
                event = Event("explore", lease.member, step, {"new_hparams": {}}, float(step))
                store.commit(lease, reports=[report], events=[event] if step % 10 == 0 else [])

        threads = [threading.Thread(target=write, args=(lease,)) for lease in leases]
        for t in threads:
            t.start()
        reports: list[Report] = []
        events: list[Event] = []
        ends = {"reports_after": -1, "events_after": -1}
        writing = True
        while writing:
            writing = any(t.is_alive() for t in threads)  # then one read after the last write
            found = store.history_after(RUN, **ends)
            reports += found.reports
            events += found.events
            ends = {"reports_after": found.reports_end, "events_after": found.events_end}
        for t in threads:
            t.join()
        assert len(reports) == 160
        assert len(events) == 16
        assert store.history(RUN) == History(tuple(reports), tuple(events))

    def test_current_checkpoint_is_never_collected(self, store):
        store.create_run(RUN, config={}, members=members(2))
        a = must_claim(store)
        own_checkpoint(store, a, "a1", 4)
        assert store.collect(RUN, ["a1"]) == []
        own_checkpoint(store, a, "a2", 8)
        assert store.collect(RUN, ["a1", "a2", "unknown"]) == ["a1", "unknown"]
        assert view(store, a.member).checkpoint == ref("a2", a.member, 8)

    def test_a_recipient_holding_the_donor_checkpoint_keeps_it(self, store):
        store.create_run(RUN, config={}, members=members(2))
        donor = must_claim(store)
        recipient = must_claim(store)
        own_checkpoint(store, donor, "d1", 4)
        copied = dataclasses.replace(
            view(store, recipient.member), step=4, checkpoint=ref("d1", donor.member, 4)
        )
        store.commit(recipient, member=copied, pin="d1")
        own_checkpoint(store, donor, "d2", 8)
        assert store.collect(RUN, ["d1"]) == []  # the recipient's current one
        # a recipient's copied checkpoint is not its own: the pin stays until it writes its own
        own_checkpoint(store, recipient, "r1", 8)
        assert store.collect(RUN, ["d1"]) == ["d1"]

    def test_pinned_checkpoint_is_never_collected_until_the_pinner_checkpoints(self, store):
        store.create_run(RUN, config={}, members=members(3))
        donor, p1, p2 = must_claim(store), must_claim(store), must_claim(store)
        own_checkpoint(store, donor, "d1", 4)
        store.commit(p1, pin="d1")
        store.commit(p2, pin="d1")
        own_checkpoint(store, donor, "d2", 8)  # d1 is no one's current checkpoint any more
        assert store.collect(RUN, ["d1"]) == []
        # a commit that does not change the member's own checkpoint keeps its pins
        store.commit(p1, member=dataclasses.replace(view(store, p1.member), ready_count=1))
        assert store.collect(RUN, ["d1"]) == []
        own_checkpoint(store, p1, "p1-1", 4)  # releases p1's pin, not p2's
        assert store.collect(RUN, ["d1"]) == []
        own_checkpoint(store, p2, "p2-1", 4)
        assert store.collect(RUN, ["d1"]) == ["d1"]
        assert store.collect(RUN, ["d2", "p1-1", "p2-1"]) == []

    def test_a_pin_survives_lease_release_and_reclaim(self, store):
        store.create_run(RUN, config={}, members=members(2))
        donor, pinner = must_claim(store), must_claim(store)
        own_checkpoint(store, donor, "d1", 4)
        store.commit(pinner, pin="d1", release=True)
        own_checkpoint(store, donor, "d2", 8)
        store.commit(donor, release=True)
        assert store.collect(RUN, ["d1"]) == []

    def test_pinning_a_collected_checkpoint_raises_and_writes_nothing(self, store):
        recipient, copied = collected_donor_checkpoint(store, 2)
        before = store.population(RUN)
        with pytest.raises(gp.StorageError):
            store.commit(
                recipient,
                member=copied,
                events=[Event("exploit", recipient.member, 4, {"checkpoint": "d1"}, 0.0)],
                pin="d1",
                release=True,
            )
        assert store.population(RUN) == before
        assert store.history(RUN).events == ()
        # the lease was not released: the worker can still decide again and write
        store.commit(recipient, release=True)

    def test_commit_and_claim_pins_with_the_round(self, store):
        store.create_run(RUN, config={}, members=members(2))
        donor = must_claim(store)
        own_checkpoint(store, donor, "d1", 4)
        store.commit(donor, release=True)
        recipient = must_claim(store, W2)
        assert recipient.member != donor.member
        copied = dataclasses.replace(
            view(store, recipient.member), step=4, generation=1, checkpoint=ref("d1", donor.member)
        )
        event = Event("exploit", recipient.member, 4, {"checkpoint": "d1"}, 0.0)
        store.commit_and_claim(
            recipient, W2, lease_seconds=LEASE, member=copied, events=[event], pin="d1"
        )
        assert view(store, recipient.member) == copied
        assert [e.kind for e in store.history(RUN).events] == ["exploit"]
        # the donor moves on: its old checkpoint is the recipient's, pinned, and stays
        again = must_claim(store)
        own_checkpoint(store, again, "d2", 8)
        assert store.collect(RUN, ["d1"]) == []

    def test_commit_and_claim_with_a_collected_pin_raises_and_writes_nothing(self, store):
        recipient, copied = collected_donor_checkpoint(store, 3)
        before = store.population(RUN)
        with pytest.raises(gp.StorageError):
            store.commit_and_claim(
                recipient,
                W1,
                lease_seconds=LEASE,
                member=copied,
                reports=[Report(recipient.member, 4, {"score": 1.0}, 0.0)],
                events=[Event("exploit", recipient.member, 4, {"checkpoint": "d1"}, 0.0)],
                pin="d1",
            )
        assert store.population(RUN) == before  # nothing written, nothing claimed
        assert store.history(RUN) == gp.store.History((), ())
        store.commit(recipient, release=True)  # the lease is still the worker's

    def test_a_collected_checkpoint_is_collected_once(self, store):
        store.create_run(RUN, config={}, members=members(1))
        a = must_claim(store)
        own_checkpoint(store, a, "a1", 4)
        own_checkpoint(store, a, "a2", 8)
        assert store.collect(RUN, ["a1"]) == ["a1"]
        assert store.collect(RUN, ["a1"]) in ([], ["a1"])  # idempotent: never an error

    def test_a_kept_previous_checkpoint_is_never_collected(self, store):
        store.create_run(RUN, config={}, members=members(2))
        a = must_claim(store)
        keep_previous(store, a, "a1", 4, keep=1)
        keep_previous(store, a, "a2", 8, keep=1)
        assert view(store, a.member).previous == (ref("a1", a.member, 4),)  # read back as written
        assert store.collect(RUN, ["a1", "a2"]) == []  # its previous one, its current one
        keep_previous(store, a, "a3", 12, keep=1)  # a1 drops out of previous
        assert store.collect(RUN, ["a1", "a2", "a3"]) == ["a1"]

    def test_a_member_keeps_as_many_previous_checkpoints_as_its_view_names(self, store):
        store.create_run(RUN, config={}, members=members(1))
        a = must_claim(store)
        for step in range(1, 5):
            keep_previous(store, a, f"a{step}", step, keep=2)
        assert [p.id for p in view(store, a.member).previous] == ["a3", "a2"]
        assert store.collect(RUN, ["a1", "a2", "a3", "a4"]) == ["a1"]
        # keep=0: nothing beyond the current one, as before retention
        keep_previous(store, a, "a5", 5, keep=0)
        assert view(store, a.member).previous == ()
        assert store.collect(RUN, ["a2", "a3", "a4", "a5"]) == ["a2", "a3", "a4"]

    def test_another_members_previous_checkpoint_is_kept_too(self, store):
        store.create_run(RUN, config={}, members=members(2))
        a, b = must_claim(store), must_claim(store)
        keep_previous(store, a, "a1", 4, keep=1)
        # b copied a1, then checkpointed its own: a1 is b's previous one, and a's
        store.commit(
            b, member=dataclasses.replace(view(store, b.member), checkpoint=ref("a1", 0, 4))
        )
        keep_previous(store, b, "b1", 8, keep=1)
        keep_previous(store, a, "a2", 8, keep=0)
        assert store.collect(RUN, ["a1"]) == []  # b keeps it
        keep_previous(store, b, "b2", 12, keep=1)
        assert store.collect(RUN, ["a1"]) == ["a1"]

    # -- the synchronous barrier -------------------------------------------------------------

    def test_pending_member_waits_for_members_behind(self, store):
        rows = [
            MemberView(id=0, hparams={}, ready_count=1, step=4, pending=True),
            MemberView(id=1, hparams={}, ready_count=0, step=0),
            MemberView(id=2, hparams={}, ready_count=1, step=4, pending=True),
        ]
        store.create_run(RUN, config={}, members=rows)
        behind = must_claim(store)
        assert behind.member == 1
        assert claim(store) is None  # members 0 and 2 wait for member 1's round
        row = dataclasses.replace(view(store, 1), ready_count=1, step=4, pending=True)
        store.commit(behind, member=row, release=True)
        assert claim_all(store) == [0, 1, 2]

    def test_a_non_pending_member_ahead_does_not_wait(self, store):
        rows = [
            MemberView(id=0, hparams={}, ready_count=1, step=4),
            MemberView(id=1, hparams={}, ready_count=0, step=0),
        ]
        store.create_run(RUN, config={}, members=rows)
        assert claim_all(store) == [1, 0]

    @pytest.mark.parametrize("status", ["finished", "failed"])
    def test_finished_or_failed_member_does_not_hold_the_barrier(self, store, status):
        rows = [
            MemberView(id=0, hparams={}, ready_count=2, step=8, pending=True),
            MemberView(id=1, hparams={}, ready_count=0, step=0, status=status),
            MemberView(id=2, hparams={}, ready_count=2, step=8, pending=True),
        ]
        store.create_run(RUN, config={}, members=rows)
        assert claim_all(store) == [0, 2]

    def test_barrier_is_released_when_the_last_member_behind_finishes(self, store):
        rows = [
            MemberView(id=0, hparams={}, ready_count=2, step=8, pending=True),
            MemberView(id=1, hparams={}, ready_count=1, step=4),
        ]
        store.create_run(RUN, config={}, members=rows)
        lease = must_claim(store)
        assert lease.member == 1
        assert claim(store) is None
        done = dataclasses.replace(view(store, 1), status="finished", stop_reason="budget")
        store.commit(lease, member=done, release=True)
        assert claim_all(store) == [0]

    # -- concurrency -------------------------------------------------------------------------

    def test_concurrent_workers_never_share_a_member(self, store):
        population, threads, seconds = 6, 8, 0.4
        store.create_run(RUN, config={}, members=members(population))
        held: dict[int, str] = {}
        guard = threading.Lock()
        errors: list[str] = []
        commits = [0] * population
        start = threading.Barrier(threads)

        def work(index: int) -> None:
            rng = np.random.default_rng(index)
            worker = WorkerInfo(name=f"t{index}")
            start.wait()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not errors:
                lease = store.claim(RUN, worker, lease_seconds=3600.0, max_ahead=1)
                if lease is None:
                    continue
                with guard:
                    if lease.member in held:
                        errors.append(
                            f"member {lease.member} held by {held[lease.member]} and {index}"
                        )
                        return
                    held[lease.member] = worker.name
                try:
                    if rng.random() < 0.3:
                        lease = store.renew(lease, lease_seconds=3600.0)
                    row = store.population(RUN)[lease.member]
                    new = dataclasses.replace(
                        row, step=row.step + 1, ready_count=row.ready_count + 1
                    )
                    report = Report(lease.member, new.step, {"score": float(index)}, 0.0)
                    store.commit(lease, member=new, reports=[report])
                    with guard:
                        commits[lease.member] += 1
                        del held[lease.member]
                    store.commit(lease, release=True)
                except Exception as err:  # pragma: no cover - reported below
                    errors.append(f"thread {index}: {type(err).__name__}: {err}")
                    return

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in pool)
        assert errors == []
        assert sum(commits) > population
        pop = store.population(RUN)
        # every commit built on the one before it: nobody wrote over another's row
        assert [m.step for m in pop] == commits
        assert [m.ready_count for m in pop] == commits
        assert len(store.history(RUN).reports) == sum(commits)
        # max_ahead=1 kept the population together: one round ahead, plus the one in flight
        assert max(commits) - min(commits) <= 2
