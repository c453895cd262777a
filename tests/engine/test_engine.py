"""The continuous-batching Engine: greedy decoding equals transformers; requests that join or
leave a running batch, n/best_of, seeds, stop tokens and strings, streaming, penalties,
log-probs and input errors behave as documented. Tiny random models (vocabulary 97, context 64)
with a character-level tokenizer, except for one check on the bundled model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lmlab.engine.engine import Engine
from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError
from lmlab.tokenizer import Tokenizer

VOCAB = 97
CTX = 64
LLAMA = dict(model_type="llama", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=48, max_position_embeddings=CTX,
             bos_token_id=None, eos_token_id=None, pad_token_id=None)
CONFIGS = {
    "llama": LLAMA,
    "qwen2": dict(LLAMA, model_type="qwen2", tie_word_embeddings=True),
    "mistral_window": dict(LLAMA, model_type="mistral", sliding_window=6),
    "gpt2": dict(model_type="gpt2", vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=CTX,
                 bos_token_id=None, eos_token_id=None),
}

# Token id -> text: letters, two-letter pieces and " x" pieces, so stop strings can span tokens.
PIECES = (list("abcdefghijklmnopqrstuvwxyz") + ["".join(p) for p in itertools.product("aeiou", "nrst ")][:25]
          + [" " + c for c in "abcdefghijklmnopqrstuvwxyz"]
          + ["xy", "yz", "zz", ".", ",", "!", "?", " the", "ing", "qu", "th", "sh", "ch", "ck", "ee", "oo", "ll",
             "ss", "ph", "wh"])[:VOCAB]


def _char_tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer as Backend, decoders, models

    assert len(set(PIECES)) == VOCAB
    backend = Backend(models.WordLevel({t: i for i, t in enumerate(PIECES)}, unk_token="a"))
    backend.decoder = decoders.Fuse()
    return Tokenizer(backend)


@pytest.fixture(scope="module")
def tok():
    return _char_tokenizer()


@pytest.fixture(scope="module")
def hf(pair):
    return pair("llama")[0]


@pytest.fixture(scope="module")
def model(pair):
    return pair("llama")[1]


@pytest.fixture
def engine(model, tok):
    return Engine(model, tok)


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(1, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


PROMPTS = [_prompt(n, seed) for seed, n in enumerate([11, 3, 7, 1, 16, 5, 9, 2])]
GREEDY = SamplingParams(temperature=0.0, max_tokens=12)
SAMPLED = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_tokens=12)


def _alone(model, tok, prompt, params, eos=None):
    """The request's first completion from a fresh engine that runs nothing else."""
    return Engine(model, tok, eos).complete(prompt, params).outputs[0]


def _run(engine: Engine) -> dict[str, "object"]:
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            done[out.request_id] = out
    return done


def _hf_logits(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].double()


def _ref_greedy(hf, prompt, n, adjust=lambda logits, out: logits, stop=()) -> list[int]:
    """Greedy decoding with full forward passes through transformers; `adjust` edits each step's logits."""
    out: list[int] = []
    for _ in range(n):
        t = int(adjust(_hf_logits(hf, prompt + out)[-1].clone(), out).argmax())
        if t in stop:
            break
        out.append(t)
    return out


def _fresh_token(tokens: list[int], min_index: int = 2) -> tuple[int, int]:
    """(index, id) of the first token at or after min_index that does not occur before it."""
    for i in range(min_index, len(tokens)):
        if tokens[i] not in tokens[:i]:
            return i, tokens[i]
    pytest.fail(f"no fresh token in {tokens}")


# ---- agreement with transformers ----------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_continuation_equals_transformers_generate(pair, tok, name):
    hf, ours = pair(name)
    n = 20
    prompt = PROMPTS[0]
    ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      do_sample=False, max_new_tokens=n, eos_token_id=None, pad_token_id=0)
    ref = ref[0, len(prompt):].tolist()
    assert len(ref) == n  # no eos: neither side can stop early
    [out] = Engine(ours, tok).generate([prompt], SamplingParams(temperature=0.0, max_tokens=n))
    assert out.outputs[0].token_ids == ref
    assert out.outputs[0].finish_reason == "length" and out.prompt_token_ids == prompt and out.finished


@pytest.mark.parametrize("fmt", ["fp32", "int8", "int8-reduction"])
def test_compiled_decoding_gives_the_eager_tokens(model, tok, fmt, monkeypatch):
    # int8 one-row decoding takes a different matmul when compiled on AVX-512 CPUs
    # (quant.Int8Linear's reduction); "int8-reduction" forces it whatever this CPU is
    import copy

    from lmlab.model import quant

    if fmt == "int8-reduction":
        monkeypatch.setattr(quant, "GEMV_ROWS", 1)
    m = quant.convert_weights(copy.deepcopy(model), fmt.split("-")[0])
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    for prompts in ([PROMPTS[0]], PROMPTS[:3]):
        eager = [o.outputs[0].token_ids for o in Engine(m, tok).generate(prompts, params)]
        compiled = Engine(m, tok, compile=True)
        assert [o.outputs[0].token_ids for o in compiled.generate(prompts, params)] == eager
        assert compiled.decode_forward is not m  # compiled, not the eager fallback


