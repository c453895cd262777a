"""Tokenizer training (the code pretraining uses) and the multilingual comparison."""

import json

from lmlab.cli.main import main
from lmlab.data.tokenizers import compare, in_part, measure, train_tokenizer
from lmlab.tokenizer import Tokenizer

from .corpora import write_jsonl

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A tokenizer splits text into tokens.",
         "서울은 한국의 수도입니다.", "Byte-level BPE never meets an unknown character."] * 20


def test_byte_level_bpe_is_pretrains_tokenizer(tmp_path):
    from lmlab.train.corpus import train_bpe

    data = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXTS])
    folder, n = train_tokenizer([str(data)], 300, tmp_path / "tok")
    train_bpe(TEXTS, 300, tmp_path / "ref")
    assert n == len(TEXTS)
    assert (folder / "tokenizer.json").read_text() == (tmp_path / "ref" / "tokenizer.json").read_text()
    tok = Tokenizer.from_folder(folder)
    s = "Unseen: 🙂 ünïcödé 東京"
    assert tok.decode(tok.encode(s)) == s and tok.vocab_size <= 300


def test_byte_fallback_encodes_unseen_characters_as_bytes(tmp_path):
    data = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXTS])
    folder, _ = train_tokenizer([str(data)], 400, tmp_path / "tok", byte_fallback=True)
    backend = Tokenizer.from_folder(folder).backend
    enc = backend.encode("fox 🙂", add_special_tokens=False)
    assert [t for t in enc.tokens if t.startswith("<0x")] == ["<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]
    assert backend.decode(enc.ids) == "fox 🙂"
    assert "<unk>" not in enc.tokens


def test_measure_counts_words_split_and_bytes():
    from tokenizers import Tokenizer as Backend, models, pre_tokenizers

    tok = Backend(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # one token per character
    m = measure(tok, ["ab a", "b"])
    assert m == {"tokens": 5, "words": 3, "bytes": 5, "split_words": 1}  # the space is a token here, of no word


def test_korean_in_the_corpus_lowers_koreans_premium(shared_data, tmp_path):
    par = shared_data / "parallel_multilingual.jsonl"
    web = shared_data / "webtext_sample.jsonl"
    en, _ = train_tokenizer([str(web), str(par)], 3000, tmp_path / "en", languages=["eng"], part="train")
    ko, _ = train_tokenizer([str(web), str(par)], 3000, tmp_path / "en_ko", languages=["eng", "kor"], part="train")
    rows = {(r["tokenizer"], r["lang"]): r for r in compare([str(en), str(ko)], str(par), part="test")}
    assert rows[("en", "eng")]["premium vs eng"] == 1.0
    assert rows[("en_ko", "kor")]["premium vs eng"] < 0.6 * rows[("en", "kor")]["premium vs eng"]
    # what it costs English: a few more tokens for the same sentences, the vocabulary being shared
    assert 1.0 <= rows[("en_ko", "eng")]["tokens"] / rows[("en", "eng")]["tokens"] < 1.05
    # the halves do not overlap: the test sentences were not trained on
    docs = [json.loads(line) for line in par.open()]
    assert not {d["doc_id"] for d in docs if in_part(d, "train")} & {d["doc_id"] for d in docs if in_part(d, "test")}


def test_compare_cli_writes_table_and_png(tmp_path, capsys):
    par = write_jsonl(tmp_path / "p.jsonl", [
        {"lang": "eng", "id": "1", "text": "The weather is nice today."},
        {"lang": "kor", "id": "1", "text": "오늘 날씨가 좋네요."},
        {"lang": "eng", "id": "2", "text": "I like to read books."},
        {"lang": "kor", "id": "2", "text": "나는 책 읽는 것을 좋아한다."}])
    data = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXTS])
    assert main(["tokenizer", "train", "--data", str(data), "--vocab-size", "300", "--out", str(tmp_path / "t")]) == 0
    png = tmp_path / "cmp.png"
    assert main(["tokenizer", "compare", str(tmp_path / "t"), "--data", str(par), "--png", str(png),
                 "--json", str(tmp_path / "cmp.json")]) == 0
    assert png.stat().st_size > 1000
    rows = json.loads((tmp_path / "cmp.json").read_text())
    assert [r["lang"] for r in rows] == ["eng", "kor"] and rows[0]["premium vs eng"] == 1.0
    assert "premium vs eng" in capsys.readouterr().out


def test_bad_tokenizer_inputs(tmp_path, capsys):
    par = write_jsonl(tmp_path / "p.jsonl", [{"lang": "kor", "id": "1", "text": "안녕"}])
    assert main(["tokenizer", "compare", str(tmp_path), "--data", str(par)]) == 2
    assert "no English sentences (lang eng or en)" in capsys.readouterr().err
    par = write_jsonl(tmp_path / "p.jsonl", [{"lang": "eng", "id": "1", "text": "hi"}])
    assert main(["tokenizer", "compare", str(tmp_path), "--data", str(par)]) == 2
    assert "no tokenizer.json here" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--data", str(par), "--vocab-size", "100", "--out", str(tmp_path / "t")]) == 2
    assert "--vocab-size must be at least 257" in capsys.readouterr().err
