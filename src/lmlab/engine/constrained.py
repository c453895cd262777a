"""Constrained decoding: only tokens that keep the output inside a language may be sampled.

A request names its language in SamplingParams with vLLM's names (guided_json, guided_json_object,
guided_regex, guided_choice, guided_grammar, or the `structured_outputs` dict). `compile_params`
turns that into a `Grammar` when the params are made, so a bad schema, an unsupported keyword, a
regex that does not compile or a grammar with a syntax error is an LmlabError before anything
runs; there is no silent fall-back to unconstrained decoding.

The engine sees one small interface, `Constraint` (one per sequence: the mask of allowed tokens,
advance by a token, complete / finished), and calls `mask_logits` once per step for the batch.
The grammar engine behind it is llguidance (Earley parser + lexer over the model's
tokenizer.json); another engine would be another Constraint subclass.

End of output: a constrained row may emit one of its stop ids (EOS) only where the grammar is
complete (accepting), and it finishes with "stop" as soon as the grammar allows nothing more, so
no forward pass is spent on the EOS. A row cut off (max_tokens, the context, a stop string)
before its grammar was complete is flagged `incomplete`.

No fast-forward of forced tokens: it would not keep outputs identical to masked decoding. The
forced bytes (`{"name": "` after `{` ...) usually have several tokenisations, and masked decoding
lets the model pick among them while fast-forward appends llguidance's canonical one; a seeded
sampling row draws from its generator at every token, so skipping draws shifts every later draw;
and the engine's decode step feeds one token per row, so appending k tokens would need a
chunked extend of the KV cache per row.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from lmlab.errors import LmlabError

if TYPE_CHECKING:  # torch and numpy load with the engine, not with SamplingParams
    import torch

# JSON whitespace: at most this much between two tokens of the JSON text, so a model cannot emit
# spaces or newlines until max_tokens, yet indented (pretty-printed) JSON a few levels deep and
# the usual `{"a": 1, "b": 2}` both stay allowed (constrained greedy = unconstrained greedy there).
JSON_WHITESPACE = r"[\x20\x0A\x0D\x09]{0,12}"

GUIDED_FIELDS = ("guided_json", "guided_json_object", "guided_regex", "guided_choice", "guided_grammar")
# vLLM's StructuredOutputsParams keys -> our fields
STRUCTURED_OUTPUTS_KEYS = {"json": "guided_json", "json_object": "guided_json_object", "regex": "guided_regex",
                           "choice": "guided_choice", "grammar": "guided_grammar",
                           "whitespace_pattern": "guided_whitespace_pattern"}


@dataclass(frozen=True)
class Grammar:
    """A validated constraint: its kind (json | json_object | regex | choice | grammar) and the
    llguidance grammar text."""
    kind: str
    text: str


# ---- SamplingParams -> Grammar ----------------------------------------------------------------

def compile_params(p) -> Grammar | None:
    """The Grammar that SamplingParams `p` asks for (None: unconstrained); raises LmlabError
    naming the problem. Folds `structured_outputs` into the guided_* fields first."""
    if p.structured_outputs is not None:
        so = p.structured_outputs
        if not isinstance(so, dict):
            so = {k: v for k, v in vars(so).items() if v not in (None, False)}  # a vLLM-like object
        unknown = sorted(set(so) - set(STRUCTURED_OUTPUTS_KEYS))
        if unknown:
            raise LmlabError(f"structured_outputs: unsupported key(s) {unknown}; "
                             f"valid: {sorted(STRUCTURED_OUTPUTS_KEYS)}")
        if any(_is_set(getattr(p, f)) for f in GUIDED_FIELDS):
            raise LmlabError("give either structured_outputs or guided_* fields, not both")
        for k, v in so.items():
            setattr(p, STRUCTURED_OUTPUTS_KEYS[k], v)
        p.structured_outputs = None
    given = [f for f in GUIDED_FIELDS if _is_set(getattr(p, f))]
    if not given:
        return None
    if len(given) > 1:
        raise LmlabError(f"at most one constraint per request, got {given}")
    ws = p.guided_whitespace_pattern or JSON_WHITESPACE
    field = given[0]
    if field == "guided_json":
        return _json_grammar(_schema_text(p.guided_json), ws)
    if field == "guided_json_object":
        if p.guided_json_object is not True:
            raise LmlabError(f"guided_json_object must be true or false, got {p.guided_json_object!r}")
        return _json_grammar('{"type": "object"}', ws, kind="json_object")
    if field == "guided_regex":
        if not isinstance(p.guided_regex, str):
            raise LmlabError(f"guided_regex must be a string, got {p.guided_regex!r}")
        return _grammar("regex", p.guided_regex)
    if field == "guided_choice":
        c = p.guided_choice
        if not (isinstance(c, (list, tuple)) and c and all(isinstance(s, str) and s for s in c)):
            raise LmlabError(f"guided_choice must be a non-empty list of non-empty strings, got {c!r}")
        p.guided_choice = list(c)
        return _grammar("choice", json.dumps(list(c)))
    if not isinstance(p.guided_grammar, str) or not p.guided_grammar.strip():
        raise LmlabError(f"guided_grammar must be a Lark (or GBNF) grammar text, got {p.guided_grammar!r}")
    return _grammar("grammar", p.guided_grammar)


def _is_set(v) -> bool:
    return v is not None and v is not False


def _schema_text(schema) -> str:
    """A JSON schema given as a dict, a JSON string or a pydantic model class -> canonical JSON."""
    if hasattr(schema, "model_json_schema"):
        schema = schema.model_json_schema()
    if isinstance(schema, (bytes, str)):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise LmlabError(f"guided_json is not valid JSON: {e}") from None
    if not isinstance(schema, (dict, bool)):
        raise LmlabError(f"guided_json must be a JSON schema (an object), got {type(schema).__name__}")
    return json.dumps(schema)  # key order kept: llguidance emits properties in schema order


@lru_cache(maxsize=256)
def _json_grammar(schema_text: str, whitespace: str, kind: str = "json") -> Grammar:
    import jsonschema
    import llguidance as llg

    schema = json.loads(schema_text)
    try:  # the meta-schema names the bad keyword and where it is
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(map(str, e.absolute_path)) or "(root)"
        raise LmlabError(f"invalid JSON schema at {where}: {e.message}") from None
    try:
        text = llg.LLMatcher.grammar_from_json_schema(
            schema_text, overrides={"whitespace_pattern": whitespace, "lenient": False})
    except ValueError as e:
        raise LmlabError(f"invalid JSON schema: {e}") from None
    return Grammar(kind, _validated(text, "JSON schema"))


@lru_cache(maxsize=256)
def _grammar(kind: str, source: str) -> Grammar:
    import llguidance as llg

    what = {"regex": "regex", "choice": "choice", "grammar": "grammar"}[kind]
    try:
        text = llg.grammar_from(what, source)
    except ValueError as e:
        raise LmlabError(f"guided_grammar: {e}") from None
    label = {"regex": f"regex {source!r}", "choice": "guided_choice", "grammar": "guided_grammar"}[kind]
    return Grammar(kind, _validated(text, label))


def _validated(text: str, label: str) -> str:
    import llguidance as llg

    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(text)
    if is_error:
        raise LmlabError(f"{label} is not supported or does not compile: {_one_line(messages[0])}")
    return text


def _one_line(message: str) -> str:
    """llguidance's message without its source excerpt and caret lines, on one line."""
    lines = [ln.strip() for ln in message.splitlines()]
    keep = [ln for ln in lines if ln and not ln.startswith(("^", "|")) and not re.match(r"\d+ \|", ln)]
    return "; ".join(keep)


