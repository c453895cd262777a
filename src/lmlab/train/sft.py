"""`lmlab train sft`: supervised fine-tuning (instruction tuning) on the run skeleton. Its pieces:
records checked before the model loads, tokenised and length-batched (or packed) examples, the
next-token loss on the labelled tokens, eval_loss on held-out records. `--data flan` scores the
held-out task clusters before and after (lmlab.train.flan); `--method feature` is the feature
classifier stage (lmlab.train.classify)."""

from __future__ import annotations

import hashlib

from lmlab.errors import LmlabError
from lmlab.train import data as D
from lmlab.train.config import TrainConfig
from lmlab.train.objectives import sft as sft_objective
from lmlab.train.run import Run
from lmlab.train.trainer import Batches


def sft(cfg: TrainConfig) -> dict:
    """Supervised fine-tuning; returns the last metrics and output paths."""
    if cfg.method == "feature":
        from lmlab.train.classify import feature

        return feature(cfg)
    from lmlab.train import flan

    flan_run, scores = cfg.data == "flan", {}

    def score_before(run: Run) -> None:  # the held-out clusters, before any method changes the model
        cfg.data, scores["held"] = flan.write_data(cfg)
        scores["before"] = flan.score(run.model, run.tokenizer, run.folder, scores["held"]) if run.d.main else None

    run = Run(cfg, "sft", "SFT", "no training data: give data (a .jsonl/.parquet file, or flan for the built-in tasks)",
              check=lambda path: None if path == "flan" else sft_records(cfg, path),
              before_method=score_before if flan_run else None)
    data = sft_batches(cfg, run.tokenizer, cfg.data, run.d.world, run.read.get("data"))
    evaluate = None
    if cfg.eval_data:
        held = sft_batches(cfg, run.tokenizer, cfg.eval_data, records=run.read["eval_data"])
        evaluate = eval_loss(sft_objective.loss, held.examples, held.collate, cfg.batch_size)
    result = run.fit(sft_objective.loss, data, evaluate)
    if flan_run and run.d.main:
        after = flan.score(run.model, run.tokenizer, run.folder, scores["held"])
        result.update(flan.report(scores["before"], after, cfg))
    return run.finish(result)



def sft_records(cfg: TrainConfig, path: str) -> list[dict]:
    """The records of a data file, each checked to be a supported format (an error naming file:line)."""
    stats = {}
    records = D.read_records(path, cfg.skip_bad_rows, stats)
    if stats.get("skipped_rows"):
        print(f"{path}: skipped {stats['skipped_rows']} malformed line(s)")
    for r in records:
        D.to_messages(r)
    return records


def sft_batches(cfg: TrainConfig, tokenizer, path: str, world: int = 1, records: list[dict] | None = None) -> Batches:
    """Tokenised, batched examples of `path` (or of its `records`, read already)."""
    records = sft_records(cfg, path) if records is None else records
    key = hashlib.sha256((tokenizer.backend.to_str() + str(tokenizer.chat_template)).encode()).hexdigest()
    examples = D.tokenize_records(records, tokenizer, cfg.max_length, cfg.chat_template, cache_key=key)
    if not examples:
        raise LmlabError(f"{path}: no usable training examples")
    pad = tokenizer.token_id(tokenizer.special_tokens.get("pad_token", "")) or 0
    lengths = [len(e.ids) for e in examples]
    global_batch = cfg.batch_size * world
    if cfg.packing:
        # A packed micro-batch holds about batch_size * max_length tokens per rank.
        def plan(epoch):
            order = D.length_batches(lengths, 1, cfg.seed, epoch)
            out, cur, used = [], [], 0
            for [i] in order:
                if cur and used + lengths[i] > global_batch * cfg.max_length:
                    out.append(cur)
                    cur, used = [], 0
                cur.append(i)
                used += lengths[i]
            return out + ([cur] if cur else [])
    else:
        def plan(epoch):
            return [b for b in D.length_batches(lengths, global_batch, cfg.seed, epoch) if len(b) == global_batch] \
                or [list(range(len(lengths)))]
    return Batches(examples, plan, lambda ex: sft_objective.collate(ex, pad, cfg.packing, cfg.max_length))


def eval_loss(loss_fn, examples, collate, batch_size: int = 8):
    """A function model -> {"eval_loss": mean loss per counted unit} over fixed examples."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))

    def evaluate(model) -> dict:
        total, count = 0.0, 0
        for s in range(0, len(order), batch_size):
            loss, n, _ = loss_fn(model, collate([examples[i] for i in order[s:s + batch_size]]))
            total, count = total + float(loss), count + n
        return {"eval_loss": total / max(count, 1)}

    return evaluate
