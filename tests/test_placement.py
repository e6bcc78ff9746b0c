from __future__ import annotations

import uuid
from collections import Counter

import pytest

from tapedeck.placement import place, ranking


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(n)]


def test_placement_is_deterministic_and_spreads() -> None:
    ids = _ids(3000)
    counts = Counter(place(i, 3) for i in ids)
    assert set(counts) == {0, 1, 2}
    assert min(counts.values()) > 800  # about 1000 each
    assert [place(i, 3) for i in ids[:50]] == [place(i, 3) for i in ids[:50]]


def test_one_replica_owns_everything() -> None:
    assert {place(i, 1) for i in _ids(100)} == {0}


def test_adding_a_replica_moves_only_sessions_to_the_new_one() -> None:
    """Rendezvous: from 3 to 4 replicas a session either stays or goes to the new replica;
    none moves between old ones (and live ones do not move at all: placement is recorded)."""
    moved = 0
    for i in _ids(2000):
        before, after = place(i, 3), place(i, 4)
        if before != after:
            assert after == 3
            moved += 1
    assert 300 < moved < 700  # about a quarter


def test_ranking_lists_every_replica_once_owner_first() -> None:
    for i in _ids(20):
        order = ranking(i, 5)
        assert sorted(order) == [0, 1, 2, 3, 4]
        assert order[0] == place(i, 5)


@pytest.mark.parametrize("count", [0, -1, 1001])
def test_bad_counts_are_refused(count: int) -> None:
    with pytest.raises(ValueError, match="replica count"):
        place("x", count)
