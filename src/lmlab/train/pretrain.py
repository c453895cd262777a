"""Pretraining from scratch (`lmlab train pretrain`): a freshly initialised GPT-2- or Llama-style
model, optionally Mixture-of-Experts, learns next-token prediction on a text corpus.

The corpus (lmlab.train.corpus) is tokenised, each document ended by EOS, and the documents
concatenated into one stream cut into full rows of `max_length` tokens, so no compute goes to
padding. A row may hold the end of one document and the start of the next: `segments` keeps
attention inside each document and positions restart at each one (as Llama 3 trains), and the
first token of a document is not predicted from the previous one. The tail of the stream, after
a seeded shuffle of the documents, is the validation split.

The run reports tokens/s and MFU: achieved model FLOP/s (lmlab.train.scaling) over a peak that
is stated in the config or measured here with a large matmul.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch

from lmlab.errors import LmlabError
from lmlab.train import corpus, scaling
from lmlab.train.config import PretrainConfig, TrainConfig
from lmlab.train.data import IGNORE
from lmlab.train.objectives import pretrain as objective, sft
from lmlab.train.run import Run
from lmlab.train.trainer import Batches


def tokenizer_folder(p: PretrainConfig, texts: list[str] | None = None, out: Path | None = None) -> Path:
    """The folder whose tokenizer.json the model uses: a trained BPE (kept in the run folder, so a
    resumed run reuses it), a given model/tokenizer folder, or the bundled model's."""
    from lmlab.model.io.resolve import resolve

    spec = p.tokenizer
    if spec and spec.startswith("bpe:"):
        folder = out / "tokenizer"
        if not (folder / "tokenizer.json").is_file():
            corpus.train_bpe(texts, _bpe_size(spec), folder)
        return folder
    if spec and (Path(spec) / "tokenizer.json").is_file():
        return Path(spec)
    return resolve(spec)


def vocab_size(p: PretrainConfig) -> int:
    if p.tokenizer and p.tokenizer.startswith("bpe:"):
        return _bpe_size(p.tokenizer)
    from lmlab.tokenizer import Tokenizer

    return Tokenizer.from_folder(tokenizer_folder(p)).vocab_size


def _bpe_size(spec: str) -> int:
    try:
        n = int(spec[4:])
    except ValueError:
        n = 0
    if n < 257:  # the 256 byte symbols and EOS come first
        raise LmlabError(f"pretrain.tokenizer={spec!r}: expected bpe:N with N > 256")
    return n


# ---- rows -------------------------------------------------------------------------------------

def pack_rows(docs: list[list[int]], T: int) -> dict:
    """Documents concatenated and cut into rows of T tokens (the remainder is dropped), with
    segment ids, positions restarting at each document, and labels that skip each first token."""
    stream = torch.tensor([t for d in docs for t in d], dtype=torch.long)
    doc = torch.repeat_interleave(torch.arange(len(docs)), torch.tensor([len(d) for d in docs]))
    R = len(stream) // T
    ids, segments = stream[:R * T].view(R, T), doc[:R * T].view(R, T)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    col = torch.arange(T).expand(R, T)
    positions = col - torch.where(starts, col, 0).cummax(1).values
    labels = ids.masked_fill(starts, IGNORE)
    return {"ids": ids, "labels": labels, "segments": segments, "positions": positions}


def split_rows(texts: list[str], tokenizer, T: int, val_fraction: float, seed: int) -> tuple[dict, dict]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise LmlabError("the tokenizer has no EOS token to end documents with")
    docs = [ids + [eos] for ids in (e.ids for e in tokenizer.backend.encode_batch(texts, add_special_tokens=False))]
    random.Random(seed).shuffle(docs)
    total = sum(len(d) for d in docs)
    n_val = max(T, round(val_fraction * total))  # at least one validation row
    if total - n_val < T:
        raise LmlabError(f"the corpus has {total:,} tokens: too few for a training row of max_length={T} "
                         f"plus {n_val:,} validation tokens; give more text or a shorter max_length")
    flat = [t for d in docs for t in d]
    train_stream, val_stream = flat[:-n_val], flat[-n_val:]
    # Document boundaries survive the split: re-cut each part at its EOS tokens.
    return pack_rows(_split_docs(train_stream, eos), T), pack_rows(_split_docs(val_stream, eos), T)


