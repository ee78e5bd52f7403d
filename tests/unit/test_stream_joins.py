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