def test_repetition_penalty_greedy_equals_transformers_generate(hf, model, tok):
    prompt, n = PROMPTS[4], 20
    ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      do_sample=False, max_new_tokens=n, eos_token_id=None, pad_token_id=0,
                      repetition_penalty=1.8)[0, len(prompt):].tolist()
    ours = _alone(model, tok, prompt, SamplingParams(temperature=0.0, max_tokens=n, repetition_penalty=1.8))
    assert ours.token_ids == ref
    assert ref != _alone(model, tok, prompt, SamplingParams(temperature=0.0, max_tokens=n)).token_ids


# ---- log-probs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.0, max_tokens=8, logprobs=5),
    SamplingParams(temperature=3.0, max_tokens=8, logprobs=2, seed=5),  # chosen ids often outside the top 2
    SamplingParams(temperature=1.0, top_k=3, max_tokens=6, logprobs=0, seed=6),
], ids=["greedy-top5", "hot-top2", "chosen-only"])
def test_logprobs_are_transformers_log_softmax_with_the_chosen_id(hf, model, tok, params):
    prompt = PROMPTS[0]
    out = _alone(model, tok, prompt, params)
    assert len(out.logprobs) == len(out.token_ids) == params.max_tokens
    k = params.logprobs
    outside = 0
    total = 0.0
    for i, (t, lp) in enumerate(zip(out.token_ids, out.logprobs)):
        ref = _hf_logits(hf, prompt + out.token_ids[:i])[-1].log_softmax(-1)
        top = set(ref.topk(k).indices.tolist()) if k else set()
        assert set(lp) == top | {t}, f"token {i}"
        for j, v in lp.items():
            assert abs(v - ref[j].item()) <= 1e-4, f"token {i}, id {j}"
        outside += t not in top
        total += lp[t]
    assert out.cumulative_logprob == pytest.approx(total, abs=1e-4)
    if k == 2:
        assert outside > 0, "guard: the case should draw ids outside the top k"


def test_prompt_logprobs_are_transformers_log_softmax_of_each_prompt_token(hf, model, tok):
    prompt = PROMPTS[0]
    res = Engine(model, tok).complete(prompt, SamplingParams(temperature=0.0, max_tokens=2, prompt_logprobs=3))
    ref = _hf_logits(hf, prompt).log_softmax(-1)
    pl = res.prompt_logprobs
    assert len(pl) == len(prompt) and pl[0] is None
    for i in range(1, len(prompt)):
        assert set(pl[i]) == set(ref[i - 1].topk(3).indices.tolist()) | {prompt[i]}
        for j, v in pl[i].items():
            assert abs(v - ref[i - 1, j].item()) <= 1e-4, f"prompt token {i}, id {j}"
    # Asking for prompt log-probs changes nothing else.
    plain = _alone(model, tok, prompt, SamplingParams(temperature=0.0, max_tokens=2))
    assert res.outputs[0].token_ids == plain.token_ids
    assert Engine(model, tok).complete(prompt, GREEDY).prompt_logprobs is None


# ---- batching -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama", "gpt2", "mistral_window"])  # window: per-row masks in the slot cache
def test_batch_of_varied_prompts_gives_each_prompt_its_own_greedy_tokens(pair, tok, name):
    model = pair(name)[1]
    batch = Engine(model, tok).generate(PROMPTS, GREEDY)
    for i, (p, g) in enumerate(zip(PROMPTS, batch)):
        assert g.outputs[0].token_ids == _alone(model, tok, p, GREEDY).token_ids, f"row {i} (prompt length {len(p)})"


@pytest.mark.parametrize("budget,prefills", [(10 ** 6, 1), (16, 3), (1, 4)])
def test_admitted_prompts_share_one_padded_prefill_within_the_token_budget(model, tok, budget, prefills):
    # Prompts of lengths 11, 3, 7, 16 (padded to 11, 11 and 16 rows), one with prompt log-probs
    # and one with two seeded samples: each must get exactly what it gets alone.
    idx = [0, 1, 2, 4]
    params = [GREEDY, SamplingParams(temperature=0.0, max_tokens=4, prompt_logprobs=2),
              SamplingParams(temperature=1.0, seed=7, n=2, max_tokens=6), GREEDY]
    engine = Engine(model, tok, prefill_tokens=budget)
    shapes = []
    hook = model.embed.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    try:
        ids = [engine.add_request(PROMPTS[i], p) for i, p in zip(idx, params)]
        engine.step()
    finally:
        hook.remove()
    assert len([s for s in shapes if s[1] > 1]) == prefills  # prompt passes in the first step
    assert sum(s[0] for s in shapes if s[1] > 1) == 4 and shapes[-1] == (5, 1)  # then one decode of 5 rows
    done = {}
    while engine.has_unfinished():
        done.update((o.request_id, o) for o in engine.step())
    for rid, i, p in zip(ids, idx, params):
        alone = Engine(model, tok).complete(PROMPTS[i], p)
        assert [c.token_ids for c in done[rid].outputs] == [c.token_ids for c in alone.outputs], f"prompt {i}"
        if p.prompt_logprobs:
            for got, want in zip(done[rid].prompt_logprobs[1:], alone.prompt_logprobs[1:]):
                assert got.keys() == want.keys()
                assert max(abs(got[t] - want[t]) for t in got) < 1e-5


