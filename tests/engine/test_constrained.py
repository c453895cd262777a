"""Constrained decoding (guided_json / json_object / regex / choice / grammar) on the bundled model:
every constrained output is in its language (JSON parsed and checked with `jsonschema`, regexes
with Python's `re`), under greedy and seeded sampling, alone and in batches that mix constrained
and free rows; a constraint changes nothing where the model's own output already satisfies it; bad
constraints are errors that name the problem. Many rows share each engine.generate call."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import pytest

from lmlab.engine import constrained
from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError

_spec = importlib.util.spec_from_file_location("json_schemas", Path(__file__).with_name("json_schemas.py"))
json_schemas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(json_schemas)  # the schema set, shared with benchmarks/structured.py
SCHEMAS, prompt = json_schemas.SCHEMAS, json_schemas.prompt

FREE = ["Tell me a joke.", "What is the capital of France?", "Name three fruits."]
MAX = 64


@pytest.fixture(scope="module")
def lm(bundled_lm):
    return bundled_lm


def _run(lm, prompts, params):
    return [o.outputs[0] for o in lm.engine.generate([lm.prompt_ids(p) for p in prompts], params)]


def _check_json(out, schema):
    assert out.finish_reason == "stop" and not out.incomplete, out
    jsonschema.validate(json.loads(out.text), schema)


@pytest.fixture(scope="module")
def greedy_mixed(lm):
    """All schemas greedy, with free rows between them, in one batch."""
    prompts = FREE[:1] + [prompt(w, s) for w, s in SCHEMAS] + FREE[1:]
    params = ([SamplingParams(max_tokens=MAX, temperature=0)]
              + [SamplingParams(max_tokens=MAX, temperature=0, guided_json=s) for _, s in SCHEMAS]
              + [SamplingParams(max_tokens=MAX, temperature=0)] * (len(FREE) - 1))
    outs = _run(lm, prompts, params)
    return outs[1:-(len(FREE) - 1)], [outs[0]] + outs[-(len(FREE) - 1):]


def test_there_are_30_plus_schemas():
    assert len(SCHEMAS) >= 30
    for _, s in SCHEMAS:
        jsonschema.validators.validator_for(s).check_schema(s)


def test_every_greedy_output_validates_in_a_mixed_batch(greedy_mixed):
    assert len(greedy_mixed[0]) == len(SCHEMAS)
    for (what, schema), out in zip(SCHEMAS, greedy_mixed[0]):
        _check_json(out, schema)  # parses and validates, or fails naming the schema


def test_every_seeded_sample_validates_and_the_seed_reproduces_it(lm):
    prompts = [prompt(w, s) for w, s in SCHEMAS] + FREE
    params = ([SamplingParams(max_tokens=MAX, temperature=0.9, top_p=0.95, seed=i, guided_json=s)
               for i, (_, s) in enumerate(SCHEMAS)] + [SamplingParams(max_tokens=8, temperature=0.9, seed=0)] * 3)
    outs = _run(lm, prompts, params)
    for (_, schema), out in zip(SCHEMAS, outs):
        _check_json(out, schema)
    again = _run(lm, prompts[:2], params[:2])  # alone, in a smaller batch
    assert [o.token_ids for o in again] == [o.token_ids for o in outs[:2]]


def test_a_constraint_does_not_change_the_free_rows(lm, greedy_mixed):
    alone = _run(lm, FREE, SamplingParams(max_tokens=MAX, temperature=0))
    assert [o.token_ids for o in alone] == [o.token_ids for o in greedy_mixed[1]]


def test_constrained_greedy_equals_free_greedy_where_the_free_output_satisfies_it(lm):
    """The assistant's turn starts with a ```json fence, so the free output is JSON up to the
    closing fence (a stop string); where it satisfies the constraint the constrained output is
    the same text."""
    fence = lm.tokenizer.encode("```json\n", add_special_tokens=False)
    cases = [("a person", {"type": "object"}), ("a list of three colours", {"type": "array"}),
             ("a city and its country", {"type": "object"}),
             ("a person", {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}),
             ("a rating", {"type": "object", "properties": {"rating": {"type": "integer"}}})]
    ids = [lm.prompt_ids(f"Give {w} as JSON.") + fence for w, _ in cases]
    free = lm.engine.generate(ids, SamplingParams(max_tokens=MAX, temperature=0, stop=["\n```"]))
    guided = lm.engine.generate(ids, [SamplingParams(max_tokens=MAX, temperature=0, stop=["\n```"], guided_json=s)
                                      for _, s in cases])
    compared = 0
    for (_, schema), f, g in zip(cases, free, guided):
        f, g = f.outputs[0], g.outputs[0]
        try:
            jsonschema.validate(json.loads(f.text), schema)
        except (ValueError, jsonschema.ValidationError):
            continue
        assert g.text == f.text
        compared += 1
    assert compared >= 2  # the bundled model writes valid JSON in a fence for at least these


REGEXES = [r"\(\d{3}\) \d{3}-\d{4}", r"\d{4}-\d{2}-\d{2}", r"[a-z]{1,10}@[a-z]{1,8}\.com",
           r"(\d{1,3}\.){3}\d{1,3}", r"[A-Z][a-z]+ [A-Z][a-z]+", r"(yes|no)"]
CHOICES = [["positive", "negative", "neutral"], ["A", "B", "C", "D"], ["Paris", "London", "Berlin"]]
ASKS = ["a US phone number", "a date", "an email address", "an IP address", "a full name", "yes or no"]


def test_regex_and_choice_outputs_match_greedy_and_sampled(lm):
    prompts, params, checks = [], [], []
    for temp in (0, 1.0):
        for i, (r, ask) in enumerate(zip(REGEXES, ASKS)):
            prompts.append(f"Write {ask}.")
            params.append(SamplingParams(max_tokens=32, temperature=temp, seed=i, guided_regex=r))
            checks.append(lambda t, r=r: re.fullmatch(r, t))
        for i, c in enumerate(CHOICES):
            prompts.append(f"Pick one of {', '.join(c)}.")
            params.append(SamplingParams(max_tokens=8, temperature=temp, seed=i, guided_choice=c))
            checks.append(lambda t, c=c: t in c)
    for p, out, ok in zip(params, _run(lm, prompts, params), checks):
        assert out.finish_reason == "stop" and not out.incomplete and ok(out.text), (p.guided_regex, out.text)


ARITH = """
start: expr
expr: term (("+" | "-") term)*
term: NUMBER | "(" expr ")"
NUMBER: /[0-9]{1,3}/
"""


def _tokens(lm, text):
    return lm.tokenizer.encode(text, add_special_tokens=False)


def test_a_grammar_rejects_what_it_should(lm):
    grammar = SamplingParams(guided_grammar=ARITH).grammar
    c = constrained.start(grammar, lm.tokenizer, lm.config.vocab_size)
    for t in _tokens(lm, "(1+2"):
        c.advance(t)
    assert not c.is_complete() and not c.is_finished()
    mask = c.allowed_mask()
    assert mask[_tokens(lm, ")")[0]] and mask[_tokens(lm, "3")[0]] and not mask[_tokens(lm, "*")[0]]
    with pytest.raises(LmlabError, match="rejected"):
        c.fork().advance(_tokens(lm, "*")[0])
    for t in _tokens(lm, ")"):
        c.advance(t)
    assert c.is_complete()


def test_grammar_generation_parses(lm):
    outs = _run(lm, ["Write a sum of three small numbers."] * 2,
                [SamplingParams(max_tokens=24, temperature=t, seed=1, guided_grammar=ARITH) for t in (0, 1.0)])
    for out in outs:
        assert out.finish_reason in ("stop", "length")
        if not out.incomplete:
            tree = ast.parse(out.text, mode="eval")
            assert all(isinstance(n, (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub))
                       for n in ast.walk(tree)), out.text


def test_n_best_of_logprobs_and_length_cut_off(lm):
    schema = SCHEMAS[0][1]
    p = prompt(*SCHEMAS[0])
    params = [SamplingParams(max_tokens=MAX, temperature=1.0, n=2, best_of=3, seed=7, guided_json=schema),
              SamplingParams(max_tokens=4, temperature=0, guided_json=schema),
              SamplingParams(max_tokens=4, temperature=0),
              SamplingParams(max_tokens=MAX, temperature=0, guided_json=schema, stop=[":"]),
              SamplingParams(max_tokens=8, temperature=0, logprobs=2, guided_choice=["maybe", "never"])]
    many, cut, free, stopped, choice = lm.engine.generate([lm.prompt_ids(p)] * 5, params)
    assert len(many.outputs) == 2
    for out in many.outputs:
        _check_json(out, schema)
    assert cut.outputs[0].finish_reason == "length" and cut.outputs[0].incomplete
    assert free.outputs[0].finish_reason == "length" and not free.outputs[0].incomplete
    assert stopped.outputs[0].finish_reason == "stop" and stopped.outputs[0].incomplete
    # log-probs are the model's own (unmasked): the first token's one equals the prompt log-prob
    c = choice.outputs[0]
    assert c.text in ("maybe", "never")
    first = c.token_ids[0]
    ref = lm.engine.generate([lm.prompt_ids(p) + [first]], SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
    assert c.logprobs[0][first] == pytest.approx(ref.prompt_logprobs[-1][first], abs=1e-4)


def test_the_last_streamed_delta_flags_a_cut_off_constrained_output(lm):
    schema = SCHEMAS[0][1]
    ids = lm.prompt_ids(prompt(*SCHEMAS[0]))
    rows = {"cut": SamplingParams(max_tokens=4, temperature=0, guided_json=schema),
            "stop string": SamplingParams(max_tokens=MAX, temperature=0, guided_json=schema, stop=[":"]),
            "whole": SamplingParams(max_tokens=MAX, temperature=0, guided_json=schema),
            "free cut": SamplingParams(max_tokens=4, temperature=0)}
    deltas = {name: [] for name in rows}
    e = lm.engine
    rids = {e.add_request(ids, p, on_delta=deltas[name].append): name for name, p in rows.items()}
    outs = {}
    while e.has_unfinished():
        outs.update({rids[o.request_id]: o.outputs[0] for o in e.step()})
    assert [outs[n].incomplete for n in rows] == [True, True, False, False]
    for name, ds in deltas.items():
        *before, last = ds
        assert last.finish_reason == outs[name].finish_reason and last.incomplete == outs[name].incomplete, name
        assert not any(d.incomplete or d.finish_reason for d in before), name
        assert "".join(d.text for d in ds) == outs[name].text


def test_a_constrained_request_joining_a_running_batch(lm, greedy_mixed):
    e = lm.engine
    free = e.add_request(lm.prompt_ids(FREE[1]), SamplingParams(max_tokens=MAX, temperature=0))
    for _ in range(3):
        e.step()
    what, schema = SCHEMAS[1]
    rid = e.add_request(lm.prompt_ids(prompt(what, schema)), SamplingParams(max_tokens=MAX, temperature=0,
                                                                             guided_json=schema))
    done = {}
    while e.has_unfinished():
        done.update({o.request_id: o for o in e.step()})
    assert done[rid].outputs[0].token_ids == greedy_mixed[0][1].token_ids
    assert done[free].outputs[0].token_ids == greedy_mixed[1][1].token_ids


@pytest.mark.parametrize("kw, message", [
    (dict(guided_json={"type": "foo"}), "invalid JSON schema.*foo"),
    (dict(guided_json={"type": "array", "uniqueItems": True}), "uniqueItems"),
    (dict(guided_json={"type": "string", "pattern": "(("}), "invalid JSON schema at pattern.*not a 'regex'"),
    (dict(guided_json={"type": "string", "pattern": "(?<=a)b"}), "look-around"),
    (dict(guided_json='{"type": '), "guided_json is not valid JSON"),
    (dict(guided_json=[1]), "guided_json must be a JSON schema"),
    (dict(guided_regex="a(b"), "regex 'a\\(b'.*unclosed group"),
    (dict(guided_grammar="start: a b"), "guided_grammar.*unknown name"),
    (dict(guided_grammar="start: \"x\" ("), "guided_grammar.*Expected token"),
    (dict(guided_choice=[]), "guided_choice must be a non-empty list"),
    (dict(guided_regex="a", guided_choice=["a"]), "at most one constraint"),
    (dict(structured_outputs={"jsn": {}}), "unsupported key.*jsn"),
    (dict(structured_outputs={"regex": "a"}, guided_regex="b"), "not both"),
])
def test_bad_constraints_are_errors_naming_the_problem(kw, message):
    with pytest.raises(LmlabError, match=message):
        SamplingParams(**kw)


def test_structured_outputs_is_the_same_as_guided_fields():
    schema = SCHEMAS[0][1]
    assert SamplingParams(structured_outputs={"json": schema}).grammar == SamplingParams(guided_json=schema).grammar
    assert SamplingParams(guided_json=json.dumps(schema)).grammar == SamplingParams(guided_json=schema).grammar
    assert (SamplingParams(structured_outputs={"choice": ["a", "b"]}).grammar
            == SamplingParams(guided_choice=["a", "b"]).grammar)
    assert SamplingParams(guided_json_object=True).grammar.kind == "json_object"
    assert SamplingParams().grammar is None


def test_json_whitespace_is_bounded(lm):
    """Blanks may not run on: after `{`, one line break and at most 20 spaces of indentation."""
    c = constrained.start(SamplingParams(guided_json_object=True).grammar, lm.tokenizer, lm.config.vocab_size)
    space, newline = _tokens(lm, " ")[0], _tokens(lm, "\n")[0]
    c.advance(_tokens(lm, "{")[0])
    c.advance(newline)
    assert not c.allowed_mask()[newline]
    n = 0
    while c.allowed_mask()[space]:
        c.advance(space)
        n += 1
        assert n <= 20
    assert n == 20 and not c.allowed_mask()[newline] and c.allowed_mask()[_tokens(lm, '"')[0]]
