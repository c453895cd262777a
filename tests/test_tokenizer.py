"""Tokenizer, chat templates and streaming detokenisation, checked against transformers."""

from __future__ import annotations

import json
import shutil

import pytest

from lmlab.tokenizer import Tokenizer

SYSTEM = {"role": "system", "content": "You are a careful assistant."}
TURNS = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And times three?"},
    {"role": "assistant", "content": "12, since (2+2)*3 = 12."},
    {"role": "user", "content": "Thanks! Ünïcödé 🙂 漢字"},
]
CONVERSATIONS = {  # 1-, 2- and 3-turn conversations, with and without a system message
    f"{n}turn{'+system' if sys_ else ''}": ([SYSTEM] if sys_ else []) + TURNS[: 2 * n - 1]
    for n in (1, 2, 3) for sys_ in (False, True)
}
TEXTS = ["Hello world", "  leading and trailing  ", "digits 1234567890 and 3.14159",
         "def f(x):\n    return x * 2\n", "emoji 🙂🚀 and CJK 漢字かな", "naïve café — «quotes»",
         "<|im_start|>user\nhi<|im_end|>", "tabs\tand\nnewlines\n\n"]


@pytest.fixture(scope="module")
def pair(bundled_folder):
    transformers = pytest.importorskip("transformers")
    return Tokenizer.from_folder(bundled_folder), transformers.AutoTokenizer.from_pretrained(str(bundled_folder))


@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(pair, name, add_generation_prompt):
    ours, ref = pair
    messages = CONVERSATIONS[name]
    expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected
    ids = ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert ours.encode_chat(messages, add_generation_prompt) == list(ids)


def test_template_with_special_tokens_and_exceptions_matches_transformers(bundled_folder, tmp_path):
    """A Llama-3-like template using bos_token, tojson and raise_exception renders identically."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "tok"
    folder.mkdir()
    shutil.copy(bundled_folder / "tokenizer.json", folder)
    config = json.loads((bundled_folder / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{{ bos_token }}{% for m in messages %}"
        "{% if m['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role') }}{% endif %}"
        "<|{{ m['role'] }}|>{{ m['content'] | trim }}{{ eos_token }}\n"
        "{% if loop.last and m['role'] == 'user' %}{{ {'n': loop.length, 'q': '<\"&>'} | tojson }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    ours, ref = Tokenizer.from_folder(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    for messages in CONVERSATIONS.values():
        assert ours.apply_chat_template(messages) == ref.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)
    from lmlab.errors import LmlabError
    with pytest.raises(LmlabError, match="bad role"):
        ours.apply_chat_template([{"role": "robot", "content": "x"}])


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_match_transformers(pair, text):
    ours, ref = pair
    ids = ours.encode(text)
    assert ids == ref(text)["input_ids"]
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)


def _streamed(tok: Tokenizer, ids: list[int]) -> list[str]:
    stream = tok.stream()
    pieces = [stream.push(i) for i in ids]
    return pieces + [stream.flush()]


@pytest.mark.parametrize("text", TEXTS)
def test_stream_equals_full_decode_and_never_breaks_utf8(pair, text):
    ours, _ = pair
    ids = ours.encode(text, add_special_tokens=False)
    pieces = _streamed(ours, ids)
    assert "".join(pieces) == ours.decode(ids)
    assert not any("\ufffd" in p for p in pieces)


def test_stream_holds_back_half_a_character(pair):
    ours, _ = pair
    ids = ours.encode("🙂", add_special_tokens=False)
    assert len(ids) > 1, "byte-level BPE splits this emoji over several tokens"
    stream = ours.stream()
    assert [stream.push(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert stream.push(ids[-1]) == "🙂"


def test_stream_keeps_spaces_with_sentencepiece_style_tokenizer():
    """Metaspace tokenizers drop a leading space when one id is decoded alone; the stream must not."""
    from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    corpus = ["the quick brown fox jumps over the lazy dog", "a stream of words with spaces"] * 20
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    tok = Tokenizer(backend)
    text = "the lazy fox with spaces"
    ids = tok.encode(text)
    assert "".join(tok.decode([i]) for i in ids) != text  # naive per-id decoding loses the spaces
    assert "".join(_streamed(tok, ids)) == tok.decode(ids) == text


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    from lmlab.errors import LmlabError
    with pytest.raises(LmlabError, match="no tokenizer.json"):
        Tokenizer.from_folder(tmp_path)
