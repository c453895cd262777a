"""generate(): greedy decoding equals transformers; batching, padding and seeds change no row's
tokens; stop tokens, length limits and the on_token callback behave as documented."""

from __future__ import annotations

import pytest
import torch

from lmlab.engine.generate import generate
from lmlab.engine.sampling import SamplingParams
from lmlab.errors import LmlabError
from lmlab.model.io.hf import load_model

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


def _random_hf(kw: dict, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    kw = dict(kw)
    cfg = transformers.AutoConfig.for_model(kw.pop("model_type"), **kw)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """name -> (transformers model, our model loaded from its folder); built once per module."""
    built = {}

    def get(name):
        if name not in built:
            hf = _random_hf(CONFIGS[name])
            folder = tmp_path_factory.mktemp(name)
            hf.save_pretrained(folder)
            built[name] = hf, load_model(folder)
        return built[name]

    return get


@pytest.fixture(scope="module")
def model(pair):
    return pair("llama")[1]


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(1, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


PROMPTS = [_prompt(n, seed) for seed, n in enumerate([11, 3, 7, 1, 16, 5, 9, 2])]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)
SAMPLED = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_new_tokens=12)


def _alone(model, prompt, params):
    return generate(model, [prompt], params)[0].token_ids


# ---- agreement with transformers ----------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_continuation_equals_transformers_generate(pair, name):
    hf, ours = pair(name)
    n = 20
    prompt = PROMPTS[0]
    ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      do_sample=False, max_new_tokens=n, eos_token_id=None, pad_token_id=0)
    ref = ref[0, len(prompt):].tolist()
    assert len(ref) == n  # no eos: neither side can stop early
    [out] = generate(ours, [prompt], SamplingParams(temperature=0.0, max_new_tokens=n))
    assert out.token_ids == ref
    assert out.finish_reason == "length" and out.prompt_tokens == len(prompt)


# ---- batching and padding -----------------------------------------------------------------------

def test_batch_of_equal_length_prompts_gives_each_prompt_its_own_tokens(model):
    prompts = [_prompt(6, seed) for seed in range(4)]
    batch = generate(model, prompts, GREEDY)
    for p, g in zip(prompts, batch):
        assert g.token_ids == _alone(model, p, GREEDY)


@pytest.mark.parametrize("name", ["llama", "gpt2"])  # gpt2: learned positions must skip the padding
def test_left_padded_batch_gives_each_prompt_its_own_greedy_tokens(pair, name):
    model = pair(name)[1]
    batch = generate(model, PROMPTS, GREEDY)
    for i, (p, g) in enumerate(zip(PROMPTS, batch)):
        assert g.token_ids == _alone(model, p, GREEDY), f"row {i} (prompt length {len(p)})"


def test_left_padded_batch_first_token_matches_each_prompt_alone(model):
    # The prefill alone (padding masks and positions, no decoding yet) is right for every row.
    one = SamplingParams(temperature=0.0, max_new_tokens=1)
    batch = generate(model, PROMPTS, one)
    assert [g.token_ids for g in batch] == [_alone(model, p, one) for p in PROMPTS]


def test_pad_id_does_not_change_padded_results(model):
    prompts = PROMPTS[:3]  # lengths 11, 3, 7
    assert [g.token_ids for g in generate(model, prompts, GREEDY, pad_id=0)] == \
        [g.token_ids for g in generate(model, prompts, GREEDY, pad_id=50)]


# ---- seeds --------------------------------------------------------------------------------------

def test_seeded_sampling_is_reproducible(model):
    a = _alone(model, PROMPTS[0], SAMPLED)
    assert a == _alone(model, PROMPTS[0], SAMPLED)
    other = SamplingParams(temperature=1.0, top_p=0.95, seed=99, max_new_tokens=12)
    assert a != _alone(model, PROMPTS[0], other)


def test_seeded_sampling_same_alone_or_in_a_batch_of_copies(model):
    alone = _alone(model, PROMPTS[4], SAMPLED)
    batch = generate(model, [PROMPTS[4]] * 8, SAMPLED)
    assert [g.token_ids for g in batch] == [alone] * 8


def test_seeded_sampling_same_alone_or_in_a_batch_of_varied_prompts(model):
    batch = generate(model, PROMPTS, SAMPLED)
    for i, (p, g) in enumerate(zip(PROMPTS, batch)):
        assert g.token_ids == _alone(model, p, SAMPLED), f"row {i}"


def test_seeded_sampling_differs_from_greedy(model):
    # Guards the seed tests: with temperature 1 on a random model, sampling is not argmax.
    assert _alone(model, PROMPTS[4], SAMPLED) != _alone(model, PROMPTS[4], GREEDY)


