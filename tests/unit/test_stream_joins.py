"""The join update rule's terms: summed over a stream's parts they give each joined row once."""

import itertools
import random

from ampd.sql.stream_joins import join_terms

A, B = ("eth", "blocks"), ("eth#2", "blocks")


def test_terms_cover_every_non_empty_choice_of_new_sides():
    files = {A: frozenset({1, 2, 3}), B: frozenset({1, 2, 3})}
    terms = join_terms(files, delta=frozenset({3}), history=frozenset({1, 2}))
    assert terms == [
        {A: frozenset({3}), B: frozenset({1, 2})},
        {A: frozenset({1, 2}), B: frozenset({3})},
        {A: frozenset({3}), B: frozenset({3})},
    ]


def test_a_term_with_a_side_without_files_is_left_out():
    files = {A: frozenset({1, 2}), ("eth", "logs"): frozenset({10})}
    # The part has new blocks but no new logs; the stream has read no log yet.
    assert join_terms(files, delta=frozenset({2}), history=frozenset({1})) == []
    terms = join_terms(files, delta=frozenset({2, 10}), history=frozenset({1}))
    assert terms == [
        {A: frozenset({1}), ("eth", "logs"): frozenset({10})},  # old blocks, new logs
        {A: frozenset({2}), ("eth", "logs"): frozenset({10})},  # new blocks, new logs
    ]


def test_summed_over_the_parts_the_terms_give_the_whole_join_once():
    rng = random.Random(7)
    # Three readings (a three-way join); file f holds rows with keys; a row joins on key.
    rows = {f: [rng.randrange(6) for _ in range(3)] for f in range(1, 13)}
    files = {r: frozenset(range(1, 13)) for r in (A, B, ("eth#3", "blocks"))}

    def join(term):
        picks = [[k for f in sorted(term[r]) for k in rows[f]] for r in files]
        return [combo for combo in itertools.product(*picks) if len(set(combo)) == 1]

    streamed, history = [], frozenset()
    for part in (frozenset({1, 2, 3}), frozenset({4}), frozenset({5, 6}), frozenset(range(7, 13))):
        for term in join_terms(files, part, history):
            streamed += join(term)
        history |= part
    everything = {r: frozenset(range(1, 13)) for r in files}
    assert sorted(streamed) == sorted(join(everything))


def test_a_union_all_of_joins_takes_the_rule_branch_by_branch():
    """Summed over the parts, the branch terms give the union of the whole joins once; the
    terms over all readings at once would send the other branch's old rows again."""
    from ampd.sql.catalog import CatalogSnapshot, CommittedFile, RevisionTables
    from ampd.sql.stream_joins import StreamJoin

    ids = range(1, 9)
    revision = RevisionTables(
        "h", {t: tuple(CommittedFile(i, "", i, i, 1) for i in ids) for t in ("blocks", "logs")}
    )
    snapshot = CatalogSnapshot({"_/eth": revision})  # what `eth` names
    sql = (
        "SELECT c.x FROM eth.blocks c JOIN eth.blocks p ON c.x = p.x "
        "UNION ALL SELECT l.x FROM eth.logs l JOIN eth.blocks b ON l.x = b.x"
    )
    join = StreamJoin.of(sql, snapshot)
    assert join.branches == (
        (("eth", "blocks"), ("eth#2", "blocks")),
        (("eth", "logs"), ("eth#3", "blocks")),
    )
    rng = random.Random(3)
    keys = {r: {f: rng.randrange(4) for f in ids} for r in join.readings}

    def rows(term):
        def pairs(a, b):
            return [(keys[a][f], keys[b][g]) for f in term[a] for g in term[b]
                    if keys[a][f] == keys[b][g]]  # fmt: skip

        (a, b), (c, d) = join.branches
        return [("one", *p) for p in pairs(a, b)] + [("two", *p) for p in pairs(c, d)]

    streamed, history = [], frozenset()
    for part in (frozenset({1, 2}), frozenset({3}), frozenset({4, 5, 6}), frozenset({7, 8})):
        for term in join.terms(snapshot, part, history):
            streamed += rows(term)
        history |= part
    assert sorted(streamed) == sorted(rows({r: frozenset(ids) for r in join.readings}))
