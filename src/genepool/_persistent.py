"""Sequences that a new version shares with the old: the population's snapshots.

A snapshot of the population is immutable, and the store makes a new one at every write
(:meth:`genepool.member.Population.with_members`): its members, and what is derived from
them in sorted order (the ranking, the claim queue), each a new sequence per write that
leaves the old one as it was. Copying a plain tuple of every member at each write costs a
pass over the whole population each time, which grows with it. Both sequences here are
kept in blocks instead, and a new version copies the blocks it changes and the tuple of
blocks, sharing every other block with the old version: a write costs about the square
root of the population's size, not its size.

:class:`Blocks` is a tuple in blocks of :data:`BLOCK` items: ``blocks[i]`` is item ``i``,
and :meth:`Blocks.replaced` puts other items at some positions.

:class:`SortedBlocks` keeps its items in blocks of a few hundred at most, each sorted,
one after another. A new version with one item added or removed copies the one block it
changes and the list of blocks, and shares every other block with the old version: a
write costs about the square root of the population's size, not its size.
(sortedcontainers' ``SortedList`` uses the same layout, mutable; these never change
once made.)

Example:
    >>> s = SortedBlocks.of([3, 1, 2])
    >>> t = s.add(5).remove(1)
    >>> list(s), list(t), t.bisect_left(3), t[-1]
    ([1, 2, 3], [2, 3, 5], 1, 5)
    >>> b = Blocks("abc").replaced({1: "x"})
    >>> b, b[1], len(b), b == ("a", "x", "c")
    (Blocks(['a', 'x', 'c']), 'x', 3, True)
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Generic, TypeVar, cast, overload

__all__ = ["Blocks", "SortedBlocks"]

T = TypeVar("T")

_last = itemgetter(-1)  # a block's last item

#: How many items a block of :class:`Blocks` holds (its last block fewer).
BLOCK = 64
#: A block of :class:`SortedBlocks` is split in two once it holds this many items.
MAX_BLOCK = 512


class Blocks(Sequence[T]):
    """An immutable sequence, as a tuple is; :meth:`replaced` returns a new one.

    Equal to any sequence with the same items in the same order (a tuple included).
    """

    __slots__ = ("_blocks", "_len")

    def __init__(self, items: Iterable[T] = ()) -> None:
        flat = tuple(items)
        self._blocks = tuple(flat[i : i + BLOCK] for i in range(0, len(flat), BLOCK))
        self._len = len(flat)

    def replaced(self, changes: Mapping[int, T]) -> Blocks[T]:
        """A new sequence with ``changes[i]`` at each position ``i`` (this one unchanged);
        :class:`IndexError` for a position outside it."""
        blocks = list(self._blocks)
        touched: dict[int, list[Any]] = {}
        for position, item in changes.items():
            if not 0 <= position < self._len:
                raise IndexError(f"position {position} of a sequence of {self._len}")
            at, offset = divmod(position, BLOCK)
            if at not in touched:
                touched[at] = list(blocks[at])
            touched[at][offset] = item
        for at, block in touched.items():
            blocks[at] = tuple(block)
        new: Blocks[T] = Blocks.__new__(Blocks)
        new._blocks, new._len = tuple(blocks), self._len
        return new

    @overload
    def __getitem__(self, position: int) -> T: ...
    @overload
    def __getitem__(self, position: slice) -> tuple[T, ...]: ...
    def __getitem__(self, position: int | slice) -> T | tuple[T, ...]:
        if isinstance(position, int) and 0 <= position < self._len:  # the usual case
            found: T = self._blocks[position // BLOCK][position % BLOCK]
            return found
        if isinstance(position, slice):
            return tuple(self)[position]
        if position < 0:
            position += self._len
        if not 0 <= position < self._len:
            raise IndexError(f"position {position} of a sequence of {self._len}")
        item: T = self._blocks[position // BLOCK][position % BLOCK]
        return item

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[T]:
        return itertools.chain.from_iterable(self._blocks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Blocks({list(self)!r})"


class SortedBlocks(Generic[T]):
    """An immutable sorted list; :meth:`add` and :meth:`remove` return a new one.

    Items must be comparable with each other (tuples of numbers here), and with what
    :meth:`bisect_left` and :meth:`bisect_right` are given. Positions are global (``0``
    the smallest item), as with a plain sorted list.

    A new version copies one block and the tuple of blocks (each block a list that is
    never changed once made: changing one copies it once, where a tuple would be copied
    to a list and back; add and remove at 128 items: 2.6 -> 1.5 us); where each block begins is
    worked out when a position is first asked of a version (most versions are replaced
    before anyone asks), and which block an item belongs in is a binary search over the
    blocks' last items.
    """

    __slots__ = ("_blocks", "_len", "_starts")

    _blocks: tuple[list[Any], ...]  # lists never changed once made: a change copies one
    _starts: tuple[int, ...] | None  # where each block begins, then the length; once asked

    def __init__(self, blocks: Iterable[Sequence[Any]] = ()) -> None:
        self._blocks = tuple(list(b) for b in blocks if b)
        self._len = sum(map(len, self._blocks))
        self._starts = None

    @classmethod
    def of(cls, items: Iterable[T]) -> SortedBlocks[T]:
        """The items, sorted."""
        ordered: list[Any] = sorted(cast(Iterable[Any], items))
        half = MAX_BLOCK // 2
        new: SortedBlocks[T] = SortedBlocks.__new__(SortedBlocks)
        new._blocks = tuple(ordered[i : i + half] for i in range(0, len(ordered), half))
        new._len, new._starts = len(ordered), None
        return new

    def add(self, item: T) -> SortedBlocks[T]:
        """A new list with ``item`` in its place (this one unchanged)."""
        if not self._blocks:
            return SortedBlocks([(item,)])
        if len(self._blocks) == 1 and self._len < MAX_BLOCK - 1:  # one block, staying one
            block = list(self._blocks[0])
            bisect.insort(block, item)
            return self._with(0, (block,), +1)
        at = min(self._block_for(item, bisect.bisect_right), len(self._blocks) - 1)
        block = list(self._blocks[at])
        bisect.insort(block, item)
        if len(block) >= MAX_BLOCK:  # split in two halves
            half = len(block) // 2
            return self._with(at, (block[:half], block[half:]), +1)
        return self._with(at, (block,), +1)

    def remove(self, item: T) -> SortedBlocks[T]:
        """A new list without one ``item``; :class:`ValueError` if it holds none."""
        at = 0 if len(self._blocks) == 1 else self._block_for(item, bisect.bisect_left)
        if at < len(self._blocks):
            block = self._blocks[at]
            i = bisect.bisect_left(block, item)
            if i < len(block) and block[i] == item:
                rest = list(block)
                del rest[i]
                return self._with(at, (rest,) if rest else (), -1)
        raise ValueError(f"{item!r} is not in the list")

    def _block_for(self, item: Any, search: Callable[..., int]) -> int:
        """The first block whose last item is not less than ``item`` (``bisect_left``), or
        greater than it (``bisect_right``); the number of blocks if none is."""
        return search(self._blocks, item, key=_last)

    def _with(self, at: int, blocks: tuple[list[Any], ...], grown: int) -> SortedBlocks[T]:
        """This list with block ``at`` replaced by ``blocks`` (none or more, not empty),
        ``grown`` items more: every other block is shared."""
        new: SortedBlocks[T] = SortedBlocks.__new__(SortedBlocks)
        if len(self._blocks) == 1:
            new._blocks = blocks
        else:
            new._blocks = self._blocks[:at] + blocks + self._blocks[at + 1 :]
        new._len = self._len + grown
        new._starts = None
        return new

    def _start(self, at: int) -> int:
        """The position of block ``at``'s first item (the length, past the last block)."""
        return self._block_starts()[at] if at else 0

    def _block_starts(self) -> tuple[int, ...]:
        """Where each block begins, then the length: worked out once per version, when
        first asked."""
        if self._starts is None:
            self._starts = (0, *itertools.accumulate(map(len, self._blocks)))
        return self._starts

    def _block_at(self, position: int) -> tuple[int, int]:
        """The block holding ``position`` (``0 <= position < len``), and where in it."""
        if position < len(self._blocks[0]):
            return 0, position
        starts = self._block_starts()
        at = bisect.bisect_right(starts, position) - 1
        return at, position - starts[at]

    def bisect_left(self, item: Any) -> int:
        """The position of the first item not less than ``item`` (as :func:`bisect.bisect_left`)."""
        if len(self._blocks) == 1:
            return bisect.bisect_left(self._blocks[0], item)
        at = self._block_for(item, bisect.bisect_left)
        if at == len(self._blocks):
            return self._len
        return self._start(at) + bisect.bisect_left(self._blocks[at], item)

    def bisect_right(self, item: Any) -> int:
        """The position after the last item not greater than ``item``."""
        if len(self._blocks) == 1:
            return bisect.bisect_right(self._blocks[0], item)
        at = self._block_for(item, bisect.bisect_right)
        if at == len(self._blocks):
            return self._len
        return self._start(at) + bisect.bisect_right(self._blocks[at], item)

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __getitem__(self, position: int) -> T:
        if position < 0:
            position += self._len
        if not 0 <= position < self._len:
            raise IndexError(f"position {position} of a list of {self._len}")
        at, offset = self._block_at(position)
        item: T = self._blocks[at][offset]
        return item

    def __iter__(self) -> Iterator[T]:
        return itertools.chain.from_iterable(self._blocks)

    def iter_from(self, position: int) -> Iterator[T]:
        """The items from ``position`` on (a negative one counts from the end), in order."""
        if position < 0:
            position = max(0, position + self._len)
        if position >= self._len:
            return iter(())
        at, offset = self._block_at(position)
        first = self._blocks[at][offset:]
        return itertools.chain(first, itertools.chain.from_iterable(self._blocks[at + 1 :]))

    def __eq__(self, other: object) -> bool:
        """Equal to another with the same items, however they are blocked."""
        if not isinstance(other, SortedBlocks):
            return NotImplemented
        return self._len == other._len and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SortedBlocks({list(self)!r})"
