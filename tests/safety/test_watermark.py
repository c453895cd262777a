"""The green-list watermark: the same green lists and z-scores as transformers', greedy decoding
untouched at delta = 0, watermarked text found and human text not, bad settings refused."""

from __future__ import annotations

import pytest
import torch

from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError
from lmlab.safety import watermark
from lmlab.safety.watermark import Watermark

transformers = pytest.importorskip("transformers")

HUMAN = ("The committee met on Tuesday to discuss the budget for next year. Several members argued that "
         "the library should receive more money, since its roof has leaked for three winters and the "
         "children's section is still closed. Others wanted the funds spent on roads.")


def test_processor_adds_delta_to_transformers_green_lists():
    from transformers.generation.logits_process import WatermarkLogitsProcessor

    V, w = 1000, Watermark(gamma=0.3, delta=1.5, key=12345)
    ref = WatermarkLogitsProcessor(V, "cpu", greenlist_ratio=w.gamma, bias=w.delta, hashing_key=w.key)
    ids = torch.tensor([[5, 17, 999], [3, 3, 0], [8, 1, 42]])
    logits = torch.randn(3, V)
    expected = ref(ids, logits.clone())
    got = watermark.apply(logits.clone(), [w, w, w], ids[:, -1].tolist())
    torch.testing.assert_close(got, expected)


def test_z_scores_equal_transformers_detector(bundled_lm):
    from transformers import LlamaConfig, WatermarkDetector, WatermarkingConfig

    lm = bundled_lm
    V = lm.config.vocab_size
    w = Watermark(gamma=0.25, delta=2.0)
    config = LlamaConfig(vocab_size=V, bos_token_id=lm.tokenizer.bos_token_id or 0)
    ref = WatermarkDetector(config, "cpu", WatermarkingConfig(greenlist_ratio=w.gamma, bias=w.delta,
                                                              hashing_key=w.key, seeding_scheme="lefthash"))
    marked = lm.generate("Write about the sea.", max_new_tokens=30, temperature=1.0, seed=0,
                         watermark=w).token_ids
    texts = [marked, lm.tokenizer.encode(HUMAN), [7, 7, 7, 7, 7, 8]]
    for ids in texts:
        ours = watermark.detect(ids, V, w)
        theirs = ref(torch.tensor([ids]), return_dict=True)
        assert ours.tokens == int(theirs.num_tokens_scored[0])
        assert ours.z == pytest.approx(float(theirs.z_score[0]), abs=1e-9)
        assert ours.p_value == pytest.approx(float(theirs.p_value[0]), rel=1e-6, abs=1e-12)
        assert ours.green_fraction == pytest.approx(float(theirs.green_fraction[0]))


def test_delta_zero_never_changes_greedy_decoding(bundled_lm):
    prompt = "The capital of France is"
    plain = bundled_lm.generate(prompt, raw=True, max_new_tokens=12, temperature=0)
    marked = bundled_lm.generate(prompt, raw=True, max_new_tokens=12, temperature=0,
                                 watermark=Watermark(delta=0.0))
    assert marked.token_ids == plain.token_ids


def test_watermarked_generation_is_detected_and_human_text_is_not(bundled_lm):
    lm, w = bundled_lm, Watermark(gamma=0.25, delta=4.0)
    # two watermarked requests in one batch, beside an unmarked one: the mark is per request
    ids = [lm.prompt_ids(p) for p in ("Tell me a story about a fox.", "Describe a busy market.",
                                      "Describe a busy market.")]
    marks = [w, w, None]
    outs = lm.engine.generate(ids, [SamplingParams(max_tokens=40, temperature=1.0, seed=i, watermark=m)
                                    for i, m in enumerate(marks)])
    zs = [watermark.detect(o.outputs[0].token_ids, lm.config.vocab_size, w).z for o in outs]
    assert zs[0] > 4 and zs[1] > 4
    assert zs[2] < 4
    human = watermark.detect(lm.tokenizer.encode(HUMAN), lm.config.vocab_size, w)
    assert not human.watermarked and human.z < 4


@pytest.mark.parametrize("bad", [dict(gamma=0), dict(gamma=1), dict(gamma=1.5), dict(delta=-0.1),
                                 dict(delta=float("inf")), dict(seeding_scheme="selfhash-ish")])
def test_bad_settings_are_refused(bad):
    with pytest.raises(LmlabError, match=next(iter(bad))):
        SamplingParams(watermark=bad)


def test_settings_parse_from_the_cli_string():
    assert watermark.parse("gamma=0.5,delta=1") == Watermark(gamma=0.5, delta=1.0)
    assert watermark.parse("") == Watermark()
    with pytest.raises(LmlabError, match="unknown"):
        watermark.parse("gama=0.5")
    with pytest.raises(LmlabError, match="number"):
        watermark.parse("gamma=high")


def test_empty_and_too_short_texts_are_refused():
    with pytest.raises(LmlabError, match="too short"):
        watermark.detect([5], 100)
    with pytest.raises(LmlabError, match="empty"):
        watermark.detect([], 100)


def test_server_requests_carry_the_watermark_in_their_extra_body():
    pytest.importorskip("pydantic")
    from lmlab.serve.protocol import ApiError, ChatRequest, sampling_params

    def params(extra):
        body = ChatRequest(messages=[{"role": "user", "content": "hi"}], **extra)
        return sampling_params(body, max_tokens=8, logprobs=None, vocab=1000, max_tokens_limit=64, max_n=4)

    assert params({"watermark": {"gamma": 0.5, "delta": 1.0}}).watermark == Watermark(gamma=0.5, delta=1.0)
    assert params({"watermark": "delta=3"}).watermark == Watermark(delta=3.0)
    assert params({}).watermark is None
    with pytest.raises(ApiError) as e:
        params({"watermark": {"gamma": 1.2}})
    assert e.value.status == 400 and e.value.param == "watermark" and "gamma" in e.value.message
