"""A live table of the population on a terminal (rich), and the one ``genepool status`` prints.

Run data (run and metric names, hyperparameter names and values) is shown as text: never
read as rich markup (a value ``"[/]"`` or ``"[link=...]"`` shows as written), and with its
control characters escaped (no escape sequence of a value reaches the terminal).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from genepool.member import Population
from genepool.store import Store

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["live_progress", "population_table", "terminal_text"]

# C0 and C1 control characters, and DEL: a terminal acts on them (escape sequences)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_text(value: object) -> str:
    """``str(value)`` safe to print on a terminal: its control characters (but tab and
    newline) written as ``\\x1b`` escapes, so that run data never moves the cursor, sets
    colours or writes a hyperlink."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _text(value: object) -> Text:
    """A table cell showing ``value`` as written (never as rich markup)."""
    from rich.text import Text

    return Text(terminal_text(_fmt(value)))


def population_table(population: Population, *, title: str = "", metric: str = "score") -> Any:
    """A rich Table: id, status, step, score, hyperparameters, parent, generation."""
    from rich.table import Table

    table = Table(title=_text(title) if title else None)
    for column in ("member", "status", "step", metric, "hyperparameters", "parent", "gen"):
        table.add_column(_text(column), justify="left" if column == "hyperparameters" else "right")
    best = population.best()
    for m in population:
        hp = ", ".join(f"{k}={_fmt(v)}" for k, v in m.hparams.items())
        style = "bold green" if best is not None and m.id == best.id else None
        table.add_row(
            _text(m.id),
            _text(m.status + (" (pending)" if m.pending else "")),
            _text(m.step),
            _text("-" if m.score is None else m.score),
            _text(hp),
            _text("-" if m.parent is None else m.parent),
            _text(m.generation),
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
