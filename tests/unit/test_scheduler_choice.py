"""The scheduler's choices, as pure functions: which worker gets a segment."""

from __future__ import annotations

from ampd.controller.scheduler import pick_worker


def assign(spare: dict[str, int], patterns: list[str | None]) -> list[str | None]:
    """What the assignment pass does with the picks: each one takes a unit of spare room."""
    spare = dict(spare)
    picked = []
    for pattern in patterns:
        node = pick_worker(spare, pattern)
        if node is not None:
            spare[node] -= 1
        picked.append(node)
    return picked


def test_segments_go_in_proportion_to_spare_capacity() -> None:
    # Capacities 2 and 1, both idle: 2 for the larger, 1 for the smaller, then nothing.
    assert assign({"a": 2, "b": 1}, [None] * 4) == ["a", "a", "b", None]
    assert assign({"a": 1, "b": 2}, [None] * 4) == ["b", "a", "b", None]


def test_most_spare_capacity_wins_and_ties_go_to_the_lowest_node_id() -> None:
    assert pick_worker({"w2": 3, "w1": 3, "w3": 1}, None) == "w1"
    assert pick_worker({"w1": 1, "w2": 4}, None) == "w2"


def test_a_full_worker_gets_nothing_more() -> None:
    assert pick_worker({"w1": 0, "w2": -1}, None) is None  # -1: it runs more than it may now
    assert pick_worker({}, None) is None


def test_the_pin_restricts_the_candidates() -> None:
    spare = {"cpu-1": 4, "gpu-1": 1, "gpu-2": 2}
    assert pick_worker(spare, "gpu*") == "gpu-2"
    assert pick_worker(spare, "gpu-1") == "gpu-1"
    assert pick_worker({"cpu-1": 4, "gpu-1": 0}, "gpu*") is None
