"""Answer a question from retrieved passages, with [n] citations.

The prompt numbers the passages [1]..[k]; the model is told to cite after each claim and to say
"not in the documents" when they do not hold the answer. Citations are parsed from the answer and
mapped back to the passages. When retrieval finds nothing relevant (no BM25 match, or no chunk
whose cosine reaches `min_similarity`) the answer is the abstention, without asking the model.
Passages that do not fit the model's context are cut, lowest-ranked first, and the result says so.

Structured output: where SamplingParams has `guided_regex` (the constrained-decoding issue), the
answer is generated under CITED_ANSWER, so every sentence carries at least one citation mark;
otherwise it is free text and parse_citations reads whatever marks it has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lmlab.errors import LmlabError

ABSTAIN = "not in the documents"
SYSTEM = ("You answer questions using only the numbered passages you are given. After each claim, cite "
          "the passages that support it with their numbers in brackets, like [1] or [2][3]. If the passages "
          f"do not contain the answer, reply exactly: {ABSTAIN}.")
# sentences each ending in one or more [n] marks, or the abstention
CITED_ANSWER = r"(?:[^\[\]\n]{1,300}( ?\[[1-9][0-9]?\])+\.? ?){1,4}|" + ABSTAIN


def cited_answer(n_passages: int) -> str:
    """CITED_ANSWER with marks limited to the passages shown, [1]..[n]."""
    mark = f"[1-{n_passages}]" if n_passages <= 9 else r"[1-9][0-9]?"
    return CITED_ANSWER.replace(r"[1-9][0-9]?", mark, 1)
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_MIN_PASSAGE_TOKENS = 24  # a cut passage shorter than this is left out instead


@dataclass
class Answer:
    question: str
    answer: str
    citations: list[dict]  # [{"n", "doc_id", "chunk_id", "text"}], in order of first citation
    retrieved: list[dict]  # [{"doc_id", "chunk_id", "score", ...}], best first
    passages: list[str] = field(default_factory=list)  # the texts shown as [1]..[k] (after any cut)
    abstained: bool = False
    notes: list[str] = field(default_factory=list)  # passages cut to fit, invalid citation numbers...
    prompt_tokens: int = 0

    def to_dict(self) -> dict:
        return {"answer": self.answer, "citations": self.citations, "retrieved": self.retrieved,
                "abstained": self.abstained, "notes": self.notes}


def parse_citations(text: str) -> list[int]:
    """Citation numbers in order of first appearance: "[1]", "[2][3]" and "[2, 3]" forms."""
    seen: list[int] = []
    for m in _CITE.finditer(text):
        for n in m.group(1).split(","):
            n = int(n)
            if n not in seen:
                seen.append(n)
    return seen


def passage_block(passages: list[str]) -> str:
    return "\n\n".join(f"[{n}] {p}" for n, p in enumerate(passages, 1))


def messages_for(question: str, passages: list[str], instructions: str = "") -> list[dict]:
    user = f"Passages:\n\n{passage_block(passages)}\n\nQuestion: {question}"
    if instructions:
        user += f"\n{instructions}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def fit_passages(tokenizer, question: str, passages: list[str], budget: int,
                 instructions: str = "") -> tuple[str, list[str], list[str]]:
    """(question, passages, notes) whose prompt fits in `budget` tokens: passages kept in rank order
    while they fit, the first that does not is cut to the room left (or dropped when that is under
    a few tokens), the rest dropped; a question too long by itself keeps its last part."""
    notes: list[str] = []
    count = lambda msgs: len(tokenizer.encode_chat(msgs))  # noqa: E731
    room = budget - count(messages_for(question, [], instructions))
    if room < _MIN_PASSAGE_TOKENS:
        ids = tokenizer.encode(question)
        keep = max(1, len(ids) - (_MIN_PASSAGE_TOKENS - room) - 2 * _MIN_PASSAGE_TOKENS)
        if keep >= len(ids) or keep < 1:
            raise LmlabError(f"the prompt does not fit the model's context of {budget} tokens")
        question = tokenizer.decode(ids[-keep:])
        notes.append(f"question cut to its last {keep} of {len(ids)} tokens to fit the context")
        room = budget - count(messages_for(question, [], instructions))
    kept: list[str] = []
    for i, p in enumerate(passages):
        cost = len(tokenizer.encode(f"[{i + 1}] {p}\n\n"))
        if cost <= room:
            kept.append(p)
            room -= cost
            continue
        ids = tokenizer.encode(p)
        cut = room - (cost - len(ids)) - 1
        if cut >= _MIN_PASSAGE_TOKENS:
            kept.append(tokenizer.decode(ids[:cut]))
            notes.append(f"passage {i + 1} cut to {cut} of {len(ids)} tokens to fit the context")
        dropped = len(passages) - len(kept)
        if dropped:
            notes.append(f"{dropped} of {len(passages)} passages left out to fit the context")
        break
    # tokens at the joins may merge differently from the pieces counted apart: shave what is over
    while kept and (over := count(messages_for(question, kept, instructions)) - budget) > 0:
        ids = tokenizer.encode(kept[-1])
        if len(ids) - over - 2 < _MIN_PASSAGE_TOKENS:
            kept.pop()
        else:
            kept[-1] = tokenizer.decode(ids[:len(ids) - over - 2])
    return question, kept, notes


def relevant(hits, min_similarity: float) -> bool:
    """The abstention rule: something relevant was found when the best cosine reaches
    min_similarity (dense and hybrid), or any chunk shares a term with the question (BM25 only)."""
    if not hits:
        return False
    cosines = [h.dense for h in hits if h.dense is not None]
    if cosines:
        return max(cosines) >= min_similarity
    return any(h.bm25 for h in hits)


@dataclass
class Prepared:
    """What `prepare` hands to a generator: the chat messages and sampling extras, plus what
    `finish` needs to map the reply's citations back (see the server's /v1/rag/ask)."""
    question: str
    hits: list
    passages: list[str]
    messages: list[dict]
    params: dict
    notes: list[str]


def prepare(question: str, index, k: int = 5, mode: str = "hybrid", *, tokenizer=None, context: int | None = None,
            min_similarity: float = 0.25, max_new_tokens: int = 160, instructions: str = "", rerank=None,
            constrained: bool | str = True) -> Prepared | Answer:
    """Retrieve and build the prompt; an Answer (the abstention) when nothing relevant was found.
    With `tokenizer` and `context`, passages are cut to fit `context - max_new_tokens` tokens.
    `constrained`: True for CITED_ANSWER, a regex of one's own, or False for free text (the
    constraint applies only where the engine has guided_regex)."""
    from lmlab.rag.retrieve import retrieve

    if not question or not question.strip():
        raise LmlabError("empty question")
    hits = retrieve(index, question, k, mode, rerank=rerank)
    if not relevant(hits, min_similarity):
        best = max((h.dense for h in hits if h.dense is not None), default=None)
        why = "no passage matched" if not hits else f"best similarity {best:.2f} < {min_similarity}"
        return Answer(question, ABSTAIN, [], [h.to_dict() for h in hits], abstained=True,
                      notes=[f"abstained: {why}"])
    passages, shown, notes = [h.chunk.text for h in hits], question, []
    if tokenizer is not None and context is not None:
        shown, passages, notes = fit_passages(tokenizer, question, passages, context - max_new_tokens, instructions)
    regex = constrained if isinstance(constrained, str) else cited_answer(len(passages))
    params = {"guided_regex": regex} if constrained and _has_guided_regex() else {}
    return Prepared(question, hits, passages, messages_for(shown, passages, instructions), params, notes)


def finish(prep: Prepared, text: str, prompt_tokens: int = 0) -> Answer:
    """The model's reply -> an Answer with its citations mapped to the numbered passages."""
    text, notes, citations = text.strip(), list(prep.notes), []
    for n in parse_citations(text):
        if 1 <= n <= len(prep.passages):
            h = prep.hits[n - 1]
            citations.append({"n": n, "doc_id": h.doc_id, "chunk_id": h.chunk.chunk_id, "text": prep.passages[n - 1]})
        else:
            notes.append(f"citation [{n}] names no passage (there are {len(prep.passages)})")
    abstained = ABSTAIN in text.lower() and not citations
    return Answer(prep.question, text, citations, [h.to_dict() for h in prep.hits], prep.passages, abstained,
                  notes, prompt_tokens)


