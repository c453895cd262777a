"""Tokenizer training and multilingual efficiency.

`train_tokenizer` trains the byte-level BPE that `lmlab train pretrain` trains for its corpus
(lmlab.train.corpus.train_bpe, GPT-2's scheme: every byte is a base token, nothing is unknown),
or with `byte_fallback` a SentencePiece-style BPE over characters (Llama's scheme: words start
with "▁", characters outside the learned alphabet become <0xNN> byte tokens).

`compare` measures, per language of a parallel corpus (the same sentences in every language):
fertility (tokens per whitespace word; for scripts without spaces, such as Chinese, Japanese
and Thai, a "word" is a whole space-free run, so read their premium instead), bytes per token,
the share of words split into more than one token, and the token premium: tokens for a
language's sentences over tokens for the same sentences in English (Petrov et al. 2023).

`part` splits a parallel file by document (`doc_id`, else `id`) into halves, so a tokenizer can
be trained on one half and compared on the other.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

from lmlab.errors import LmlabError

ENGLISH = ("eng", "en")
_WORD = re.compile(r"\S+")


def in_part(record: dict, part: str) -> bool:
    if part == "all":
        return True
    key = str(record.get("doc_id", record.get("id", record.get("text", ""))))
    return (zlib.crc32(key.encode("utf-8")) % 2 == 0) == (part == "train")


def read_texts(specs: list[str], languages: list[str] | None = None, part: str = "all") -> list[str]:
    """Documents for training: pretrain's corpus specs; in JSONL, records with a `lang` field are kept
    when their language is in `languages` and they fall in `part`."""
    from lmlab.train.corpus import read_corpus

    texts: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.suffix.lower() in (".jsonl", ".ndjson") and (languages or part != "all"):
            from lmlab.data.records import read_records

            for r in read_records([path]):
                lang = r.get("lang", r.get("language"))
                # the filters are for parallel corpora; a record without a language is plain text
                if lang is None or ((not languages or lang in languages) and in_part(r, part)):
                    texts.append(r["text"])
        else:
            texts += read_corpus(spec)
    if not texts:
        raise LmlabError(f"no training text in {', '.join(specs)}"
                         + (f" for languages {', '.join(languages)}" if languages else ""))
    return texts


def train_tokenizer(specs: list[str], vocab_size: int, out: str | Path, byte_fallback: bool = False,
                    languages: list[str] | None = None, part: str = "all") -> tuple[Path, int]:
    texts = read_texts(specs, languages, part)
    out = Path(out)
    if byte_fallback:
        if vocab_size <= 258:
            raise LmlabError(f"--vocab-size must exceed 258 with --byte-fallback (256 byte tokens, <unk>, "
                             f"<|endoftext|>), got {vocab_size}")
        train_byte_fallback(texts, vocab_size, out)
    else:
        if vocab_size < 257:
            raise LmlabError(f"--vocab-size must be at least 257 (256 bytes and <|endoftext|>), got {vocab_size}")
        from lmlab.train.corpus import train_bpe

        train_bpe(texts, vocab_size, out)
    return out, len(texts)


def train_byte_fallback(texts: list[str], vocab_size: int, out: Path, limit_alphabet: int = 1000) -> Path:
    """BPE over characters with "▁" word starts; the 256 <0xNN> tokens are put in the vocabulary
    after training so that any character outside the learned alphabet still encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<unk>", "<|endoftext|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=specials, show_progress=False,
                                  limit_alphabet=limit_alphabet)
    tok.train_from_iterator(texts, trainer)
    state = json.loads(tok.to_str())["model"]
    trained = sorted(state["vocab"].items(), key=lambda kv: kv[1])
    vocab = {s: i for i, s in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in trained:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    final = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    final.pre_tokenizer = pre_tokenizers.Metaspace()
    final.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    final.add_special_tokens(specials)
    out.mkdir(parents=True, exist_ok=True)
    final.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
                                                           "unk_token": "<unk>"}), encoding="utf-8")
    return out


