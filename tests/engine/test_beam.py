"""Beam search equals transformers' generate(num_beams=..., do_sample=False): the same tokens,
in the same order, with the same sequences_scores, under each early_stopping mode and several
length penalties. Tiny random models (vocabulary 97) whose EOS ids are made likely exercise
finished hypotheses and early stopping; a few prompts check the bundled model."""

from __future__ import annotations

import pytest
import torch

from lmlab.engine.beam import Beam, BeamParams, beam_search
from lmlab.errors import LmlabError
from lmlab.model.io.hf import load_model

VOCAB = 97
CTX = 64
EOS = [3, 50]  # two EOS ids: 3 * num_beams candidates are kept per step
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=48, max_position_embeddings=CTX, bos_token_id=None, eos_token_id=None,
            pad_token_id=None)


def reference(hf, prompt: list[int], p: BeamParams) -> list[tuple[list[int], float]]:
    """transformers' (generated ids up to the first EOS, sequences_score) for each returned sequence."""
    out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      do_sample=False, num_beams=p.num_beams, max_new_tokens=p.max_tokens,
                      length_penalty=p.length_penalty, early_stopping=p.early_stopping,
                      num_return_sequences=p.n, eos_token_id=p.stop_token_ids, pad_token_id=p.stop_token_ids[0],
                      output_scores=True, return_dict_in_generate=True)
    result = []
    for seq, score in zip(out.sequences[:, len(prompt):].tolist(), out.sequences_scores.tolist()):
        end = next((i for i, t in enumerate(seq) if t in p.stop_token_ids), len(seq))
        result.append((seq[:end], score))
    return result


def assert_same(ours: list[Beam], ref: list[tuple[list[int], float]]):
    assert [b.token_ids for b in ours] == [ids for ids, _ in ref]
    for b, (_, score) in zip(ours, ref):
        assert b.score == pytest.approx(score, abs=1e-4)


# ---- tiny random models ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(transformers model, our model loaded from its folder, list counting our forward calls).

    Random Llama with a peaked output layer whose EOS rows are scaled up, so EOS often ranks
    among the top candidates but not always: beams finish at different lengths."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.AutoConfig.for_model("llama", **TINY)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.2)
        hf.model.norm.weight.fill_(1.0)
        hf.lm_head.weight.normal_(0.0, 0.5)
        hf.lm_head.weight[EOS] *= 2.5
    folder = tmp_path_factory.mktemp("tiny_beam")
    hf.save_pretrained(folder)
    ours = load_model(folder)
    calls = [0]
    forward = ours.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    ours.forward = counted
    return hf, ours, calls


def prompts(lengths=(3, 5, 8, 11)) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(4, VOCAB, (n,), generator=g).tolist() for n in lengths]


SETTINGS = [(1.0, False), (1.0, True), (0.5, True), (2.0, "never"), (-1.0, False), (0.0, "never"), (0.7, False)]


@pytest.mark.parametrize("length_penalty,early_stopping", SETTINGS)
def test_tiny_model_all_beams_equal_transformers(tiny, length_penalty, early_stopping):
    hf, ours, _ = tiny
    for prompt in prompts():
        p = BeamParams(num_beams=4, max_tokens=12, length_penalty=length_penalty, early_stopping=early_stopping,
                       n=4, stop_token_ids=EOS)
        assert_same(beam_search(ours, prompt, p), reference(hf, prompt, p))


@pytest.mark.parametrize("num_beams,n", [(2, 1), (3, 2), (5, 3), (6, 6)])
def test_tiny_model_other_widths_equal_transformers(tiny, num_beams, n):
    hf, ours, _ = tiny
    for prompt in prompts((4, 9)):
        p = BeamParams(num_beams=num_beams, max_tokens=10, n=n, stop_token_ids=EOS)
        assert_same(beam_search(ours, prompt, p), reference(hf, prompt, p))


def test_single_eos_id_equals_transformers(tiny):
    hf, ours, _ = tiny
    for prompt in prompts((5, 11)):
        p = BeamParams(num_beams=3, max_tokens=10, n=3, stop_token_ids=[50])
        assert_same(beam_search(ours, prompt, p), reference(hf, prompt, p))