def test_identical_prompts_in_one_admission_are_prefilled_once_and_each_gets_its_alone_output(model, tok):
    # Four requests, three of them on one prompt (as RL rollouts submit a prompt G times), with a
    # greedy one, seeded samples and prompt log-probs among them.
    reqs = [(PROMPTS[0], GREEDY), (PROMPTS[2], GREEDY),
            (PROMPTS[0], SamplingParams(temperature=1.0, seed=3, n=2, max_tokens=6)),
            (PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=4, prompt_logprobs=1))]
    engine = Engine(model, tok)
    shapes = []
    hook = model.embed.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    try:
        ids = [engine.add_request(p, sp) for p, sp in reqs]
        engine.step()
    finally:
        hook.remove()
    assert shapes[0] == (2, len(PROMPTS[0])) and shapes[-1] == (5, 1)  # two distinct prompts, 5 sequences
    done = {}
    while engine.has_unfinished():
        done.update((o.request_id, o) for o in engine.step())
    for rid, (prompt, sp) in zip(ids, reqs):
        alone = Engine(model, tok).complete(prompt, sp)
        assert [c.token_ids for c in done[rid].outputs] == [c.token_ids for c in alone.outputs]
        assert done[rid].prompt_token_ids == prompt
        if sp.prompt_logprobs:
            assert [d and sorted(d) for d in done[rid].prompt_logprobs] == \
                [d and sorted(d) for d in alone.prompt_logprobs]


@pytest.mark.parametrize("name,params", [("llama", GREEDY), ("mistral_window", GREEDY), ("llama", SAMPLED)],
                         ids=["greedy", "greedy-window", "seeded"])
def test_requests_added_between_steps_give_their_alone_tokens(pair, tok, name, params):
    model = pair(name)[1]
    engine = Engine(model, tok)
    done = {}
    schedule = {0: [0, 1], 2: [2], 3: [3, 4], 7: [5]}  # step -> prompts added before it
    step = 0
    while step in schedule or any(s > step for s in schedule) or engine.has_unfinished():
        for i in schedule.get(step, []):
            engine.add_request(PROMPTS[i], params, request_id=str(i))
        for out in engine.step():
            done[out.request_id] = out
        step += 1
    assert sorted(done) == ["0", "1", "2", "3", "4", "5"]
    for i in range(6):
        assert done[str(i)].outputs[0].token_ids == _alone(model, tok, PROMPTS[i], params).token_ids, f"prompt {i}"


def test_finished_sequences_free_their_slots_for_waiting_requests(model, tok):
    engine = Engine(model, tok, max_batch=2)
    lengths = [3, 6, 4, 5, 2]
    for i, n in enumerate(lengths):
        engine.add_request(PROMPTS[i], SamplingParams(temperature=0.0, max_tokens=n), request_id=str(i))
    done, running, order = {}, [], []
    while engine.has_unfinished():
        for out in engine.step():
            done[out.request_id] = out
            order.append(out.request_id)
        running.append(len(engine.running))
    assert max(running) == 2 and engine.cache.k[0].shape[0] == 2  # never more than two slots
    assert len(engine.cache.lengths) == 2
    assert order[0] == "0"  # the shortest of the first two finishes first and lets "2" in
    for i, n in enumerate(lengths):
        assert done[str(i)].outputs[0].token_ids == _alone(model, tok, PROMPTS[i], GREEDY).token_ids[:n]


def test_abort_ends_a_running_request_and_frees_its_slot(model, tok):
    engine = Engine(model, tok)
    deltas = []
    a = engine.add_request(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=3), on_delta=deltas.append)
    b = engine.add_request(PROMPTS[1], GREEDY)
    assert engine.step() == []  # prefill + one decode: two tokens each
    engine.abort(a)
    finished = engine.step()
    assert [o.request_id for o in finished] == [a]
    out = finished[0].outputs[0]
    assert out.finish_reason == "abort" and out.stop_reason is None
    assert out.token_ids == _alone(model, tok, PROMPTS[0], GREEDY).token_ids[:2]
    assert [s.request.id for s in engine.running] == [b] and engine.cache.active == 1
    assert [d.finish_reason for d in deltas] == [None, None, "abort"]  # nothing after the abort
    rest = _run(engine)
    assert rest[b].outputs[0].token_ids == _alone(model, tok, PROMPTS[1], GREEDY).token_ids
    engine.abort(a)  # finished and gone: a no-op
    engine.abort("no-such-request")
    assert not engine.has_unfinished()


