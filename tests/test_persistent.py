"""SortedBlocks against a plain sorted list, blocks made small so that they split."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import genepool._persistent
from genepool._persistent import SortedBlocks

items = st.integers(-20, 20)
operations = st.lists(st.tuples(st.sampled_from(["add", "remove"]), items), max_size=80)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(genepool._persistent, "MAX_BLOCK", 4)
    monkeypatch.setattr(genepool._persistent, "BLOCK", 4)


def same(blocks: SortedBlocks[int], plain: list[int]) -> None:
    assert list(blocks) == plain
    assert len(blocks) == len(plain)
    assert bool(blocks) == bool(plain)
    for probe in range(-22, 23):
        assert blocks.bisect_left(probe) == bisect.bisect_left(plain, probe)
        assert blocks.bisect_right(probe) == bisect.bisect_right(plain, probe)
    for position in range(-len(plain) - 2, len(plain) + 2):
        assert list(blocks.iter_from(position)) == plain[max(position, -len(plain)) :]
        if -len(plain) <= position < len(plain):
            assert blocks[position] == plain[position]
        else:
            with pytest.raises(IndexError):
                blocks[position]


@settings(max_examples=300, deadline=None)
@given(st.lists(items, max_size=30), operations)
def test_every_version_reads_as_a_plain_sorted_list(
    start: list[int], ops: list[tuple[str, int]]
) -> None:
    blocks = SortedBlocks.of(start)
    plain = sorted(start)
    versions = [(blocks, list(plain))]
    for op, item in ops:
        if op == "add":
            blocks = blocks.add(item)
            bisect.insort(plain, item)
        elif item in plain:
            blocks = blocks.remove(item)
            plain.remove(item)
        else:
            with pytest.raises(ValueError, match="not in the list"):
                blocks.remove(item)
        same(blocks, plain)
        versions.append((blocks, list(plain)))
    for old, was in versions:  # a new version never changes an old one
        same(old, was)
        assert old == SortedBlocks.of(was)


def test_a_block_splits_once_full_and_an_empty_one_goes() -> None:
    blocks = SortedBlocks.of(range(10)).add(4)
    assert all(0 < len(b) < 4 for b in blocks._blocks)
    for item in range(10):
        blocks = blocks.remove(item)
    assert list(blocks) == [4]
    assert len(blocks._blocks) == 1
    assert blocks.remove(4) == SortedBlocks()
    assert not SortedBlocks()._blocks


@settings(max_examples=200, deadline=None)
@given(
    st.lists(items, max_size=40),
    st.lists(st.dictionaries(st.integers(0, 39), items, max_size=5), max_size=10),
)
def test_blocks_read_as_a_tuple_and_old_versions_stay(
    start: list[int], edits: list[dict[int, int]]
) -> None:
    blocks = genepool._persistent.Blocks(start)
    plain = list(start)
    versions = [(blocks, tuple(plain))]
    for edit in edits:
        if any(position >= len(plain) for position in edit):
            with pytest.raises(IndexError):
                blocks.replaced(edit)
            continue
        blocks = blocks.replaced(edit)
        for position, item in edit.items():
            plain[position] = item
        versions.append((blocks, tuple(plain)))
    for old, was in versions:
        assert old == was
        assert tuple(old) == was
        assert len(old) == len(was)
        assert [old[i] for i in range(-len(was), len(was))] == list(was + was)
        assert old[1:3] == was[1:3]
