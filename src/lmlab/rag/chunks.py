"""Token windows with overlap, counted in the model's own tokens (lmlab.tokenizer.Tokenizer).

A window of `chunk_tokens` tokens starts every `chunk_tokens - overlap` tokens; the last window
ends at the document's end. A chunk's text is the exact slice of the document its tokens cover
(character offsets from the tokenizer), so a citation quotes the source verbatim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmlab.errors import LmlabError


@dataclass
class Chunk:
    chunk_id: str  # "<doc_id>#<n>"
    doc_id: str
    text: str
    start: int  # character offsets into the document
    end: int
    tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


def windows(n_tokens: int, chunk_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) token spans covering 0..n_tokens."""
    if chunk_tokens < 1:
        raise LmlabError(f"chunk_tokens must be >= 1 (got {chunk_tokens})")
    if not 0 <= overlap < chunk_tokens:
        raise LmlabError(f"overlap must be in [0, chunk_tokens) = [0, {chunk_tokens}) (got {overlap})")
    if n_tokens == 0:
        return []
    step, spans, start = chunk_tokens - overlap, [], 0
    while True:
        end = min(start + chunk_tokens, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += step


def chunk_text(doc_id: str, text: str, tokenizer, chunk_tokens: int = 256, overlap: int = 32) -> list[Chunk]:
    """Split one document. `tokenizer` is an lmlab Tokenizer (its HF backend gives the offsets)."""
    enc = tokenizer.backend.encode(text, add_special_tokens=False)
    offsets = [o for o in enc.offsets]
    chunks = []
    for n, (a, b) in enumerate(windows(len(offsets), chunk_tokens, overlap)):
        start, end = offsets[a][0], offsets[b - 1][1]
        piece = text[start:end]
        if piece.strip():
            chunks.append(Chunk(f"{doc_id}#{n}", doc_id, piece, start, end, b - a))
    return chunks