def _split_docs(stream: list[int], eos: int) -> list[list[int]]:
    docs, cur = [], []
    for t in stream:
        cur.append(t)
        if t == eos:
            docs.append(cur)
            cur = []
    return docs + ([cur] if cur else [])


def collate_rows(rows: dict, idx: list[int]) -> dict:
    i = torch.tensor(idx, dtype=torch.long)
    return {**{k: v[i] for k, v in rows.items()}, "tokens": i.numel() * rows["ids"].shape[1]}


def row_batches(rows: dict, batch_size: int, seed: int) -> Batches:
    """Shuffled full micro-batches of rows, deterministic in (seed, epoch) for exact resume."""
    R = len(rows["ids"])

    def plan(epoch):
        order = list(range(R))
        random.Random(f"{seed}-{epoch}").shuffle(order)
        return [order[i:i + batch_size] for i in range(0, R - batch_size + 1, batch_size)] or [order]

    return Batches(list(range(R)), plan, lambda idx: collate_rows(rows, idx))


def evaluate_rows(rows: dict, batch_size: int):
    """model -> eval_loss over the validation rows (and expert balance for MoE models)."""
    from lmlab.model.moe import expert_load, moe_layers

    R = len(rows["ids"])

    def evaluate(model) -> dict:
        device = next(model.parameters()).device
        total, count, loads = 0.0, 0, []
        for s in range(0, R, batch_size):
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                     for k, v in collate_rows(rows, list(range(s, min(s + batch_size, R)))).items()}
            loss, n, _ = sft.loss(model, batch)
            total, count = total + float(loss), count + n
            if moe_layers(model):
                loads.append(expert_load(model))
        out = {"eval_loss": total / max(count, 1)}
        if loads:
            load = torch.stack(loads).mean(0)  # [layers, experts]
            out.update({f"eval_{k}": v for k, v in objective.balance(load).items()})
            out["eval_expert_load"] = [round(x, 4) for x in load.mean(0).tolist()]
        return out

    return evaluate


# ---- the run ----------------------------------------------------------------------------------

NO_CORPUS = "no corpus: give data (text/JSONL/Parquet files, a folder, or stories:N)"