def test_abort_of_a_waiting_request_and_slot_handover(model, tok):
    engine = Engine(model, tok, max_batch=1)
    a = engine.add_request(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=30))
    b = engine.add_request(PROMPTS[1], GREEDY)
    c = engine.add_request(PROMPTS[2], GREEDY)
    engine.step()
    engine.abort(c)  # still waiting
    engine.abort(a)  # running: its slot goes to b in the same step
    finished = {o.request_id: o for o in engine.step()}
    assert set(finished) == {a, c}
    assert finished[c].outputs[0].finish_reason == "abort" and finished[c].outputs[0].token_ids == []
    assert finished[a].outputs[0].finish_reason == "abort"
    assert [s.request.id for s in engine.running] == [b]
    assert _run(engine)[b].outputs[0].token_ids == _alone(model, tok, PROMPTS[1], GREEDY).token_ids


# ---- n, best_of and seeds -----------------------------------------------------------------------

def test_n_samples_with_a_seed_differ_and_are_reproducible(model, tok):
    params = SamplingParams(temperature=1.0, max_tokens=10, n=3, seed=7)
    a = Engine(model, tok).complete(PROMPTS[0], params)
    b = Engine(model, tok).generate([PROMPTS[3], PROMPTS[0]], params)[1]  # other work around it
    assert [c.index for c in a.outputs] == [0, 1, 2]
    samples = [c.token_ids for c in a.outputs]
    assert len({tuple(s) for s in samples}) == 3
    assert [c.token_ids for c in b.outputs] == samples
    other = Engine(model, tok).complete(PROMPTS[0], SamplingParams(temperature=1.0, max_tokens=10, n=3, seed=8))
    assert [c.token_ids for c in other.outputs] != samples


def test_best_of_returns_the_n_highest_cumulative_logprobs(model, tok):
    all5 = Engine(model, tok).complete(PROMPTS[2], SamplingParams(temperature=1.0, max_tokens=8, n=5, seed=3)).outputs
    assert len({c.cumulative_logprob for c in all5}) == 5
    best = Engine(model, tok).complete(PROMPTS[2], SamplingParams(temperature=1.0, max_tokens=8, n=2, best_of=5,
                                                                  seed=3)).outputs
    ranked = sorted(all5, key=lambda c: c.cumulative_logprob, reverse=True)[:2]
    assert [c.token_ids for c in best] == [c.token_ids for c in ranked]
    assert [c.index for c in best] == [0, 1]
    assert best[0].cumulative_logprob >= best[1].cumulative_logprob


def test_best_of_with_a_scorer_returns_the_scorers_best(model, tok):
    prompt = PROMPTS[2]
    all5 = Engine(model, tok).complete(prompt, SamplingParams(temperature=1.0, max_tokens=8, n=5, seed=3)).outputs
    seen = []

    def scorer(p, c):  # prefers low log-probability: the opposite of the default
        seen.append(list(p))
        return -c.cumulative_logprob

    engine = Engine(model, tok)
    engine.add_request(prompt, SamplingParams(temperature=1.0, max_tokens=8, n=2, best_of=5, seed=3), scorer=scorer)
    [res] = _run(engine).values()
    worst = sorted(all5, key=lambda c: c.cumulative_logprob)[:2]
    assert [c.token_ids for c in res.outputs] == [c.token_ids for c in worst]
    assert seen and all(p == prompt for p in seen)
    via_generate = Engine(model, tok).generate([prompt], SamplingParams(temperature=1.0, max_tokens=8, n=2,
                                                                        best_of=5, seed=3), scorer=scorer)
    assert [c.token_ids for c in via_generate[0].outputs] == [c.token_ids for c in worst]


def test_seeded_sampling_is_reproducible_and_not_greedy(model, tok):
    a = _alone(model, tok, PROMPTS[0], SAMPLED).token_ids
    assert a == _alone(model, tok, PROMPTS[0], SAMPLED).token_ids
    other = SamplingParams(temperature=1.0, top_p=0.95, seed=99, max_tokens=12)
    assert a != _alone(model, tok, PROMPTS[0], other).token_ids
    assert _alone(model, tok, PROMPTS[4], SAMPLED).token_ids != _alone(model, tok, PROMPTS[4], GREEDY).token_ids