def test_many_stop_ids_equal_transformers(tiny):
    """With half the vocabulary stopping, most top candidates end; the (1 + #EOS) * num_beams
    candidates kept per step still leave num_beams to go on."""
    hf, ours, _ = tiny
    for prompt in prompts((3, 8)):
        for early_stopping in (False, "never"):
            p = BeamParams(num_beams=4, max_tokens=8, n=4, early_stopping=early_stopping, length_penalty=2.0,
                           stop_token_ids=list(range(0, VOCAB, 2)))
            assert_same(beam_search(ours, prompt, p), reference(hf, prompt, p))


def test_the_tiny_model_exercises_finished_hypotheses_and_early_stopping(tiny):
    """Guards the comparisons above: EOS-finished and length-finished hypotheses both occur, and
    early_stopping=True stops sooner than False, which stops sooner than "never"."""
    _, ours, calls = tiny
    reasons, steps = set(), {}
    for mode in (True, False, "never"):
        steps[mode] = 0
        for prompt in prompts():
            calls[0] = 0
            beams = beam_search(ours, prompt, BeamParams(num_beams=4, max_tokens=12, length_penalty=2.0,
                                                         early_stopping=mode, n=4, stop_token_ids=EOS))
            reasons |= {b.finish_reason for b in beams}
            steps[mode] += calls[0]
    assert reasons == {"stop", "length"}
    assert steps[True] < steps[False] < steps["never"] == 4 * 12


def test_scores_are_the_model_log_probs_over_the_length_penalty(tiny):
    """cumulative_logprob is the teacher-forced log-prob of the tokens (the EOS included), and
    score = cumulative_logprob / generated_len ** length_penalty, best first."""
    _, ours, _ = tiny
    p = BeamParams(num_beams=4, max_tokens=12, length_penalty=1.5, n=4, stop_token_ids=[50])
    reasons = set()
    for prompt in prompts((6, 11)):
        beams = beam_search(ours, prompt, p)
        assert [b.score for b in beams] == sorted((b.score for b in beams), reverse=True)
        for b in beams:
            reasons.add(b.finish_reason)
            generated = b.token_ids + ([50] if b.finish_reason == "stop" else [])
            assert len(generated) == p.max_tokens if b.finish_reason == "length" else len(generated) <= p.max_tokens
            assert 50 not in b.token_ids
            with torch.no_grad():
                logp = torch.log_softmax(ours(torch.tensor([prompt + generated]))[0].float(), -1)
            total = logp[len(prompt) - 1:-1].gather(1, torch.tensor(generated)[:, None]).sum().item()
            assert b.cumulative_logprob == pytest.approx(total, abs=1e-4)
            assert b.score == pytest.approx(b.cumulative_logprob / len(generated) ** 1.5, abs=1e-6)
    assert reasons == {"stop", "length"}


def test_one_beam_is_greedy_decoding(tiny):
    """num_beams=1 (early_stopping False) picks the argmax each step and stops at the first EOS,
    as transformers' greedy generate does."""
    hf, ours, _ = tiny
    reasons = set()
    for prompt in prompts((3, 5, 8, 11, 14)):
        ids = prompt[:]
        while len(ids) - len(prompt) < 12:
            with torch.no_grad():
                ids.append(int(ours(torch.tensor([ids]))[0, -1].argmax()))
            if ids[-1] in EOS:
                break
        greedy = ids[len(prompt):]
        ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          do_sample=False, num_beams=1, max_new_tokens=12, eos_token_id=EOS,
                          pad_token_id=EOS[0])[0, len(prompt):].tolist()
        assert ref[:len(greedy)] == greedy
        [beam] = beam_search(ours, prompt, BeamParams(num_beams=1, max_tokens=12, stop_token_ids=EOS))
        stopped = greedy[-1] in EOS
        assert beam.token_ids == (greedy[:-1] if stopped else greedy)
        assert beam.finish_reason == ("stop" if stopped else "length")
        reasons.add(beam.finish_reason)
    assert reasons == {"stop", "length"}


def test_without_stop_ids_every_beam_runs_to_max_tokens(tiny):
    hf, ours, _ = tiny
    prompt = prompts((7,))[0]
    beams = beam_search(ours, prompt, BeamParams(num_beams=3, max_tokens=6, n=3))
    assert all(len(b.token_ids) == 6 and b.finish_reason == "length" for b in beams)
    p = BeamParams(num_beams=3, max_tokens=6, n=3, stop_token_ids=[VOCAB + 5])  # an id never produced
    assert_same(beams, reference(hf, prompt, p))


