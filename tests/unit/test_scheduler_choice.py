"""The scheduler's choices, as pure functions: which worker gets a segment, and which
running segment is split for which idle worker."""

from __future__ import annotations

from ampd.controller.scheduler import choose_splits, pick_worker


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


def seg(
    id_: int,
    epoch: int = 1,
    pattern: str | None = None,
    node: str = "owner",
    status: str = "RUNNING",
    end: int = 10_000,
) -> dict:
    return {
        "id": id_,
        "epoch": epoch,
        "worker_pattern": pattern,
        "node_id": node,
        "status": status,
        "end_block": end,
    }


def pairs(chosen: list) -> list[tuple[str, int]]:
    return [(node, s["id"]) for node, s, _ in chosen]


def parts(chosen: list) -> list[tuple[str, int, int]]:
    return [(node, s["id"], n) for node, s, n in chosen]


def test_each_idle_worker_gets_its_own_segment_largest_remainder_first() -> None:
    running = [seg(7), seg(3), seg(5)]  # as the query orders them: largest remainder first
    assert pairs(choose_splits(["a", "b"], [], running, set())) == [("a", 7), ("b", 3)]
    assert pairs(choose_splits(["a", "b", "c", "d"], [], running, set())) == [
        ("a", 7),
        ("b", 3),
        ("c", 5),
    ]


def test_a_segment_asked_recently_is_not_asked_again() -> None:
    running = [seg(7, epoch=2), seg(3)]
    assert pairs(choose_splits(["a"], [], running, {(7, 2, 10_000)})) == [("a", 3)]
    # A new epoch is a new run: it may be asked at once.
    assert pairs(choose_splits(["a"], [], running, {(7, 1, 10_000)})) == [("a", 7)]
    assert choose_splits(["a"], [], running, {(7, 2, 10_000), (3, 1, 10_000)}) == []


def test_a_segment_whose_split_landed_may_be_asked_again_at_once() -> None:
    # Asked with its end at 10,000; the split moved the end to 6,000: a later joiner may
    # have part of what is left without waiting for the ask to expire.
    asked = {(7, 1, 10_000)}
    assert pairs(choose_splits(["b"], [], [seg(7, end=6_000)], asked)) == [("b", 7)]
    assert choose_splits(["b"], [], [seg(7, end=10_000)], asked) == []


def test_a_worker_that_could_take_a_waiting_segment_asks_for_no_split() -> None:
    running = [seg(7), seg(3)]
    assert pairs(choose_splits(["gpu-1", "cpu-1"], ["gpu*"], running, set())) == [("cpu-1", 7)]
    assert choose_splits(["a"], [None], running, set()) == []


def test_only_segments_of_jobs_that_admit_the_idle_worker() -> None:
    running = [seg(7, pattern="gpu*"), seg(3, pattern="cpu-1")]
    assert pairs(choose_splits(["cpu-1"], [], running, set())) == [("cpu-1", 3)]
    assert choose_splits(["tpu-1"], [], running, set()) == []


def test_idle_workers_beyond_the_segments_widen_the_first_split() -> None:
    # Two joiners, one running segment: split into thirds (the joiner's part is split
    # again for the other at the next pass), not a half for one and nothing for the other.
    assert parts(choose_splits(["a", "b"], [], [seg(7)], set())) == [("a", 7, 3)]
    assert parts(choose_splits(["a", "b", "c"], [], [seg(7)], set())) == [("a", 7, 4)]
    # One idle worker per segment: halves, as before.
    assert parts(choose_splits(["a", "b"], [], [seg(7), seg(3)], set())) == [
        ("a", 7, 2),
        ("b", 3, 2),
    ]
    # A left-over worker counts only toward a segment whose job admits it.
    running = [seg(7, pattern="cpu*"), seg(3, pattern="cpu*")]
    assert parts(choose_splits(["cpu-1", "cpu-2", "cpu-3", "gpu-1"], [], running, set())) == [
        ("cpu-1", 7, 3),
        ("cpu-2", 3, 2),
    ]
    # Nothing to split: nobody is counted.
    assert choose_splits(["a", "b"], [], [seg(7)], {(7, 1, 10_000)}) == []


def test_an_idle_worker_waits_for_a_larger_segment_that_has_not_started() -> None:
    # The first split's new part (9, the larger) is assigned but not running yet: the other
    # joiner waits for it rather than halve the owner's smaller part (7).
    running = [seg(9, status="ASSIGNED", node="a"), seg(7)]
    assert choose_splits(["b"], [], running, set()) == []
    assert parts(choose_splits(["b", "c"], [], running, set())) == [("c", 7, 2)]
    running[0]["status"] = "RUNNING"
    assert parts(choose_splits(["b"], [], running, set())) == [("b", 9, 2)]
