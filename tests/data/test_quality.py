"""Gopher and C4 decisions (and reasons, and C4's rewritten text) equal datatrove's filters on the
same documents: real web text and planted failures of every rule."""

import json
import random

import pytest

from lmlab.data.quality import C4Config, GopherConfig, c4_lines, gopher_quality, gopher_repetition
from lmlab.data.words import words

from .corpora import document

pytest.importorskip("spacy", reason="datatrove's filters count words with spaCy")
filters = pytest.importorskip("datatrove.pipeline.filters")
from datatrove.data import Document  # noqa: E402
from datatrove.utils.text import split_into_words  # noqa: E402


def planted() -> list[str]:
    rng = random.Random(0)
    good = document(rng)
    return [
        good,
        "Too short. Only a few words here.",
        " ".join(["extraordinarily"] * 80) + " the and of.",  # long words
        " ".join(["a b c"] * 40) + " the and.",  # short words
        good + " #tag" * 60,  # hashes
        good + " wait..." * 60,  # ellipses
        "\n".join(f"- item {i} with the list of things and more" for i in range(60)),  # bullets
        "\n".join(f"{sentence} ..." for sentence in good.split(". ")),  # lines ending in ellipsis
        " ".join(["12345 67890 %%% ###"] * 30) + " the and of with",  # non-alpha words
        " ".join(rng.choice(["cat", "dog", "sun", "sky", "tree"]) for _ in range(120)),  # no stop words
        "\n\n".join([good.splitlines()[0]] * 5),  # duplicate paragraphs
        "\n".join([good.splitlines()[0]] * 4 + good.splitlines()),  # duplicate lines
        good + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
        good + "\nThe function returns { a value } to the caller here.",
        good + "\nPlease enable JavaScript to view the comments here.\nRead our privacy policy for details.",
        "One line. Another line here. A third line to read.",  # too few sentences
        good.replace(".", ""),  # no terminal punctuation
        "Don't e-mail Mr. Smith at a@b.com about U.S. policy (see http://x.com/a?b=1), it's 3.5% off!",
    ]


def datatrove_reason(f, text):
    doc = Document(text=text, id="0")
    r = f.filter(doc)
    return (None if r is True else r[1]), doc.text


@pytest.fixture(scope="module")
def docs(shared_data):
    web = [json.loads(line)["text"] for line in (shared_data / "webtext_sample.jsonl").open()]
    return planted() + web


def test_word_counts_follow_spacy_on_web_text(shared_data):
    web = [json.loads(line)["text"] for line in (shared_data / "webtext_sample.jsonl").open()]
    ours = sum(len(words(t)) for t in web)
    theirs = sum(len(split_into_words(t)) for t in web)
    assert abs(ours - theirs) / theirs < 0.005


def test_gopher_quality_matches_datatrove(docs):
    ref = filters.GopherQualityFilter()
    got = [gopher_quality(t, GopherConfig()) for t in docs]
    want = [datatrove_reason(ref, t)[0] for t in docs]
    assert got == want
    assert len(set(want)) >= 8  # the planted documents exercise most rules


def test_gopher_repetition_matches_datatrove(docs):
    ref = filters.GopherRepetitionFilter()
    assert [gopher_repetition(t, GopherConfig()) for t in docs] == [datatrove_reason(ref, t)[0] for t in docs]


def test_c4_decisions_and_kept_lines_match_datatrove(docs):
    ref = filters.C4QualityFilter()
    for t in docs:
        reason, text = c4_lines(t, C4Config())
        want_reason, want_text = datatrove_reason(ref, t)
        assert reason == want_reason, t[:200]
        if reason is None:
            assert text == want_text

