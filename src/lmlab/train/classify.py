"""Feature-based fine-tuning (`--method feature`): the language model stays frozen and serves as a
feature extractor; a linear classifier on its mean-pooled final hidden states learns the labels.

Data: classification records, {"text", "label"} or {"prompt", "completion"} with the completion
as the label. The features are computed once, so each epoch afterwards costs only the
classifier's matmul: the cheapest method to train, and the only one that cannot generate text.
Saved as DIR/classifier (classifier.safetensors + classifier.json naming the base model);
`load_classifier` brings it back for inference.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.errors import LmlabError
from lmlab.train import data as D
from lmlab.train.config import TrainConfig
from lmlab.train.run import Run
from lmlab.train.trainer import Batches


def read_labelled(path: str) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for rec in D.read_records(path):
        if "text" in rec and "label" in rec:
            text, label = rec["text"], rec["label"]
        elif "prompt" in rec and "completion" in rec:
            text, label = rec["prompt"], rec["completion"]
        else:
            raise LmlabError(f"{rec.get('_where', path)}: a classification record needs text/label or "
                             "prompt/completion (the completion is the label)")
        texts.append(str(text))
        labels.append(str(label).strip())
    if not texts:
        raise LmlabError(f"{path}: no records")
    return texts, labels


def encode(tokenizer, text: str, chat_template: bool, max_length: int) -> list[int]:
    """The text as the model sees it in SFT: a user turn when the model has a chat template."""
    if chat_template and tokenizer.chat_template:
        return tokenizer.encode_chat([{"role": "user", "content": text}])[-max_length:]
    return tokenizer.encode(text)[-max_length:]


@torch.no_grad()
def features(model, ids: list[list[int]], batch_size: int = 16) -> torch.Tensor:
    """[N, dim]: final hidden states averaged over each text's tokens."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(ids), batch_size):
        chunk = ids[s:s + batch_size]
        batch = D.pad_batch([D.Example(i, i) for i in chunk], 0)
        h = model.hidden_states(batch["ids"].to(device))
        real = (torch.arange(h.shape[1], device=device)[None] < torch.tensor([len(i) for i in chunk], device=device)[:, None])
        out.append((h * real[..., None]).sum(1) / real.sum(1, keepdim=True))
    return torch.cat(out).float().cpu()


def loss(head, batch) -> tuple:
    logits = head(batch["x"])
    return F.cross_entropy(logits, batch["y"], reduction="sum"), len(batch["y"]), {"tokens": batch["tokens"]}


def _batches(x, y, lengths, batch_size, seed) -> Batches:
    examples = list(range(len(y)))

    def plan(epoch):
        order = examples[:]
        random.Random(f"{seed}-{epoch}").shuffle(order)
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def collate(idx):
        i = torch.tensor(idx)
        return {"x": x[i], "y": y[i], "tokens": int(sum(lengths[j] for j in idx))}

    return Batches(examples, plan, collate)


def _evaluator(x, y):
    def evaluate(head) -> dict:
        logits = head(x.to(head.weight.device))
        return {"eval_loss": float(F.cross_entropy(logits, y.to(logits.device))),
                "eval_accuracy": float((logits.argmax(-1).cpu() == y).float().mean())}

    return evaluate


def feature(cfg: TrainConfig) -> dict:
    """`lmlab train sft --method feature` on the run skeleton: the frozen model's features of
    each text, once; then a linear classifier trains on them."""
    run = Run(cfg, "sft", "feature classifier",
              "no training data: give a classification file (text/label or prompt/completion)",
              check=read_labelled, quiet=True)
    texts, labels = run.read["data"]
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise LmlabError(f"{cfg.data}: a classifier needs at least two labels, found {classes}")
    model, tokenizer, d, info = run.model, run.tokenizer, run.d, run.info
    head = nn.Linear(model.config.dim, len(classes))
    trainable = sum(p.numel() for p in head.parameters())
    info.update(trainable_params=trainable, trainable_fraction=trainable / info["total_params"])
    if d.main:
        print(f"feature: {trainable:,} trainable parameters (a {len(classes)}-way linear classifier) on a frozen "
              f"model of {info['total_params']:,} ({100 * info['trainable_fraction']:.3f}%)")
    model.to(d.device)
    ids = [encode(tokenizer, t, cfg.chat_template, cfg.max_length) for t in texts]
    x = features(model, ids, cfg.batch_size)
    y = torch.tensor([classes.index(label) for label in labels])
    evaluate = None
    if cfg.eval_data:
        eval_texts, eval_labels = run.read["eval_data"]
        known = [i for i, label in enumerate(eval_labels) if label in classes]
        ex = features(model, [encode(tokenizer, eval_texts[i], cfg.chat_template, cfg.max_length) for i in known])
        evaluate = _evaluator(ex, torch.tensor([classes.index(eval_labels[i]) for i in known]))
    result = run.fit(loss, _batches(x, y, [len(i) for i in ids], cfg.batch_size * d.world, cfg.seed), evaluate,
                     model=head)
    base = str(Path(cfg.model).resolve()) if cfg.model and Path(cfg.model).exists() else cfg.model or "smollm2"
    return run.finish(result, model=head,
                      save=lambda h, _: save_classifier(h, classes, Path(cfg.output) / "classifier", base, cfg),
                      rebuild=lambda: nn.Linear(model.config.dim, len(classes)))


def save_classifier(head: nn.Linear, classes: list[str], out_dir: Path, base_model: str, cfg: TrainConfig) -> Path:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"weight": head.weight.detach().float().cpu().contiguous(),
               "bias": head.bias.detach().float().cpu().contiguous()}, str(out_dir / "classifier.safetensors"))
    meta = {"base_model": base_model, "labels": classes, "pooling": "mean", "chat_template": cfg.chat_template,
            "max_length": cfg.max_length}
    (out_dir / "classifier.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out_dir


class FeatureClassifier:
    """A saved feature classifier with its frozen base model: `predict(texts) -> labels`."""

    def __init__(self, folder: str | Path):
        from safetensors.torch import load_file

        from lmlab.model.io.hf import load_model
        from lmlab.model.io.resolve import resolve
        from lmlab.tokenizer import Tokenizer

        folder = Path(folder)
        try:
            self.meta = json.loads((folder / "classifier.json").read_text(encoding="utf-8"))
            weights = load_file(str(folder / "classifier.safetensors"))
        except (OSError, ValueError) as e:
            raise LmlabError(f"{folder}: not a feature classifier folder ({e})") from None
        base = resolve(self.meta["base_model"])
        self.model, self.tokenizer = load_model(base), Tokenizer.from_folder(base)
        self.head = nn.Linear(*weights["weight"].shape[::-1])
        self.head.load_state_dict(weights)
        self.labels = self.meta["labels"]

    @torch.no_grad()
    def predict(self, texts: list[str]) -> list[str]:
        ids = [encode(self.tokenizer, t, self.meta["chat_template"], self.meta["max_length"]) for t in texts]
        return [self.labels[i] for i in self.head(features(self.model, ids)).argmax(-1).tolist()]