def ask(lm, question: str, index, k: int = 5, mode: str = "hybrid", *, min_similarity: float = 0.25,
        max_new_tokens: int = 160, instructions: str = "", rerank=None, constrained: bool | str = True,
        generate=None) -> Answer:
    """Retrieve k passages and answer from them. `generate(messages, max_new_tokens, **params) -> str`
    replaces lm's own generation (any chat backend); `lm` (when given) also lends its tokenizer and
    context length, to cut the passages to fit."""
    prep = prepare(question, index, k, mode, tokenizer=lm.tokenizer if lm is not None else None,
                   context=lm.config.max_seq_len if lm is not None else None, min_similarity=min_similarity,
                   max_new_tokens=max_new_tokens, instructions=instructions, rerank=rerank, constrained=constrained)
    if isinstance(prep, Answer):
        return prep
    if generate is not None:
        return finish(prep, generate(prep.messages, max_new_tokens, **prep.params))
    out = lm.generate(prep.messages, max_new_tokens=max_new_tokens, temperature=0.0, **prep.params)
    return finish(prep, out.text, out.prompt_tokens)


def _has_guided_regex() -> bool:
    from dataclasses import fields

    from lmlab.engine.params import SamplingParams

    return any(f.name == "guided_regex" for f in fields(SamplingParams))