def pretrain(cfg: TrainConfig) -> dict:
    """Train a model from scratch on cfg.data; returns the last metrics, MFU, samples and paths."""
    from lmlab.model.io.hf import save_model
    from lmlab.model.transformer import Transformer
    from lmlab.tokenizer import Tokenizer

    if cfg.pretrain.init:
        return continue_pretraining(cfg)
    run = Run(cfg, "pretrain", "pretraining", NO_CORPUS, check=corpus.read_corpus, base=None, eval_data=False)
    p, out, T, d, texts = cfg.pretrain, Path(cfg.output), cfg.max_length, run.d, run.read["data"]
    if d.main:  # rank 0 trains the tokenizer (if any); after the barrier every rank finds it on disk
        tokenizer_folder(p, texts, out)
    d.barrier()
    folder = tokenizer_folder(p, texts, out)
    tokenizer = Tokenizer.from_folder(folder)
    train_rows, val_rows = split_rows(texts, tokenizer, T, p.val_fraction, cfg.seed)
    config = p.model_config(tokenizer.vocab_size, T, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(cfg.seed)
    model = Transformer(config).train()
    counts = scaling.count_params(config)
    flops_token = scaling.flops_per_token(config, T)
    peak = p.peak_flops or scaling.measure_peak_flops()
    if d.main:
        kind = f", {config.n_experts} experts (top-{config.experts_per_token})" if config.n_experts else ""
        print(f"pretraining a {counts['total'] / 1e6:.2f}M-parameter {p.family} model "
              f"({counts['active'] / 1e6:.2f}M active per token{kind}) on {train_rows['ids'].numel():,} tokens "
              f"({len(train_rows['ids'])} rows of {T}); {val_rows['ids'].numel():,} validation tokens")
    data = row_batches(train_rows, cfg.batch_size * d.world, cfg.seed)
    result = run.fit(objective.loss, data, evaluate_rows(val_rows, cfg.batch_size), model=model)
    achieved = result.get("tokens_per_s", 0.0) * flops_token
    result.update({"params": counts["total"], "active_params": counts["active"], "flops_per_token": flops_token,
                   "model_flops_per_s": achieved, "peak_flops_per_s": peak * d.world,
                   "mfu": achieved / (peak * d.world)})
    if "eval_loss" in result:
        result["eval_ppl"] = math.exp(min(result["eval_loss"], 50))

    def save(m, result):  # DIR/final: an HF folder with the tokenizer
        result.update(samples(m, tokenizer, p.samples))
        return save_model(m.eval(), out / "final", tokenizer_folder=folder)

    return run.finish(result, model=model, save=save, rebuild=lambda: Transformer(config))


def continue_pretraining(cfg: TrainConfig) -> dict:
    """`--init MODEL`: the next-token objective on loaded weights (domain-adaptive pretraining),
    packed as above, full or LoRA (`method`). The validation split is scored before and after,
    so the result says how far the domain's perplexity fell."""
    if cfg.method not in ("full", "lora"):
        raise LmlabError(f"pretrain.init: method must be full or lora, got {cfg.method!r}")
    rows = {}

    def score_before(run: Run) -> None:  # the starting model on the validation split
        if cfg.max_length > run.model.config.max_seq_len:
            raise LmlabError(f"max_length={cfg.max_length} exceeds the model's context of "
                             f"{run.model.config.max_seq_len}")
        rows["train"], rows["val"] = split_rows(run.read["data"], run.tokenizer, cfg.max_length,
                                                cfg.pretrain.val_fraction, cfg.seed)
        rows["evaluate"] = evaluate_rows(rows["val"], cfg.batch_size)
        with torch.no_grad():
            rows["before"] = rows["evaluate"](run.model.eval())["eval_loss"]
        run.model.train()

    run = Run(cfg, "pretrain", "continued pretraining", NO_CORPUS, check=corpus.read_corpus,
              base=cfg.pretrain.init, before_method=score_before, eval_data=False)
    train_rows, before = rows["train"], rows["before"]
    if run.d.main:
        print(f"continued pretraining of {run.folder} on {train_rows['ids'].numel():,} tokens "
              f"({len(train_rows['ids'])} rows of {cfg.max_length}); validation perplexity before: "
              f"{math.exp(min(before, 50)):.3f}")
    data = row_batches(train_rows, cfg.batch_size * run.d.world, cfg.seed)
    result = {**run.fit(objective.loss, data, rows["evaluate"]), "init_eval_loss": before,
              "init_eval_ppl": math.exp(min(before, 50))}
    if "eval_loss" in result:
        result["eval_ppl"] = math.exp(min(result["eval_loss"], 50))
    if run.d.main:
        result.update(samples(run.model, run.tokenizer, cfg.pretrain.samples))
    return run.finish(result)


def samples(model, tokenizer, prompts: list[str], max_tokens: int = 60) -> dict:
    """Continuations of a few prompts through the Engine: what the model has learned to write."""
    from lmlab.engine.engine import Engine
    from lmlab.engine.params import SamplingParams

    engine = Engine(model.eval(), tokenizer, [tokenizer.eos_token_id])
    outs = engine.generate([tokenizer.encode(t, add_special_tokens=False) for t in prompts],
                           SamplingParams(max_tokens=max_tokens, temperature=0.7, top_k=40, seed=0))
    return {f"sample_{i}": prompt + o.outputs[0].text for i, (prompt, o) in enumerate(zip(prompts, outs))}