# ---- stopping -----------------------------------------------------------------------------------

def _fresh_token(tokens: list[int], min_index: int = 2) -> tuple[int, int]:
    """(index, id) of the first token at or after min_index that does not occur before it."""
    for i in range(min_index, len(tokens)):
        if tokens[i] not in tokens[:i]:
            return i, tokens[i]
    pytest.fail(f"no fresh token in {tokens}")


def test_stop_token_ends_the_row_with_reason_stop_and_is_not_included(model):
    free = _alone(model, PROMPTS[0], GREEDY)
    k, stop_id = _fresh_token(free)
    [g] = generate(model, [PROMPTS[0]], SamplingParams(temperature=0.0, max_new_tokens=12,
                                                       stop_token_ids=[stop_id, VOCAB + 5]))
    assert g.finish_reason == "stop"
    assert g.token_ids == free[:k]
    assert stop_id not in g.token_ids


def test_stop_token_ends_only_its_own_row(model):
    a, b = _prompt(6, 1), _prompt(6, 2)  # equal lengths: no padding involved
    free_a, free_b = _alone(model, a, GREEDY), _alone(model, b, GREEDY)
    k, stop_id = next((i, t) for i, t in enumerate(free_a) if i >= 2 and t not in free_a[:i] and t not in free_b)
    ga, gb = generate(model, [a, b], SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=[stop_id]))
    assert (ga.finish_reason, ga.token_ids) == ("stop", free_a[:k])
    assert (gb.finish_reason, gb.token_ids) == ("length", free_b)


def test_stop_token_as_first_token_gives_empty_output(model):
    first = _alone(model, PROMPTS[0], GREEDY)[0]
    [g] = generate(model, [PROMPTS[0]], SamplingParams(temperature=0.0, stop_token_ids=[first]))
    assert (g.finish_reason, g.token_ids) == ("stop", [])


@pytest.mark.parametrize("n", [1, 5, 12])
def test_max_new_tokens_ends_with_reason_length(model, n):
    [g] = generate(model, [PROMPTS[0]], SamplingParams(temperature=0.0, max_new_tokens=n))
    assert g.finish_reason == "length"
    assert len(g.token_ids) == n
    assert g.token_ids == _alone(model, PROMPTS[0], GREEDY)[:n]  # a shorter limit truncates, nothing else


def test_context_limit_caps_new_tokens_with_reason_length(model):
    prompt = _prompt(CTX - 3, 7)
    [g] = generate(model, [prompt], SamplingParams(temperature=0.0, max_new_tokens=50))
    assert (g.finish_reason, len(g.token_ids), g.prompt_tokens) == ("length", 3, CTX - 3)


# ---- invalid prompts ----------------------------------------------------------------------------

def test_empty_prompt_raises_lmlab_error(model):
    with pytest.raises(LmlabError, match="empty prompt"):
        generate(model, [PROMPTS[0], []], GREEDY)


@pytest.mark.parametrize("extra", [0, 5])
def test_prompt_filling_the_context_raises_lmlab_error(model, extra):
    with pytest.raises(LmlabError, match=f"{CTX + extra} tokens.*context is {CTX} tokens"):
        generate(model, [_prompt(CTX + extra, 3)], GREEDY)


def test_prompt_one_short_of_the_context_still_gets_a_token(model):
    [g] = generate(model, [_prompt(CTX - 1, 3)], GREEDY)
    assert len(g.token_ids) == 1 and g.finish_reason == "length"


# ---- streaming callback ------------------------------------------------------------------------

def test_on_token_called_once_per_generated_token_in_order(model):
    prompts = [_prompt(6, 1), _prompt(6, 2), _prompt(6, 3)]
    free = [_alone(model, p, GREEDY) for p in prompts]
    k, stop_id = next((i, t) for i, t in enumerate(free[0]) if i >= 2 and t not in free[0][:i])
    seen: list[tuple[int, int]] = []
    out = generate(model, prompts, SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=[stop_id]),
                   on_token=lambda row, tok: seen.append((row, tok)))
    assert len(seen) == sum(len(g.token_ids) for g in out)
    for row, g in enumerate(out):
        assert [t for r, t in seen if r == row] == g.token_ids
    assert stop_id not in [t for r, t in seen if r == 0]  # the stop token is never streamed
    # Streaming is step-major: every unfinished row reports step s before any row reports step s + 1.
    steps = {}
    order = []
    for r, _ in seen:
        steps[r] = steps.get(r, -1) + 1
        order.append(steps[r])
    assert order == sorted(order)

