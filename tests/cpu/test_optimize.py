"""lmlab.cpu.optimize: the CPU speed layer is applied from outside, by one call, and nowhere else.
On any other device, with the kernels switched off, or for a model built into a plain Engine,
nothing of it is built, imported or changed."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from lmlab.cpu import Speedups, features, kernels, optimize
from lmlab.model.quant import Int8Linear

SRC = Path(__file__).resolve().parents[2] / "src" / "lmlab"
# Where the speed layer is applied: inference models as loaded, the model a Trainer trains, and
# DPO's frozen reference.
APPLIED_IN = {"lm.py", "train/trainer.py", "train/run.py"}


def test_only_the_places_that_apply_it_name_the_cpu_package():
    users = set()
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC).as_posix()
        if not rel.startswith("cpu/") and re.search(r"^\s*(from lmlab\.cpu\b|import lmlab\.cpu\b|from lmlab import cpu\b)", f.read_text(), re.M):
            users.add(rel)
    assert users == APPLIED_IN


def test_the_model_and_the_engine_hold_no_platform_code():
    for rel in ["model/transformer.py", "engine/engine.py", "model/peft/lora.py", "train/objectives/sft.py",
                "train/objectives/responses.py"]:
        text = (SRC / rel).read_text()
        assert not re.search(r"cpu_kernels|onednn|mkldnn|get_cpu_capability|cpp_wrapper|allocator", text), rel


def _word_tokenizer(vocab: int):
    from tokenizers import Tokenizer as Backend, decoders, models

    from lmlab.tokenizer import Tokenizer

    backend = Backend(models.WordLevel({f"w{i} ": i for i in range(vocab)}, unk_token="w0 "))
    backend.decoder = decoders.Fuse()
    return Tokenizer(backend)


def _tiny(random_hf, tmp_path):
    from lmlab.model.io.hf import load_model

    hf = random_hf({"model_type": "llama", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 128,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "max_position_embeddings": 128})
    hf.save_pretrained(tmp_path)
    return load_model(tmp_path)


def test_an_engine_built_on_a_model_changes_nothing_of_it(random_hf, tmp_path):
    """PPO samples from the model it trains: building an Engine must leave its modules, flags and
    weights exactly as they were."""
    from lmlab.engine.engine import Engine
    from lmlab.engine.params import SamplingParams

    model = _tiny(random_hf, tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = [(n, type(m), dict(m.__dict__.get("_parameters", {})).keys()) for n, m in model.named_modules()]
    attrs = [(n, sorted(k for k in vars(m) if not k.startswith("_"))) for n, m in model.named_modules()]

    engine = Engine(model, _word_tokenizer(300))
    engine.generate([[1, 2, 3]], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
    assert engine.greedy_pick is None
    assert [(n, type(m), dict(m.__dict__.get("_parameters", {})).keys()) for n, m in model.named_modules()] == kinds
    assert [(n, sorted(k for k in vars(m) if not k.startswith("_"))) for n, m in model.named_modules()] == attrs
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_building_and_running_an_engine_compiles_and_imports_no_cpu_kernels(tmp_path):
    code = """
import sys, torch
from lmlab.engine.engine import Engine
from lmlab.engine.params import SamplingParams
from lmlab.model.config import ModelConfig
from lmlab.model.transformer import Transformer
from tokenizers import Tokenizer as Backend, decoders, models
from lmlab.tokenizer import Tokenizer
cfg = ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=64)
backend = Backend(models.WordLevel({f"w{i} ": i for i in range(64)}, unk_token="w0 "))
backend.decoder = decoders.Fuse()
Engine(Transformer(cfg).eval(), Tokenizer(backend)).generate([[1, 2]], SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True))
assert "lmlab.cpu.kernels" not in sys.modules and "torch.utils.cpp_extension" not in sys.modules, sorted(sys.modules)
print("clean")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "clean" in out.stdout


def test_on_another_device_optimize_does_nothing_and_imports_nothing():
    code = """
import sys, torch
from lmlab.cpu import optimize
m = torch.nn.Sequential(torch.nn.Linear(4, 4))
s = optimize(m, "cuda", "decode")
assert s.greedy_pick is None and s.applied == [] and type(m[0]) is torch.nn.Linear
assert not any(k.startswith("lmlab.cpu.") for k in sys.modules), [k for k in sys.modules if k.startswith("lmlab.cpu")]
print("clean")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_with_kernels_switched_off_decoding_uses_none_of_them(random_hf, tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_NO_KERNELS", "1")
    kernels.available.cache_clear()
    try:
        model = _tiny(random_hf, tmp_path)
        s = optimize(model, "cpu", "decode", pack=False)
        assert s.greedy_pick is None and "decode-attention" not in s.applied
        assert all(getattr(m, "decode_attention", None) is None for m in model.modules())
    finally:
        monkeypatch.delenv("LMLAB_NO_KERNELS")
        kernels.available.cache_clear()


def test_decode_optimisation_keeps_the_models_outputs(random_hf, tmp_path):
    if not kernels.available():
        pytest.skip("lmlab's kernels are not built (no C++ toolchain, or LMLAB_NO_KERNELS=1)")
    from lmlab.model.quant import convert_weights

    model = convert_weights(_tiny(random_hf, tmp_path), "int8")
    ids = torch.tensor([[5, 9, 13, 2, 7]])
    with torch.no_grad():
        before = model(ids).float()
    s = optimize(model, "cpu", "decode", weights="int8")
    assert {"int8-kernel", "decode-attention", "greedy-pick"} <= set(s.applied)
    assert s.greedy_pick is kernels.greedy_pick
    assert not any(type(m) is Int8Linear for m in model.modules())  # all swapped to the CPU forward
    with torch.no_grad():
        after = model(ids).float()
    torch.testing.assert_close(after, before, rtol=0.02, atol=0.02 * before.abs().max().item())


def test_compile_options_come_only_with_compile():
    m = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert optimize(m, "cpu", "decode", pack=False).compile_options == {}
    assert optimize(m, "cpu", "decode", pack=False, compile=True).compile_options.get("cpp_wrapper") is True


def test_w8a8_warns_on_a_cpu_without_vnni_and_not_on_one_with_it(monkeypatch):
    def warned(flags, fmt="w8a8"):
        monkeypatch.setattr(features, "cpu_flags", lambda: frozenset(flags))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            optimize(torch.nn.Sequential(torch.nn.Linear(4, 4)), "cpu", "decode", weights=fmt, pack=False)
        return [str(w.message) for w in seen]

    assert any("no VNNI" in m for m in warned({"avx2", "fma"}))
    assert warned({"avx2", "avx512_vnni"}) == []
    assert warned({"avx2", "fma"}, "int8") == []


def test_an_unknown_purpose_is_refused():
    with pytest.raises(ValueError, match="purpose"):
        optimize(torch.nn.Linear(2, 2), "cpu", "serve")


def test_speedups_default_is_empty():
    assert Speedups().greedy_pick is None and Speedups().compile_options == {}
