"""Whether a population fits in this machine's memory, checked before a run starts.

A run keeps every member's view in memory (its hyperparameters, its window of recent
scores, its curve, its checkpoints' references), in the driver and in each worker; an
in-memory store keeps every report too. :func:`check_capacity` estimates that from the
run's arguments and refuses, up front, a population whose estimate exceeds the memory the
machine has available, rather than let the run fail (or the machine swap) hours in.

The figures are measured on the paper's toy (``benchmarks/scale.py``), with a margin; the
trainable's own state (its model, its checkpoints' bytes) is not counted: it is the
trainable's, and genepool cannot know it in advance.
"""

from __future__ import annotations

import os

from genepool._errors import invalid

__all__ = [
    "BYTES_PER_HPARAM",
    "BYTES_PER_MEMBER",
    "BYTES_PER_REPORT",
    "BYTES_PER_SCORE",
    "available_memory",
    "check_capacity",
    "estimate",
    "size_text",
]

#: A member's view, its rows in the store's caches and its share of the snapshots and
#: indexes, without its recent scores (measured: about 11 KB on the toy).
BYTES_PER_MEMBER = 16_384
#: One score of a member's window of recent scores (a float and its slot in a tuple).
BYTES_PER_SCORE = 32
#: One hyperparameter, held by the view and by each checkpoint reference it keeps.
BYTES_PER_HPARAM = 200
#: One report an in-memory store keeps (measured: about 430 bytes with three metrics).
BYTES_PER_REPORT = 512


def estimate(
    population: int,
    *,
    hparams: int,
    recent_window: int,
    keep: int,
    reports_per_member: int,
) -> int:
    """The bytes a run of ``population`` members needs, genepool's own share.

    Args:
        population: How many members.
        hparams: How many hyperparameters each has.
        recent_window: The scores each view keeps (``gp.run(recent_window=)``).
        keep: The previous checkpoints each view keeps (``gp.run(keep=)``).
        reports_per_member: The reports kept per member: its budget in steps for an
            in-memory store, ``0`` for a store that writes them elsewhere.
    """
    references = 2 + keep  # the view's own hyperparameters, its checkpoint's, its previous
    per_member = (
        BYTES_PER_MEMBER
        + recent_window * BYTES_PER_SCORE
        + references * hparams * BYTES_PER_HPARAM
        + reports_per_member * BYTES_PER_REPORT
    )
    return population * per_member


def available_memory() -> int | None:
    """The bytes of memory the machine has available now (Linux, and other systems with
    ``sysconf``'s ``SC_AVPHYS_PAGES``); ``None`` where it cannot be read."""
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    if pages <= 0 or page_size <= 0:
        return None
    return pages * page_size


def check_capacity(
    population: int,
    *,
    hparams: int,
    recent_window: int,
    keep: int,
    reports_per_member: int,
    available: int | None = None,
) -> None:
    """Refuse a population whose :func:`estimate` exceeds the memory available.

    Args:
        population, hparams, recent_window, keep, reports_per_member: As for
            :func:`estimate`.
        available: The bytes available; default: :func:`available_memory` (the check
            is skipped where that is unknown).

    Raises:
        InvalidArgumentError: Naming ``population``, the estimate, the memory available
            and the fix.
    """
    if available is None:
        available = available_memory()
    if available is None:
        return
    needed = estimate(
        population,
        hparams=hparams,
        recent_window=recent_window,
        keep=keep,
        reports_per_member=reports_per_member,
    )
    if needed <= available:
        return
    per_member = needed // max(population, 1)
    fits = available // max(per_member, 1)
    fix = f"Fix: a population of at most {fits:,}"
    if reports_per_member:
        fix += ", or storage='sqlite:///pbt.db' (its reports go to the file, not to memory)"
    raise invalid(
        "run",
        "population",
        "small enough to fit in the memory available",
        f"population={population:,}, which needs about {size_text(needed)} "
        f"({size_text(per_member)} per member) while {size_text(available)} is available",
        f"{fix}; or run on a machine with more memory.",
    )


def size_text(count: int) -> str:
    """Bytes as a short figure: ``"1.5 GiB"``."""
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