def test_same_seed_same_tokens_alone_or_in_a_batch_of_8(model, tok):
    mixed = [
        SAMPLED,
        SamplingParams(temperature=0.0, max_tokens=5),
        SamplingParams(temperature=0.7, top_k=5, seed=1, max_tokens=9),
        SamplingParams(temperature=1.3, min_p=0.05, seed=2, max_tokens=12, repetition_penalty=1.2),
        SamplingParams(temperature=1.0, typical_p=0.9, seed=3, max_tokens=7, presence_penalty=0.5),
        SAMPLED,
        SamplingParams(temperature=1.0, seed=4, max_tokens=12, n=2, logit_bias={5: 2.0}),
        SamplingParams(temperature=0.9, top_p=0.8, seed=5, max_tokens=3, frequency_penalty=1.0),
    ]
    prompts = [PROMPTS[4]] + PROMPTS[1:]
    batch = Engine(model, tok).generate(prompts, mixed)
    for i, (p, sp, res) in enumerate(zip(prompts, mixed, batch)):
        alone = Engine(model, tok).complete(p, sp)
        assert [c.token_ids for c in res.outputs] == [c.token_ids for c in alone.outputs], f"request {i}"
    assert batch[0].outputs[0].token_ids == _alone(model, tok, PROMPTS[4], SAMPLED).token_ids


def test_n_copies_of_a_processed_prompt_each_get_the_processing_once(model, tok, hf):
    # The n samples of a request start from one prefill; each must be penalised/biased on its own.
    first = _hf_logits(hf, PROMPTS[0])[-1]
    top2 = first.topk(2).indices.tolist()
    gap = (first[top2[0]] - first[top2[1]]).item()
    bias = {top2[1]: 0.6 * gap}  # once: the argmax stays; twice or more: it flips
    for params in [SamplingParams(temperature=0.0, max_tokens=4, logit_bias=bias),
                   SamplingParams(temperature=0.0, max_tokens=4, repetition_penalty=1.5),
                   SamplingParams(temperature=0.0, max_tokens=4, min_tokens=2, stop_token_ids=[top2[0]])]:
        one = _alone(model, tok, PROMPTS[0], params).token_ids
        params.n = 3
        many = Engine(model, tok).complete(PROMPTS[0], params).outputs
        assert [c.token_ids for c in many] == [one] * 3, params
    assert _alone(model, tok, PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=1, logit_bias=bias)
                  ).token_ids == [top2[0]]


def test_engine_samples_the_distribution_of_the_model_logits(hf, model, tok):
    from scipy.stats import chisquare

    prompt = PROMPTS[5]
    params = SamplingParams(temperature=0.8, top_k=6, max_tokens=1, n=32)
    torch.manual_seed(0)
    res = Engine(model, tok).generate([prompt] * 80, params)
    counts = np.bincount([c.token_ids[0] for r in res for c in r.outputs], minlength=VOCAB)
    logits = _hf_logits(hf, prompt)[-1].numpy() / 0.8
    kept = np.argsort(-logits)[:6]
    p = np.exp(logits[kept] - logits[kept].max())
    p /= p.sum()
    assert counts.sum() == counts[kept].sum() == 80 * 32  # nothing outside the top 6
    assert chisquare(counts[kept], p * counts.sum()).pvalue > 0.001


# ---- stop tokens, lengths, eos -------------------------------------------------------------------

def test_stop_token_ends_the_sequence_with_reason_stop_and_is_not_included(model, tok):
    free = _alone(model, tok, PROMPTS[0], GREEDY).token_ids
    k, stop_id = _fresh_token(free)
    g = _alone(model, tok, PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=12,
                                                      stop_token_ids=[stop_id, VOCAB + 5]))
    assert (g.finish_reason, g.stop_reason) == ("stop", stop_id)
    assert g.token_ids == free[:k]
    assert g.text == tok.decode(free[:k])


def test_stop_token_ends_only_its_own_request(model, tok):
    a, b = _prompt(6, 1), _prompt(6, 2)
    free_a, free_b = _alone(model, tok, a, GREEDY).token_ids, _alone(model, tok, b, GREEDY).token_ids
    k, stop_id = next((i, t) for i, t in enumerate(free_a) if i >= 2 and t not in free_a[:i] and t not in free_b)
    ra, rb = Engine(model, tok).generate([a, b], SamplingParams(temperature=0.0, max_tokens=12,
                                                               stop_token_ids=[stop_id]))
    assert (ra.outputs[0].finish_reason, ra.outputs[0].token_ids) == ("stop", free_a[:k])
    assert (rb.outputs[0].finish_reason, rb.outputs[0].token_ids) == ("length", free_b)


def test_stop_token_as_first_token_gives_empty_output(model, tok):
    first = _alone(model, tok, PROMPTS[0], GREEDY).token_ids[0]
    g = _alone(model, tok, PROMPTS[0], SamplingParams(temperature=0.0, stop_token_ids=[first]))
    assert (g.finish_reason, g.token_ids, g.text) == ("stop", [], "")


