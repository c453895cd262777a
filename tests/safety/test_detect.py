"""Detection statistics against a direct computation from transformers' logits, and bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.safety import detect

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = {"llama": dict(model_type="llama", vocab_size=300, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128)}


class _ByteTokenizer:
    """Text -> byte values (all < 300): enough to give the tiny model ids."""
    def encode(self, text):
        return list(text.encode())

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode(errors="replace")


@pytest.fixture(scope="module")
def tiny(pair):
    hf, ours = pair("llama")
    return hf, SimpleNamespace(model=ours, tokenizer=_ByteTokenizer(), config=ours.config)


TEXTS = ["a short text of some forty characters....", "and another, longer one that will need padding in a batch",
         "the third text is here for good measure"]


def _reference(hf, text):
    """Bao et al.'s get_sampling_discrepancy_analytic with one model, and the baselines."""
    ids = torch.tensor([list(text.encode())])
    with torch.no_grad():
        logits = hf(ids).logits[:, :-1].double()
    labels = ids[:, 1:]
    lprobs = logits.log_softmax(-1)
    probs = lprobs.exp()
    ll = lprobs.gather(-1, labels[..., None])[..., 0]
    mean = (probs * lprobs).sum(-1)
    var = (probs * lprobs.square()).sum(-1) - mean.square()
    rank = (lprobs > ll[..., None]).sum(-1) + 1
    return {"fast-detectgpt": float((ll.sum() - mean.sum()) / var.sum().sqrt()), "likelihood": float(ll.mean()),
            "logrank": float(-rank.double().log().mean())}, rank[0].numpy()


@pytest.mark.parametrize("method", detect.METHODS)
def test_scores_equal_a_direct_computation_from_transformers_logits(tiny, method):
    hf, lm = tiny
    got = detect.score(lm, TEXTS, method, batch_tokens=128)  # three texts in two padded batches
    for text, g in zip(TEXTS, got):
        ref, _ = _reference(hf, text)
        assert g["method"] == method
        assert g["score"] == pytest.approx(ref[method], rel=1e-4, abs=1e-4)


def test_gltr_buckets_follow_the_ranks(tiny):
    hf, lm = tiny
    st = detect.token_stats(lm, TEXTS[:1])[0]
    _, rank = _reference(hf, TEXTS[0])
    assert st.rank.tolist() == rank.tolist()
    expected = [0 if r <= 10 else 1 if r <= 100 else 2 if r <= 1000 else 3 for r in rank]
    assert st.buckets() == expected
    page = detect.gltr_html(lm, TEXTS[0])
    assert page.startswith("<!doctype html>") and page.count("<span style=\"background:") >= len(rank)
    assert "http" not in page  # self-contained: nothing to fetch


def test_empty_and_too_short_texts_get_an_error_not_a_score(tiny):
    _, lm = tiny
    with pytest.raises(LmlabError, match="empty"):
        detect.score(lm, ["   "])
    with pytest.raises(LmlabError, match="too short"):
        detect.score(lm, ["tiny"])
    with pytest.raises(LmlabError, match="unknown detection method"):
        detect.score(lm, TEXTS, "detectgpt-ish")


def test_calibration_separates_labelled_texts(tiny, tmp_path):
    _, lm = tiny
    path = tmp_path / "labelled.jsonl"
    rows = [{"text": t * 2, "label": "machine" if i % 2 else "human"} for i, t in enumerate(TEXTS * 2)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = detect.calibrate(lm, path, batch_tokens=512)
    scores = [s.score("likelihood") for s in detect.token_stats(lm, [r["text"] for r in rows])]
    labels = [1 if r["label"] == "machine" else 0 for r in rows]
    from sklearn.metrics import roc_auc_score
    assert out["likelihood"]["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert set(out) == set(detect.METHODS)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": 1}\n{"text": "y"}\n')
    with pytest.raises(LmlabError, match="bad.jsonl:2"):
        detect.calibrate(lm, bad)
