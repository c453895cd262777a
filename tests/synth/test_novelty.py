"""The ROUGE-L novelty filter equals rouge-score's numbers and a brute-force filter's decisions."""

from __future__ import annotations

import random

import pytest

from lmlab.synth.novelty import NoveltyFilter, rouge_l, tokens

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

WORDS = ("give list write three short poem about the a of cats dogs summary explain why sky blue "
         "story me name two colours translate sentence French classify sentiment review").split()


def _instructions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = WORDS + ["".join(rng.choice("abcdefghijklmnop") for _ in range(5)) for _ in range(1500)]
    out = []
    for _ in range(n):
        if out and rng.random() < 0.3:  # a near copy of an earlier one
            base = rng.choice(out).split()
            base[rng.randrange(len(base))] = rng.choice(vocab)
            out.append(" ".join(base))
        else:
            # common words and rarer ones, as instructions have
            words = [rng.choice(WORDS) if rng.random() < 0.4 else rng.choice(vocab) for _ in range(rng.randint(2, 12))]
            out.append(" ".join(words).capitalize() + ".")
    return out


def test_rouge_l_equals_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    items = _instructions(60, seed=1) + ["Hello, World! 3.5 x_y", "", "the the the"]
    for a in items:
        for b in items[:25]:
            ref = scorer.score(b, a)["rougeL"].fmeasure
            assert rouge_l(tokens(a), tokens(b)) == pytest.approx(ref, abs=1e-12)


def test_the_indexed_filter_keeps_exactly_what_comparing_with_every_kept_one_keeps():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    items = _instructions(300, seed=2)
    f = NoveltyFilter(0.7)
    kept_brute: list[str] = []
    for text in items:
        novel = all(scorer.score(k, text)["rougeL"].fmeasure < 0.7 for k in kept_brute) and bool(tokens(text))
        if novel:
            kept_brute.append(text)
        assert f.add(text) == novel, text
    assert f.texts == kept_brute
    assert 0 < len(kept_brute) < len(items)
    # the index spares most of the comparisons a brute-force filter makes
    brute = sum(range(len(kept_brute)))
    assert f.exact_comparisons < brute / 2


def test_an_exact_repeat_and_an_empty_instruction_are_not_novel():
    f = NoveltyFilter()
    assert f.add("Write a poem about the sea.")
    assert not f.add("write a POEM about the sea")
    assert not f.add("  ...  ")
    assert f.add("Explain photosynthesis to a child.")
