"""Tiny random models and a word-level tokenizer for the preference-learning tests: the same
weights as a transformers model (for TRL) and as ours."""

from __future__ import annotations

import pytest

TINY = dict(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
WORDS = ["<pad>", "<eos>"] + [f"w{i}" for i in range(62)]


@pytest.fixture(scope="session")
def hf_tokenizer():
    """transformers tokenizer over WORDS: one token per word, pad 0, eos 1."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


@pytest.fixture(scope="session")
def tiny(random_hf, tmp_path_factory):
    """name -> (transformers model, our model from the same weights); different seeds differ."""
    from lmlab.model.io.hf import load_model

    built = {}

    def get(name: str, seed: int = 0):
        if name not in built:
            hf = random_hf(TINY, seed)
            folder = tmp_path_factory.mktemp(name)
            hf.save_pretrained(folder)
            built[name] = hf, load_model(folder), folder
        return built[name]

    return get
