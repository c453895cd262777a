"""Pretraining corpora: read documents from text files, JSONL or Parquet; make one offline; train a
small BPE tokenizer for it.

`stories:N` is a corpus made without the network: N short children's stories written by a
small grammar (characters, places, a problem and its resolution). We measured the alternative,
stories written by the bundled SmolLM2 through the Engine (48 prompts, batches of 16, sampled):
35 tokens/s on our 2-core CPU, so the ~2M tokens of the default recipe would take 16 hours. The
grammar writes them in about a second, and its regular language is what lets a 10M-parameter
model visibly learn to write in minutes (recipes/pretrain_tiny.yaml).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from lmlab.errors import LmlabError

TEXT_SUFFIXES = (".txt", ".md")


def read_corpus(spec: str) -> list[str]:
    """Documents from `stories:N`, a file (.txt/.md: one document per file; .jsonl: the "text" of
    each line; .parquet: its "text" column) or a folder of such files (recursively)."""
    if spec.startswith("stories:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise LmlabError(f"{spec!r}: expected stories:N with N a number of stories") from None
        return stories(n)
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES + (".jsonl", ".parquet"))
        if not files:
            raise LmlabError(f"{path}: no .txt, .md, .jsonl or .parquet files in this folder")
        docs = [d for f in files for d in _read_file(f)]
    elif path.is_file():
        docs = _read_file(path)
    else:
        raise LmlabError(f"{spec}: no such corpus file or folder (or use stories:N)")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise LmlabError(f"{spec}: the corpus has no text")
    return docs


def _read_file(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return [path.read_text(encoding="utf-8", errors="replace")]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise LmlabError(f"{path}: no 'text' column (columns: {', '.join(table.column_names)})")
        return [t for t in table.column("text").to_pylist() if isinstance(t, str)]
    if suffix == ".jsonl":
        docs = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line).get("text")
                except (ValueError, AttributeError):
                    raise LmlabError(f"{path}:{n}: not a JSON object") from None
                if not isinstance(text, str):
                    raise LmlabError(f'{path}:{n}: expected {{"text": "..."}}')
                docs.append(text)
        return docs
    raise LmlabError(f"{path}: unsupported corpus file (use .txt, .md, .jsonl or .parquet)")


# ---- an offline corpus -----------------------------------------------------------------------------

NAMES = {"he": ["Tom", "Ben", "Max", "Leo", "Sam", "Jack", "Finn", "Oscar", "Noah", "Theo"],
         "she": ["Lily", "Mia", "Anna", "Zoe", "Sara", "Emma", "Lucy", "Ruby", "Ella", "Nora"]}
ANIMALS = ["cat", "dog", "bunny", "fox", "bear", "duck", "mouse", "owl", "frog", "pig"]
ADJECTIVES = ["little", "happy", "brave", "shy", "kind", "silly", "curious", "tiny", "friendly", "sleepy"]
PLACES = ["park", "forest", "beach", "garden", "farm", "lake", "hill", "town", "meadow", "river"]
THINGS = ["red ball", "old kite", "shiny stone", "little boat", "blue hat", "big box", "yellow key",
          "soft blanket", "green cup", "funny drum"]
HIDING = ["under a big tree", "behind a rock", "in the tall grass", "near the water", "on a high branch",
          "inside a hollow log"]
LIKES = ["play with leaves", "sing songs", "run fast", "look at the clouds", "build towers", "dance in the rain",
         "eat sweet berries", "jump in puddles"]
FEELINGS = ["sad", "worried", "scared", "upset"]
MORALS = ["it is good to help your friends", "sharing makes everyone happy", "being kind is the best thing",
          "you should never give up", "friends make every day better"]


def stories(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [_story(rng) for _ in range(n)]


def _story(rng: random.Random) -> str:
    he, he2 = rng.choice(["he", "she"]), rng.choice(["he", "she"])
    name, name2 = rng.choice(NAMES[he]), rng.choice(NAMES[he2])
    while name2 == name:
        name2 = rng.choice(NAMES[he2])
    his, his2 = ("his" if he == "he" else "her"), ("his" if he2 == "he" else "her")
    animal, animal2 = rng.choice(ANIMALS), rng.choice(ANIMALS)
    place, thing = rng.choice(PLACES), rng.choice(THINGS)
    opening = rng.choice([
        f"Once upon a time, there was a {rng.choice(ADJECTIVES)} {animal} named {name}.",
        f"One sunny day, {name} the {animal} went to the {place}.",
        f"{name} was a {rng.choice(ADJECTIVES)} {animal} who lived near the {place}.",
    ])
    likes = f"{he.capitalize()} loved to {rng.choice(LIKES)}."
    meet = f"At the {place}, {he} met a {rng.choice(ADJECTIVES)} {animal2} called {name2}."
    problem = rng.choice([
        f"{name2} was {rng.choice(FEELINGS)} because {he2} had lost {his2} {thing}.",
        f"{name2} wanted to play, but {his2} {thing} was stuck {rng.choice(HIDING)}.",
    ])
    help_ = rng.choice([
        f'"Do not worry," said {name}. "I will help you."',
        f'"Let us look together," said {name} with a smile.',
    ])
    found = f"They looked everywhere, and at last they found the {thing} {rng.choice(HIDING)}."
    ending = rng.choice([
        f"{name2} was so happy. {he2.capitalize()} gave {name} a big hug.",
        f"{name2} smiled and said thank you. They played together until the sun went down.",
        f"{name2} laughed and clapped. Then {name} went home to tell {his} mother all about it.",
    ])
    moral = rng.choice([f"From that day on, {name} and {name2} were best friends.",
                        f"{name} learned that {rng.choice(MORALS)}.", "The end."])
    return " ".join([opening, likes, meet, problem, help_, found, ending, moral])


# ---- a tokenizer for a small corpus ----------------------------------------------------------------

def train_bpe(texts: list[str], vocab_size: int, out_dir: Path) -> Path:
    """A byte-level BPE trained on the corpus (GPT-2's scheme), written as a tokenizer folder.
    A tiny model cannot afford a 49k-token embedding: most of its parameters would sit there."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    eos = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[eos], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({"eos_token": eos, "bos_token": eos}), encoding="utf-8")
    return out_dir