# ---- the engine's interface -------------------------------------------------------------------

class Constraint:
    """One sequence's position in its grammar."""

    def allowed_mask(self) -> torch.Tensor:
        """[V] bool: the tokens that may come next (end-of-sequence ids not included)."""
        raise NotImplementedError

    def advance(self, token: int) -> None:
        """Consume a sampled token; LmlabError if the grammar does not allow it."""
        raise NotImplementedError

    def is_complete(self) -> bool:
        """The output so far is a whole sentence of the language (it may end here)."""
        raise NotImplementedError

    def is_finished(self) -> bool:
        """Nothing can follow: the output is complete and the row should stop."""
        raise NotImplementedError

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar forces next (the engine does not fast-forward them; see above)."""
        raise NotImplementedError

    def fork(self) -> "Constraint":
        """An independent copy in the same state (for a request's other samples)."""
        raise NotImplementedError

    @classmethod
    def allowed_masks(cls, constraints: list["Constraint"]) -> torch.Tensor:
        """[k, V] bool for several rows (subclasses compute them in one call)."""
        import torch
        return torch.stack([c.allowed_mask() for c in constraints])


def start(grammar: Grammar | None, tokenizer, vocab_size: int) -> Constraint | None:
    """The constraint for a new request on this tokenizer (None when unconstrained)."""
    if grammar is None:
        return None
    return LLGuidanceConstraint(grammar, _lltokenizer(tokenizer, vocab_size))


def mask_logits(logits: torch.Tensor, constraints: list[Constraint | None],
                stop_ids: list[set[int]]) -> torch.Tensor:
    """Set the logits of tokens the row's grammar does not allow to -inf. A row's stop ids stay
    allowed only where its grammar is complete. Unconstrained rows are untouched."""
    import torch

    rows = [i for i, c in enumerate(constraints) if c is not None]
    if not rows:
        return logits
    V = logits.shape[-1]
    allowed = type(constraints[rows[0]]).allowed_masks([constraints[i] for i in rows])[:, :V]
    if allowed.shape[-1] < V:  # logits wider than the tokenizer: the extra ids are never text
        allowed = torch.cat([allowed, allowed.new_zeros(len(rows), V - allowed.shape[-1])], -1)
    for j, i in enumerate(rows):
        ids = [t for t in stop_ids[i] if t < V]
        if ids:
            allowed[j, ids] = constraints[i].is_complete()
    allowed = allowed.to(logits.device)
    idx = torch.tensor(rows, device=logits.device)
    logits[idx] = logits[idx].masked_fill(~allowed, float("-inf"))
    return logits


# ---- llguidance ---------------------------------------------------------------------------------

_LLTOKENIZERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_EXECUTOR = None


def _lltokenizer(tokenizer, vocab_size: int):
    """llguidance's view of a lmlab Tokenizer (its token trie: ~0.3 s to build), made once."""
    import llguidance as llg

    per_tok = _LLTOKENIZERS.setdefault(tokenizer, {})
    n = max(vocab_size, tokenizer.vocab_size)
    if n not in per_tok:
        eos = tokenizer.eos_token_id
        per_tok[n] = llg.LLTokenizer(tokenizer.backend.to_str(), n_vocab=n,
                                     eos_token=eos if eos is not None else 0)
    return per_tok[n]


def _executor():
    """llguidance's thread pool for batched masks (made once per process)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        import llguidance as llg
        _EXECUTOR = llg.LLExecutor()
    return _EXECUTOR


class LLGuidanceConstraint(Constraint):
    def __init__(self, grammar: Grammar | None, lltok, matcher=None):
        import llguidance as llg

        self.grammar, self.lltok = grammar, lltok
        if matcher is None:
            matcher = llg.LLMatcher(lltok, grammar.text, log_level=0)
            if matcher.is_error():
                raise LmlabError(f"constraint ({grammar.kind}) does not compile: {matcher.get_error()}")
        self.matcher = matcher
        # the llguidance EOS is the engine's business (mask_logits): never allowed from the mask
        self.eos = [t for t in lltok.eos_tokens]

    def allowed_mask(self) -> torch.Tensor:
        return self.allowed_masks([self])[0]

    @classmethod
    def allowed_masks(cls, constraints: list["LLGuidanceConstraint"]) -> torch.Tensor:
        import numpy as np
        import torch

        V = constraints[0].lltok.vocab_size
        words = (V + 31) // 32
        # llguidance.torch's fill_next_token_bitmask_par without importing its torch.compile'd code
        bits = torch.zeros(len(constraints), words, dtype=torch.int32)
        _executor().unsafe_compute_mask_ptr([(c.matcher, i) for i, c in enumerate(constraints)],
                                            bits.data_ptr(), words * 4, len(constraints))
        for c in constraints:
            if c.matcher.is_error():
                raise LmlabError(f"constraint ({c.grammar.kind}) failed: {c.matcher.get_error()}")
        # bit b of int32 word w is token 32w + b; little-endian bytes, so unpack bits low first
        allowed = np.unpackbits(bits.numpy().view(np.uint8), axis=1, bitorder="little")[:, :V]
        allowed = torch.from_numpy(allowed).bool()
        allowed[:, constraints[0].eos] = False
        return allowed

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise LmlabError(f"constraint ({self.grammar.kind}) rejected token {token}: {self.matcher.get_error()}")

    def is_complete(self) -> bool:
        return self.matcher.is_accepting()

    def is_finished(self) -> bool:
        return self.matcher.is_stopped()

    def forced_tokens(self) -> list[int]:
        return self.matcher.compute_ff_tokens()

    def fork(self) -> "LLGuidanceConstraint":
        return LLGuidanceConstraint(self.grammar, self.lltok, self.matcher.deep_copy())
