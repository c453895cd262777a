"""Next-token prediction on the labelled tokens: SFT (assistant turns) and pretraining (all)."""

from __future__ import annotations

import torch.nn.functional as F

from lmlab.train.data import IGNORE, pack_batch, pad_batch


def collate(examples, pad_id: int, packing: bool = False, row_length: int = 0) -> dict:
    return pack_batch(examples, pad_id, row_length) if packing else pad_batch(examples, pad_id)


def loss(model, batch) -> tuple:
    """Summed cross-entropy over labelled tokens, and their count. Only labelled positions go
    through the output layer: with a 49k vocabulary that skips most of a prompt's cost."""
    ids, labels = batch["ids"], batch["labels"]
    h = model.hidden_states(ids, positions=batch.get("positions"), segments=batch.get("segments"))
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = model.lm_head(h[:, :-1][keep])
    total = F.cross_entropy(logits.float(), target[keep], reduction="sum")
    return total, int(keep.sum()), {"tokens": batch["tokens"]}