@pytest.mark.parametrize("n", [1, 5, 12])
def test_max_tokens_ends_with_reason_length(model, tok, n):
    g = _alone(model, tok, PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=n))
    assert (g.finish_reason, g.stop_reason) == ("length", None)
    assert g.token_ids == _alone(model, tok, PROMPTS[0], GREEDY).token_ids[:n]  # a shorter limit truncates
    assert g.text == tok.decode(g.token_ids)


def test_context_limit_caps_new_tokens_with_reason_length(model, tok):
    g = _alone(model, tok, _prompt(CTX - 3, 7), SamplingParams(temperature=0.0, max_tokens=50))
    assert (g.finish_reason, len(g.token_ids)) == ("length", 3)
    g = _alone(model, tok, _prompt(CTX - 1, 3), GREEDY)
    assert (g.finish_reason, len(g.token_ids)) == ("length", 1)


def test_eos_stops_and_ignore_eos_goes_on(model, tok):
    free = _alone(model, tok, PROMPTS[0], GREEDY).token_ids
    k, eos = _fresh_token(free)
    g = _alone(model, tok, PROMPTS[0], GREEDY, eos=[eos])
    assert (g.finish_reason, g.stop_reason, g.token_ids) == ("stop", eos, free[:k])
    g = _alone(model, tok, PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True), eos=[eos])
    assert (g.finish_reason, g.token_ids) == ("length", free)
    # ignore_eos keeps explicit stop ids
    g = _alone(model, tok, PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True,
                                                      stop_token_ids=[eos]), eos=[eos])
    assert g.token_ids == free[:k]


def test_min_tokens_masks_eos_and_stop_ids_until_reached(hf, model, tok):
    prompt = PROMPTS[0]
    free = _alone(model, tok, prompt, GREEDY).token_ids
    eos, stop = free[0], free[1]
    params = SamplingParams(temperature=0.0, max_tokens=12, min_tokens=4, stop_token_ids=[stop])

    def mask(logits, out):
        if len(out) < 4:
            logits[[eos, stop]] = float("-inf")
        return logits

    ref = _ref_greedy(hf, prompt, 12, mask, stop={eos, stop})
    g = _alone(model, tok, prompt, params, eos=[eos])
    assert g.token_ids == ref and len(ref) >= 4
    assert not {eos, stop} & set(ref[:4])
    assert _alone(model, tok, prompt, GREEDY, eos=[eos]).token_ids == []  # guard: without min_tokens, none


# ---- penalties and bias (against a reference decoding loop) --------------------------------------

def test_presence_and_frequency_penalties_count_the_output_only(hf, model, tok):
    prompt = PROMPTS[4]
    params = SamplingParams(temperature=0.0, max_tokens=16, presence_penalty=0.7, frequency_penalty=1.1)

    def penalise(logits, out):
        counts = torch.bincount(torch.tensor(out, dtype=torch.long), minlength=VOCAB).double()
        return logits - 1.1 * counts - 0.7 * (counts > 0).double()

    ref = _ref_greedy(hf, prompt, 16, penalise)
    assert _alone(model, tok, prompt, params).token_ids == ref
    assert ref != _ref_greedy(hf, prompt, 16)  # guard: the penalties changed something


def test_logit_bias_shifts_the_listed_ids(hf, model, tok):
    prompt = PROMPTS[0]
    free = _alone(model, tok, prompt, GREEDY).token_ids
    bias = {free[0]: -3.0, 11: 2.5}

    def add(logits, out):
        logits[free[0]] -= 3.0
        logits[11] += 2.5
        return logits

    ref = _ref_greedy(hf, prompt, 12, add)
    assert _alone(model, tok, prompt, SamplingParams(temperature=0.0, max_tokens=12, logit_bias=bias)).token_ids == ref
    assert ref != free
    forced = _alone(model, tok, prompt, SamplingParams(temperature=1.0, seed=0, max_tokens=5, logit_bias={42: 100}))
    assert forced.token_ids == [42] * 5


# ---- stop strings and streaming -----------------------------------------------------------------

def _texts(ids):
    return [PIECES[i] for i in ids]


def _split_stop(free: list[int]) -> tuple[str, int]:
    """A 2-character stop string that first occurs across a token boundary, and where it starts."""
    pieces = _texts(free)
    text = "".join(pieces)
    pos = 0
    for k in range(1, len(pieces)):
        pos += len(pieces[k - 1])
        s = text[pos - 1:pos + 1]
        if text.find(s) == pos - 1 and not any(s in p for p in pieces):
            return s, pos - 1
    pytest.fail(f"no boundary-spanning stop string in {pieces}")


