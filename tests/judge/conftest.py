from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def tiny_chat_folder(random_hf, bundled_folder, tmp_path_factory):
    """A tiny random Llama with the bundled model's tokenizer and chat template: a judge that
    runs in moments where what it says does not matter."""
    model = random_hf(dict(model_type="llama", vocab_size=49152, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2))
    folder = tmp_path_factory.mktemp("tiny_chat")
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(bundled_folder / name, folder / name)
    return folder