# ---- comparison -------------------------------------------------------------------------------

def load_backend(spec: str):
    """(name, tokenizers.Tokenizer) for a folder, or "bundled" for the bundled model's tokenizer."""
    from lmlab.tokenizer import Tokenizer

    if spec in ("bundled", "smollm2"):
        from lmlab.model.io.resolve import resolve

        return "bundled (SmolLM2)", Tokenizer.from_folder(resolve("smollm2")).backend
    path = Path(spec)
    if path.is_file() and path.name == "tokenizer.json":
        path = path.parent
    if not (path / "tokenizer.json").is_file():
        raise LmlabError(f"{spec}: no tokenizer.json here (give a tokenizer or model folder, or `bundled`)")
    return path.name, Tokenizer.from_folder(path).backend


def measure(backend, texts: list[str]) -> dict:
    """Tokens, words, bytes and split words of a list of texts under one tokenizer."""
    tokens = words = split = 0
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    for enc, text in zip(backend.encode_batch(texts, add_special_tokens=False), texts):
        spans = [m.span() for m in _WORD.finditer(text)]
        per_word = [0] * len(spans)
        j = 0
        for start, end in enc.offsets:
            if start >= len(text) or text[start:end].isspace():  # a token of spaces belongs to no word
                continue
            while j < len(spans) - 1 and start >= spans[j][1]:
                j += 1
            if spans:
                per_word[j] += 1
        tokens += len(enc.ids)  # every token counts, spaces too
        words += len(spans)
        split += sum(1 for c in per_word if c > 1)
    return {"tokens": tokens, "words": words, "bytes": n_bytes, "split_words": split}


def compare(specs: list[str], data: str, part: str = "all") -> list[dict]:
    from lmlab.data.records import read_records

    by_lang: dict[str, dict[str, str]] = {}
    for r in read_records([Path(data)]):
        if "lang" not in r or "id" not in r:
            raise LmlabError(f"{r['_where']}: a parallel corpus needs `lang`, `id` and `text` on every line")
        if in_part(r, part):
            by_lang.setdefault(r["lang"], {})[str(r["id"])] = r["text"]
    english = next((lang for lang in ENGLISH if lang in by_lang), None)
    if english is None:
        raise LmlabError(f"{data}: no English sentences (lang eng or en) to measure the premium against")
    rows = []
    for spec in specs:
        name, backend = load_backend(spec)
        for lang, sents in sorted(by_lang.items(), key=lambda kv: (kv[0] != english, kv[0])):
            ids = sorted(set(sents) & set(by_lang[english]))
            m = measure(backend, [sents[i] for i in ids])
            e_tokens = measure(backend, [by_lang[english][i] for i in ids])["tokens"] if lang != english \
                else m["tokens"]
            rows.append({"tokenizer": name, "lang": lang, "sentences": len(ids),
                         "fertility": round(m["tokens"] / max(m["words"], 1), 3),
                         "bytes/token": round(m["bytes"] / max(m["tokens"], 1), 3),
                         "words split %": round(100 * m["split_words"] / max(m["words"], 1), 1),
                         "premium vs eng": round(m["tokens"] / max(e_tokens, 1), 3),
                         "tokens": m["tokens"]})
    return rows


def plot_compare(rows: list[dict], png: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(dict.fromkeys(r["tokenizer"] for r in rows))
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    value = {(r["tokenizer"], r["lang"]): r for r in rows}
    fig, axes = plt.subplots(2, 1, figsize=(max(8, len(langs) * 0.6), 7), sharex=True)
    x = np.arange(len(langs))
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        for ax, key in zip(axes, ("premium vs eng", "bytes/token")):
            ax.bar(x + i * width, [value.get((n, lang), {}).get(key, 0) for lang in langs], width, label=n)
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].set_ylabel("token premium vs English")
    axes[1].set_ylabel("bytes per token")
    axes[1].set_xticks(x + 0.4 - width / 2, langs, rotation=45)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
