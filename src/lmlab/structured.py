"""Validate-and-repair: output a program can read, with or without constrained decoding.

    result = lmlab.structured.generate(lm, "Give a person as JSON", json_schema=schema, repair=2)
    result.value, result.text, result.attempts  # the parsed value, the raw text, every try and why it failed

Each attempt generates (constrained by the engine's grammar mask unless `constrained=False`),
then checks: JSON is parsed (from a ```json fence if the model wrote one), a syntax error is fixed
with the `json-repair` library, and the value is validated with `jsonschema`; a regex must match
the whole text, a choice must be one of the strings, a grammar must accept the text. A failed
check is fed back to the model (its answer, then the error) for the next attempt, `repair` times
at most. Constrained outputs fail only when cut off (max_tokens) before they were complete.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from lmlab.errors import LmlabError

_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)\s*```", re.DOTALL)


@dataclass
class Attempt:
    text: str
    finish_reason: str
    error: str | None = None  # why this attempt was rejected; None: accepted
    repaired: bool = False  # json-repair fixed its syntax


@dataclass
class Result:
    value: Any  # the parsed JSON value, or the text for regex / choice / grammar; None if no attempt passed
    text: str  # the raw text of the accepted attempt (else the last one)
    ok: bool
    attempts: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Spec:
    """What the output must be: exactly one of these."""
    json_schema: dict | None = None
    json_object: bool = False
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None

    def __post_init__(self):
        if isinstance(self.json_schema, str):
            try:
                self.json_schema = json.loads(self.json_schema)
            except json.JSONDecodeError as e:
                raise LmlabError(f"json_schema is not valid JSON: {e}") from None
        given = [k for k, v in asdict(self).items() if v not in (None, False)]
        if len(given) != 1:
            raise LmlabError(f"give exactly one of json_schema, json_object, regex, choice, grammar; got {given or 'none'}")
        self.params()  # the engine's checks: a bad schema / regex / grammar is an error before generating

    @property
    def is_json(self) -> bool:
        return self.json_schema is not None or self.json_object

    def params(self) -> dict:
        """The SamplingParams constraint fields (validated)."""
        from lmlab.engine.params import SamplingParams

        kw = {"guided_json": self.json_schema, "guided_json_object": self.json_object, "guided_regex": self.regex,
              "guided_choice": self.choice, "guided_grammar": self.grammar}
        kw = {k: v for k, v in kw.items() if v not in (None, False)}
        SamplingParams(**kw)
        return kw

    def hint(self) -> str:
        if self.json_schema is not None:
            return f"Reply with only JSON that matches this JSON schema: {json.dumps(self.json_schema)}"
        if self.json_object:
            return "Reply with only a JSON object."
        if self.choice is not None:
            return f"Reply with only one of: {', '.join(self.choice)}."
        if self.regex is not None:
            return f"Reply with only text matching the regular expression {self.regex}"
        return "Reply with only text in this grammar:\n" + self.grammar


def check(text: str, spec: Spec, lm=None) -> tuple[Any, str | None, bool]:
    """(value, why it fails or None, whether json-repair changed the syntax). `lm` (its tokenizer)
    is needed for grammars only."""
    if spec.is_json:
        value, why, repaired = parse_json(text)
        if why is None:
            why = validate(value, spec.json_schema if spec.json_schema is not None else {"type": "object"})
        return value, why, repaired
    t = text.strip()
    if spec.regex is not None:
        return t, None if re.fullmatch(spec.regex, t) else f"{t!r} does not match the regular expression {spec.regex}", False
    if spec.choice is not None:
        return t, None if t in spec.choice else f"{t!r} is not one of {spec.choice}", False
    if lm is None:
        raise LmlabError("checking a grammar needs the model's tokenizer (pass lm=)")
    return t, _grammar_error(t, spec, lm), False


def parse_json(text: str) -> tuple[Any, str | None, bool]:
    """The JSON value in `text` (inside a ```json fence if there is one), json-repair'ed if it
    does not parse: (value, why it could not be read or None, repaired)."""
    m = _FENCE.search(text)
    candidate = (m.group(1) if m else text).strip()
    try:
        return json.loads(candidate), None, False
    except json.JSONDecodeError as e:
        first_error = f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
    import json_repair

    fixed = json_repair.repair_json(candidate, return_objects=True)
    if fixed in ("", None) and candidate.strip() not in ('""', "null"):
        return None, first_error, False
    return fixed, None, True


def validate(value: Any, schema: dict) -> str | None:
    """None if `value` satisfies the JSON schema, else the most relevant error with its path."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    error = jsonschema.exceptions.best_match(cls(schema).iter_errors(value))
    if error is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"at ${where}: {error.message}"


def _grammar_error(text: str, spec: Spec, lm) -> str | None:
    from lmlab.engine import constrained
    from lmlab.engine.params import SamplingParams

    c = constrained.start(SamplingParams(**spec.params()).grammar, lm.tokenizer, lm.config.vocab_size)
    try:
        for t in lm.tokenizer.encode(text, add_special_tokens=False):
            c.advance(t)
    except LmlabError:
        return f"{text!r} is not in the grammar"
    return None if c.is_complete() else f"{text!r} is not complete in the grammar"


def generate(lm, prompt: str | list[dict], *, json_schema: dict | str | None = None, json_object: bool = False,
             regex: str | None = None, choice: list[str] | None = None, grammar: str | None = None,
             **kw) -> Result:
    """Generate until the output passes `check`, at most 1 + `repair` attempts; keywords as
    `generate_batch`."""
    return generate_batch(lm, [prompt], Spec(json_schema, json_object, regex, choice, grammar), **kw)[0]


def generate_batch(lm, prompts: list[str | list[dict]], specs: Spec | list[Spec], *, constrained: bool = True,
                   repair: int = 0, hint: bool = True, system: str | None = None, max_new_tokens: int = 256,
                   temperature: float = 0.0, **params) -> list[Result]:
    """Many prompts at once: each round runs every prompt still failing as one engine batch.
    `constrained=False` asks in the prompt only; `hint` adds the schema (or regex, choices,
    grammar) to a text prompt; `params` are other SamplingParams (seed, top_p, ...)."""
    from lmlab.engine.params import SamplingParams

    specs = specs if isinstance(specs, list) else [specs] * len(prompts)
    if repair < 0:
        raise LmlabError(f"repair must be >= 0, got {repair}")
    conversations = []
    for prompt, spec in zip(prompts, specs):
        if isinstance(prompt, str):
            text = f"{prompt}\n\n{spec.hint()}" if hint else prompt
            prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        conversations.append(list(prompt))
    attempts: list[list[Attempt]] = [[] for _ in prompts]
    results: list[Result | None] = [None] * len(prompts)
    todo = list(range(len(prompts)))
    for _ in range(1 + repair):
        params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature,
                                 **(specs[k].params() if constrained else {}), **params) for k in todo]
        outs = lm.engine.generate([lm.prompt_ids(conversations[k]) for k in todo], params)
        failed = []
        for k, request in zip(todo, outs):
            out = request.outputs[0]
            if out.finish_reason == "error":
                value, why, repaired = None, f"generation failed: {request.error}", False
            else:
                value, why, repaired = check(out.text, specs[k], lm)
            if out.incomplete and not (why is None and repaired):  # json-repair may close a cut-off JSON
                why = f"cut off after {max_new_tokens} tokens before the output was complete" + (f" ({why})" if why else "")
            attempts[k].append(Attempt(out.text, out.finish_reason, why, repaired))
            if why is None:
                results[k] = Result(value, out.text, True, attempts[k])
                continue
            failed.append(k)
            conversations[k] = conversations[k] + [
                {"role": "assistant", "content": out.text},
                {"role": "user", "content": f"That reply is not valid: {why}. {specs[k].hint()}"}]
        todo = failed
        if not todo:
            break
    for k in todo:
        results[k] = Result(None, attempts[k][-1].text, False, attempts[k])
    return results
