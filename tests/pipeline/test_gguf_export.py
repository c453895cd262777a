"""GGUF export: the file read back (lmlab.model.io.gguf, which follows llama.cpp's layout) gives
the same logits and the same tokenizer as the folder it was written from."""

from __future__ import annotations

import pytest
import torch


def test_exported_gguf_reads_back_to_the_same_model_and_tokenizer(tiny_folder, tmp_path):
    import gguf

    from lmlab.model.io.gguf import convert_gguf
    from lmlab.model.io.gguf_export import _PROBE, export_gguf
    from lmlab.model.io.hf import load_model
    from lmlab.tokenizer import Tokenizer

    path = export_gguf(tiny_folder, tmp_path / "tiny.gguf")
    fields = gguf.GGUFReader(str(path)).fields
    assert bytes(fields["tokenizer.ggml.pre"].parts[-1]).decode() == "smollm"  # SmolLM2's tokenizer
    back = convert_gguf(path, tmp_path / "back")
    a, b = load_model(tiny_folder).eval(), load_model(back).eval()
    ids = torch.tensor([[1, 400, 2000, 17, 9000, 3, 42, 512]])
    with torch.no_grad():
        torch.testing.assert_close(b(ids), a(ids), atol=1e-5, rtol=1e-5)
    ta, tb = Tokenizer.from_folder(tiny_folder), Tokenizer.from_folder(back)
    text = _PROBE + " <|im_start|>user\nhi<|im_end|>"
    assert tb.encode(text, add_special_tokens=False) == ta.encode(text, add_special_tokens=False)
    assert tb.eos_token_id == ta.eos_token_id


def test_non_llama_models_are_refused(tmp_path):
    import json

    from lmlab.errors import LmlabError
    from lmlab.model.io.gguf_export import export_gguf

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(LmlabError, match="llama-family models, not 'gpt_neox'"):
        export_gguf(tmp_path, tmp_path / "x.gguf")
