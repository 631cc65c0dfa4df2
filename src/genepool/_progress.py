"""A live table of the population on a terminal (rich), and the one ``genepool status`` prints."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from genepool.member import Population
from genepool.store import Store

__all__ = ["live_progress", "population_table"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def population_table(population: Population, *, title: str = "", metric: str = "score") -> Any:
    """A rich Table: id, status, step, score, hyperparameters, parent, generation."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("member", "status", "step", metric, "hyperparameters", "parent", "gen"):
        table.add_column(column, justify="right" if column != "hyperparameters" else "left")
    best = population.best()
    for m in population:
        hp = ", ".join(f"{k}={_fmt(v)}" for k, v in m.hparams.items())
        style = "bold green" if best is not None and m.id == best.id else None
        table.add_row(
            str(m.id),
            m.status + (" (pending)" if m.pending else ""),
            str(m.step),
            "-" if m.score is None else _fmt(m.score),
            hp,
            "-" if m.parent is None else str(m.parent),
            str(m.generation),
            style=style,
        )
    return table


@contextlib.contextmanager
def live_progress(store: Store, run: str, *, metric: str, every: float = 1.0) -> Iterator[None]:
    """Show the population live while the block runs (reads the store; never writes)."""
    from rich.live import Live

    stop = threading.Event()
    with Live(
        population_table(store.population(run), title=run, metric=metric),
        refresh_per_second=4,
        transient=False,
    ) as live:

        def refresh() -> None:
            while not stop.wait(every):
                with contextlib.suppress(Exception):  # a busy store: try again next time
                    live.update(population_table(store.population(run), title=run, metric=metric))

        thread = threading.Thread(target=refresh, name="genepool-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            live.update(population_table(store.population(run), title=run, metric=metric))
