"""Part (c) of the overhead benchmark: how many reports per second reach the store.

Two writer processes, each holding the lease of one member of the same run, commit reports
as fast as they can through :meth:`genepool.store.Store.commit`: one report per commit
(unbatched), or ``batch`` reports per commit (batched). The rate is all reports over the
span from the first writer's start to the last one's end (both start together, after
opening the store and claiming their member, which are not timed).

The writers are started with ``multiprocessing``'s spawn method: this module is imported by
name in them, so ``benchmarks/`` must be on ``sys.path`` (a spawned child gets its parent's).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any
from urllib.parse import quote

from genepool.member import MemberView, Report
from genepool.store import Lease, Store, WorkerInfo
from genepool.store.sql import SQLStore

__all__ = ["POSTGRES_URL", "Rate", "measure", "postgres_schema", "sqlite_url"]

#: The PostgreSQL server (a fresh schema is made for the benchmark and dropped after it).
POSTGRES_URL = os.environ.get(
    "GENEPOOL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
WRITERS = 2
_START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Rate:
    """One measurement: ``reports`` reports from ``WRITERS`` processes in ``seconds``."""

    backend: str
    batch: int
    reports: int
    commits: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.reports / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "batch": self.batch,
            "writers": WRITERS,
            "reports": self.reports,
            "commits": self.commits,
            "seconds": round(self.seconds, 4),
            "reports_per_s": round(self.per_second, 1),
            "us_per_commit": round(self.seconds * 1e6 / self.commits * WRITERS, 1),
        }


def _writer(url: str, run: str, count: int, batch: int, barrier: Barrier, out: Any) -> None:
    """One writer process: claim a member, wait for the others, then commit ``count``
    reports ``batch`` at a time; put ``(start, end)`` (``time.time()``) on ``out``."""
    store = SQLStore(url)
    try:
        worker = WorkerInfo(name=f"bench-writer-{os.getpid()}", started=time.time())
        lease = store.claim(run, worker, lease_seconds=3600.0)
        if lease is None:
            raise RuntimeError("the writer found no member to claim")
        barrier.wait(_START_TIMEOUT)
        start = time.time()
        _write(store, lease, count, batch)
        end = time.time()
        out.put((start, end))
    finally:
        store.close()


def _write(store: Store, lease: Lease, count: int, batch: int) -> None:
    member = lease.member
    step = 0
    x = 0.0
    while step < count:
        reports = []
        for _ in range(min(batch, count - step)):
            step += 1
            x += 0.01 * (1.0 - x)
            reports.append(Report(member, step, {"score": x, "loss": 1.0 - x}, time.time()))
        store.commit(lease, reports=reports)


def _new_run(url: str, run: str) -> None:
    store = SQLStore(url)
    try:
        members = [MemberView(id=i, hparams={"lr": 0.01 * (i + 1)}) for i in range(WRITERS)]
        config = {"metric": "score", "mode": "max", "benchmark": "report_rate"}
        if not store.create_run(run, config=config, members=members):
            raise RuntimeError(f"run {run!r} exists already")
    finally:
        store.close()


def measure(url: str, backend: str, count: int, batch: int) -> Rate:
    """Reports per second from ``WRITERS`` processes committing ``count`` reports each."""
    run = f"rate-{uuid.uuid4().hex[:12]}"
    _new_run(url, run)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(url, run, count, batch, barrier, out))
        for _ in range(WRITERS)
    ]
    for p in procs:
        p.start()
    try:
        spans = [out.get(timeout=_START_TIMEOUT + 600.0) for _ in procs]
    finally:
        for p in procs:
            p.join(30.0)
            if p.is_alive():
                p.terminate()
                p.join()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a writer failed: exit codes {[p.exitcode for p in procs]}")
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    commits = WRITERS * -(-count // batch)
    return Rate(backend, batch, WRITERS * count, commits, seconds)


@contextlib.contextmanager
def sqlite_url() -> Iterator[str]:
    """A new SQLite file in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="genepool-bench-") as folder:
        yield f"sqlite:///{folder}/reports.db"


@contextlib.contextmanager
def postgres_schema(base: str = POSTGRES_URL) -> Iterator[str]:
    """A URL naming a fresh schema on the PostgreSQL server, dropped afterwards.

    Raises:
        ConnectionError: psycopg is missing or the server does not answer.
    """
    try:
        import psycopg
    except ImportError as err:
        raise ConnectionError("psycopg is not installed") from err
    dsn = base.replace("postgresql+psycopg://", "postgresql://")
    schema = f"gp_bench_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as err:
        raise ConnectionError(f"no PostgreSQL server at {base} ({err})") from err
    try:
        options = quote(f"-csearch_path={schema}", safe="")
        yield f"{base}{'&' if '?' in base else '?'}options={options}"
    finally:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