def test_generation_stops_at_the_model_context(tiny):
    _, ours, _ = tiny
    prompt = (prompts((20,))[0] * 4)[:CTX - 3]
    beams = beam_search(ours, prompt, BeamParams(num_beams=2, max_tokens=10, n=2))
    assert [len(b.token_ids) for b in beams] == [3, 3]
    with pytest.raises(LmlabError, match="context"):
        beam_search(ours, prompt * 2, BeamParams(num_beams=2))
    with pytest.raises(LmlabError, match="empty prompt"):
        beam_search(ours, [], BeamParams(num_beams=2))


# ---- parameters -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(num_beams=0), r"num_beams must be >= 1"),
    (dict(num_beams=-2), r"num_beams must be >= 1"),
    (dict(max_tokens=0), r"max_tokens must be >= 1"),
    (dict(num_beams=2, n=3), r"n larger than num_beams.*\[1, num_beams=2\]"),
    (dict(n=0), r"n must be in \[1, num_beams=4\]"),
    (dict(early_stopping="always"), r"early_stopping must be True, False or \"never\""),
    (dict(early_stopping=1), r"early_stopping must be True, False or \"never\""),
    (dict(stop_token_ids=["</s>"]), r"stop_token_ids must be a list of ints"),
])
def test_invalid_params_raise_lmlab_error_with_the_valid_range(kwargs, message):
    with pytest.raises(LmlabError, match=message):
        BeamParams(**kwargs)


@pytest.mark.parametrize("kwargs, name", [({"guided_json": {"type": "object"}}, "guided_json"),
                                          ({"guided_json_object": True}, "guided_json_object"),
                                          ({"guided_regex": "[0-9]+"}, "guided_regex"),
                                          ({"guided_choice": ["a", "b"]}, "guided_choice"),
                                          ({"guided_grammar": "start: \"a\""}, "guided_grammar"),
                                          ({"structured_outputs": {"regex": "a"}}, "structured_outputs")])
def test_output_constraints_are_refused_by_name(kwargs, name):
    with pytest.raises(LmlabError, match=f"beam search does not support output constraints \\(got {name}\\)"):
        BeamParams(num_beams=2, **kwargs)


def test_sampling_params_are_refused_and_a_constrained_one_by_its_constraint(tiny):
    from lmlab.engine.params import SamplingParams

    _, ours, _ = tiny
    with pytest.raises(LmlabError, match="output constraints \\(got SamplingParams with guided_regex\\)"):
        beam_search(ours, [1, 2, 3], SamplingParams(guided_regex="[0-9]+"))
    with pytest.raises(LmlabError, match="beam_search takes BeamParams, got SamplingParams"):
        beam_search(ours, [1, 2, 3], SamplingParams())


def test_params_defaults_and_normalisation():
    p = BeamParams(length_penalty=2, stop_token_ids=[2, 2, 0], early_stopping="never")
    assert (p.num_beams, p.max_tokens, p.n, p.length_penalty, p.stop_token_ids) == (4, 64, 1, 2.0, [2, 0])


# ---- the bundled model ----------------------------------------------------------------------------

CHAT_PROMPTS = ["What is the capital of France?", "Name three primary colors.", "What is 12 times 12?",
                "Translate 'good morning' into Spanish.", "Write one sentence about cats."]


@pytest.fixture(scope="module")
def bundled_hf(bundled_folder):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModelForCausalLM.from_pretrained(str(bundled_folder), dtype=torch.float32).eval()


@pytest.mark.parametrize("text", CHAT_PROMPTS)
def test_bundled_model_best_beam_equals_transformers(bundled_lm, bundled_hf, text):
    ids = bundled_lm.prompt_ids(text)
    p = BeamParams(num_beams=4, max_tokens=24, stop_token_ids=bundled_lm.stop_token_ids)
    assert_same(beam_search(bundled_lm.model, ids, p), reference(bundled_hf, ids, p))


@pytest.mark.parametrize("text,length_penalty,early_stopping", [
    (CHAT_PROMPTS[1], 0.5, True), (CHAT_PROMPTS[4], 2.0, "never")])
def test_bundled_model_three_beams_equal_transformers(bundled_lm, bundled_hf, text, length_penalty, early_stopping):
    ids = bundled_lm.prompt_ids(text)
    p = BeamParams(num_beams=4, max_tokens=24, length_penalty=length_penalty, early_stopping=early_stopping, n=3,
                   stop_token_ids=bundled_lm.stop_token_ids)
    assert_same(beam_search(bundled_lm.model, ids, p), reference(bundled_hf, ids, p))