@pytest.fixture(scope="module")
def free(model, tok):
    """A 24-token greedy continuation of PROMPTS[0] and its text."""
    out = _alone(model, tok, PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=24))
    assert out.text == "".join(_texts(out.token_ids))
    return out.token_ids, out.text


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_across_tokens_ends_the_text(model, tok, free, include):
    ids, text = free
    s, i = _split_stop(ids)
    g = _alone(model, tok, PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=24, stop=[s, "#never"],
                                                      include_stop_str_in_output=include))
    assert (g.finish_reason, g.stop_reason) == ("stop", s)
    assert g.text == text[:i + len(s) if include else i]
    # the tokens run up to the one that completed the stop string
    ends = np.cumsum([len(p) for p in _texts(ids)])
    assert g.token_ids == ids[:int(np.searchsorted(ends, i + len(s))) + 1]


def test_stream_never_shows_any_part_of_a_stop_string(model, tok, free):
    ids, text = free
    s, i = _split_stop(ids)
    early = text[1:3]  # occurs early; with a character no token has, it never completes
    deltas = []

    def on_delta(d):
        deltas.append(d)
        shown = "".join(x.text for x in deltas)
        assert text[:i].startswith(shown), f"streamed {shown!r} beyond {text[:i]!r}"

    engine = Engine(model, tok)
    rid = engine.add_request(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=24, stop=[early + "#", s]),
                             on_delta=on_delta)
    [res] = _run(engine).values()
    out = res.outputs[0]
    assert out.text == text[:i] and out.stop_reason == s
    assert "".join(d.text for d in deltas) == out.text
    assert all(d.request_id == rid and d.index == 0 for d in deltas)
    assert [d.finish_reason for d in deltas] == [None] * (len(deltas) - 1) + ["stop"]
    assert [d.token_id for d in deltas] == out.token_ids


def test_held_back_text_is_released_when_no_stop_string_completes(model, tok, free):
    ids, text = free
    tail = text[-1] + "#"  # the very last character could start it, so the stream holds it back
    deltas = []
    engine = Engine(model, tok)
    engine.add_request(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=24, stop=[tail]),
                       on_delta=deltas.append)
    out = next(iter(_run(engine).values())).outputs[0]
    assert (out.finish_reason, out.text) == ("length", text)
    assert "".join(d.text for d in deltas) == text
    assert deltas[-1].finish_reason == "length"


def test_held_back_text_is_kept_when_a_stop_token_ends_the_sequence(model, tok, free):
    ids, text = free
    k, stop_id = _fresh_token(ids, 3)
    before = "".join(_texts(ids[:k]))
    deltas = []
    engine = Engine(model, tok)
    engine.add_request(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=24, stop=[before[-1] + "#"],
                                                  stop_token_ids=[stop_id]), on_delta=deltas.append)
    out = next(iter(_run(engine).values())).outputs[0]
    assert (out.finish_reason, out.stop_reason, out.token_ids) == ("stop", stop_id, ids[:k])
    assert out.text == before
    assert "".join(d.text for d in deltas) == before


def test_deltas_stream_every_token_in_step_order(model, tok):
    prompts = [_prompt(6, 1), _prompt(6, 2), _prompt(6, 3)]
    free = [_alone(model, tok, p, GREEDY).token_ids for p in prompts]
    k, stop_id = next((i, t) for i, t in enumerate(free[0]) if i >= 2 and t not in free[0][:i])
    seen = []
    engine = Engine(model, tok)
    ids = [engine.add_request(p, SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=[stop_id]),
                              on_delta=seen.append) for p in prompts]
    done = _run(engine)
    for rid in ids:
        out = done[rid].outputs[0]
        mine = [d for d in seen if d.request_id == rid]
        assert [d.token_id for d in mine if d.token_id is not None] == out.token_ids
        assert "".join(d.text for d in mine) == out.text
        assert mine[-1].finish_reason == out.finish_reason
    assert stop_id not in [d.token_id for d in seen if d.request_id == ids[0]]  # the stop token is never streamed
    steps, order = {}, []
    for d in seen:
        steps[d.request_id] = steps.get(d.request_id, -1) + 1
        order.append(steps[d.request_id])
    assert order == sorted(order)  # every request reports step s before any reports step s + 1


# ---- invalid input ------------------------------------------------------------------------------

def test_empty_prompt_raises_lmlab_error(engine):
    with pytest.raises(LmlabError, match="empty prompt"):
        engine.add_request([], GREEDY)
    with pytest.raises(LmlabError, match="empty prompt"):
        engine.generate([PROMPTS[0], []], GREEDY)


@pytest.mark.parametrize("extra", [0, 5])
def test_prompt_filling_the_context_raises_lmlab_error(engine, extra):
    with pytest.raises(LmlabError, match=f"{CTX + extra} tokens.*context is {CTX} tokens"):
        engine.add_request(_prompt(CTX + extra, 3), GREEDY)
    assert not engine.has_unfinished()


