"""Token windows: sizes, overlaps and boundaries, counted in the model's tokens."""

import pytest

from lmlab.errors import LmlabError
from lmlab.rag.chunks import chunk_text, windows


def test_windows_cover_the_tokens_with_the_given_overlap():
    spans = windows(25, 10, 3)
    assert spans == [(0, 10), (7, 17), (14, 24), (21, 25)]
    for (a0, b0), (a1, _) in zip(spans, spans[1:]):
        assert b0 - a1 == 3  # consecutive windows share exactly `overlap` tokens


def test_windows_exact_fit_and_short_documents():
    assert windows(10, 10, 2) == [(0, 10)]
    assert windows(18, 10, 2) == [(0, 10), (8, 18)]  # no empty or duplicate tail window
    assert windows(3, 10, 2) == [(0, 3)]
    assert windows(0, 10, 2) == []


@pytest.mark.parametrize("size,overlap", [(0, 0), (10, 10), (10, -1)])
def test_bad_window_settings_are_refused(size, overlap):
    with pytest.raises(LmlabError, match="chunk_tokens|overlap"):
        windows(5, size, overlap)


def test_chunks_are_verbatim_slices_with_token_counts(tokenizer):
    text = " ".join(f"word{i}." for i in range(120))
    chunks = chunk_text("d", text, tokenizer, chunk_tokens=40, overlap=10)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert sum(c.tokens for c in chunks) - 10 * (len(chunks) - 1) == len(ids)
    for c in chunks:
        assert text[c.start:c.end] == c.text
        assert c.tokens <= 40
        assert len(tokenizer.encode(c.text, add_special_tokens=False)) in range(c.tokens - 1, c.tokens + 2)
    assert chunks[0].start == 0 and chunks[-1].end == len(text.rstrip())
    for prev, nxt in zip(chunks, chunks[1:]):
        assert nxt.start < prev.end  # the overlap is shared text
        assert text[nxt.start:prev.end].strip()
    assert [c.chunk_id for c in chunks] == [f"d#{i}" for i in range(len(chunks))]