def test_more_samples_than_the_batch_and_duplicate_ids_raise_lmlab_error(model, tok):
    engine = Engine(model, tok, max_batch=4)
    with pytest.raises(LmlabError, match="n/best_of = 5 exceeds the engine's batch of 4"):
        engine.add_request(PROMPTS[0], SamplingParams(n=2, best_of=5))
    engine.add_request(PROMPTS[0], GREEDY, request_id="x")
    with pytest.raises(LmlabError, match="duplicate request id 'x'"):
        engine.add_request(PROMPTS[1], GREEDY, request_id="x")


@pytest.mark.parametrize("kwargs,message", [
    (dict(top_p=0.0), r"top_p must be in \(0, 1\], got 0"),
    (dict(top_p=1.01), r"top_p must be in \(0, 1\], got 1.01"),
    (dict(temperature=-1.0), r"temperature must be >= 0 \(0 = greedy\), got -1.0"),
    (dict(min_p=1.5), r"min_p must be in \[0, 1\], got 1.5"),
    (dict(stop=5), r"stop must be a string or a list of non-empty strings, got 5"),
    (dict(n=4, best_of=3), r"best_of must be >= n=4, got 3"),
])
def test_bad_params_raise_lmlab_error_with_the_valid_range(kwargs, message):
    with pytest.raises(LmlabError, match=message):
        SamplingParams(**kwargs)


# ---- the bundled model --------------------------------------------------------------------------

def test_bundled_model_batch_of_two_equals_transformers_greedy(bundled_lm, bundled_folder):
    transformers = pytest.importorskip("transformers")
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(str(bundled_folder), dtype=torch.float32).eval()
    prompts = [bundled_lm.prompt_ids("What is the capital of France?"),
               bundled_lm.prompt_ids("Write a haiku about the sea.", raw=True)]
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    outs = bundled_lm.engine.generate(prompts, params)
    for ids, out in zip(prompts, outs):
        with torch.no_grad():
            ref = ref_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     do_sample=False, max_new_tokens=32, eos_token_id=None,
                                     pad_token_id=0)[0, len(ids):].tolist()
        assert out.outputs[0].token_ids == ref


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_decode_steps_through_lmlabs_attention_kernel_give_the_same_tokens(pair, tok, arch):
    # On the CPU, lmlab.cpu.optimize lets attention take lmlab's kernel for one query per row
    # (kernels.decode_attention): the same greedy tokens as torch's attention, padding masks
    # (prompts of unequal length) and sliding windows included.
    from lmlab.cpu import kernels
    from lmlab.model.transformer import Attention

    if not kernels.available():
        pytest.skip("lmlab's kernels are not built (no C++ toolchain, or LMLAB_NO_KERNELS=1)")
    model = pair(arch)[1]
    layers = [m for m in model.modules() if isinstance(m, Attention)]

    def run(kernel: bool):
        for m in layers:
            m.decode_attention = kernels.decode_attention if kernel else None
        try:
            with torch.profiler.profile() as prof:
                outs = Engine(model, tok).generate(PROMPTS[:4], SamplingParams(temperature=0.0, max_tokens=20,
                                                                               ignore_eos=True))
        finally:
            for m in layers:
                del m.decode_attention
        used = any(e.name == "lmlab_cpu::decode_attention" for e in prof.events())
        return [o.outputs[0].token_ids for o in outs], used

    assert layers
    (ours, used), (torchs, unused) = run(True), run(False)
    assert used and not unused
    assert ours == torchs


def test_plain_greedy_steps_pick_tokens_in_one_kernel_with_the_same_tokens_and_logprobs(pair, tok):
    # Plain greedy rows without requested logprobs take kernels.greedy_pick instead of
    # log_softmax + argmax + gather; tokens and cumulative log-probs must not change. A row that
    # asks for logprobs sends its step through the general path.
    from lmlab.cpu import kernels

    if not kernels.available():
        pytest.skip("lmlab's kernels are not built (no C++ toolchain, or LMLAB_NO_KERNELS=1)")
    model = pair("llama")[1]

    def run(fused: bool, logprobs=None):
        engine = Engine(model, tok, greedy_pick=kernels.greedy_pick if fused else None)
        with torch.profiler.profile() as prof:
            outs = engine.generate(PROMPTS[:4], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True,
                                                               logprobs=logprobs))
        used = any(e.name == "lmlab_cpu::greedy_pick" for e in prof.events())
        return [o.outputs[0] for o in outs], used

    (ours, used), (general, unused), (_, with_logprobs) = run(True), run(False), run(True, logprobs=2)
    assert used and not unused and not with_logprobs
    assert [c.token_ids for c in ours] == [c.token_ids for c in general]
    for a, b in zip(ours, general):
        assert a.cumulative_logprob == pytest.approx(b.cumulative_logprob, abs=1e-4)
