"""A persisted retrieval index: chunks, BM25 (bm25s) and dense vectors (faiss), in one folder.

    DIR/manifest.json   settings (chunking, tokenizer, embedding model, faiss kind) and, per document,
                        its content hash and chunk count
    DIR/chunks.jsonl    one chunk a line, in index order
    DIR/vectors.npy     the chunks' unit embeddings (kept so that an update embeds only what changed)
    DIR/dense.faiss     the faiss index over them (flat, IVF or HNSW)
    DIR/bm25/           bm25s's saved index

Updating a folder re-reads the given documents and re-chunks and re-embeds only those that are new
or whose content hash changed. Documents gone from the inputs are pruned (`prune`): with "inputs"
(the default) those whose file lies in a given file or folder but that were not read again (the file
deleted, the JSONL row's id gone), so that indexing another folder into the same index still adds
to it; with "all" every document not read in this run; with "none" nothing. A file that exists but
cannot be read this time keeps its old chunks (a read error is not a deletion). BM25 and faiss are
rebuilt over the kept chunks and their stored vectors (nothing is re-embedded): the same for flat,
IVF and HNSW, as HNSW cannot remove vectors and positions are the chunk ids. An index is only ever
queried or updated with the embedding model that built it: another one is refused, naming both.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lmlab.errors import LmlabError
from lmlab.rag.chunks import Chunk, chunk_text
from lmlab.rag.readers import read_documents

FORMAT = 1
DENSE_KINDS = ("flat", "ivf", "hnsw", "none")
PRUNE = ("inputs", "all", "none")
_JSONL_ROW = re.compile(r"^(.*\.(?:jsonl|ndjson)):\d+$", re.IGNORECASE)  # a JSONL document's source
_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default token pattern


@dataclass
class IndexConfig:
    chunk_tokens: int = 256
    overlap: int = 32
    tokenizer: str | None = None  # model whose tokenizer counts chunk tokens (default: the bundled one)
    embedding: str | None = None  # all-MiniLM-L6-v2 (default) or a sentence-transformers folder
    dense: str = "flat"  # flat | ivf | hnsw | none (BM25 only)
    bm25_method: str = "lucene"  # any bm25s method: lucene, robertson, atire, bm25l, bm25+
    k1: float = 1.5
    b: float = 0.75
    nprobe: int = 16  # IVF lists searched per query
    ef_search: int = 64  # HNSW candidate list per query
    id_field: str = "id"
    text_field: str = "text"


@dataclass
class BuildReport:
    added: int = 0
    changed: int = 0
    removed: int = 0  # documents pruned: gone from the inputs
    unchanged: int = 0
    kept: int = 0  # documents from sources outside this run's inputs, left as they were
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    embedded: int = 0  # chunks embedded in this run
    seconds: float = 0.0

    def summary(self) -> str:
        s = (f"{self.added} new, {self.changed} changed, {self.removed} removed, {self.unchanged} unchanged "
             f"documents" + (f", {self.kept} from other sources kept" if self.kept else "") +
             f"; {self.chunks} chunks ({self.embedded} embedded) in {self.seconds:.1f}s")
        if self.skipped:
            s += f"; skipped {len(self.skipped)} unreadable: " + "; ".join(f"{p} ({w})" for p, w in self.skipped)
        return s


def bm25_tokens(text: str) -> list[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS_EN]


class Index:
    def __init__(self, folder: Path | None, config: IndexConfig, chunks: list[Chunk], vectors, documents: dict,
                 embedding_name: str | None, tokenizer_name: str):
        self.folder, self.config, self.chunks, self.vectors = folder, config, chunks, vectors
        self.documents = documents  # doc_id -> {"digest", "source", "chunks"}
        self.embedding_name, self.tokenizer_name = embedding_name, tokenizer_name
        self._bm25 = self._dense = self._embedder = None

    # ---- building -----------------------------------------------------------------------------

    @classmethod
    def build(cls, paths, out: str | Path | None, config: IndexConfig | None = None,
              progress: bool = False, prune: str = "inputs") -> tuple["Index", BuildReport]:
        """Index documents into `out` (created, or updated in place when it holds an index; `prune`
        says which documents not read in this run leave it, see the module's docstring)."""
        t0 = time.perf_counter()
        config = config or IndexConfig()
        if config.dense not in DENSE_KINDS:
            raise LmlabError(f"dense={config.dense!r}: expected one of {', '.join(DENSE_KINDS)}")
        if prune not in PRUNE:
            raise LmlabError(f"prune={prune!r}: expected one of {', '.join(PRUNE)}")
        from lmlab.rag.chunks import windows

        windows(1, config.chunk_tokens, config.overlap)  # validates the pair before any work
        old = None
        if out is not None and (Path(out) / "manifest.json").is_file():
            old = cls.load(out)
            if config.embedding is None:  # an update embeds with the index's own model unless told otherwise
                config.embedding = old.config.embedding
        embedding_name = None
        if config.dense != "none":
            from lmlab.rag.embed import model_folder
            embedding_name = model_folder(config.embedding)[0]
        if old is not None:
            old._check_same_settings(config, embedding_name)
        tok_name, tokenizer = _tokenizer(config.tokenizer if old is None else old.tokenizer_name)
        read = read_documents(paths, config.id_field, config.text_field)
        report = BuildReport(skipped=read.skipped)
        if not read.documents and old is None:
            raise LmlabError("no readable documents to index" + (f" ({read.summary()})" if read.skipped else ""))

        # old chunks of untouched documents are kept with their vectors; the rest is rebuilt
        old_docs = old.documents if old else {}
        given = {d.doc_id: d for d in read.documents}
        gone = _gone(old_docs, given, paths, read.skipped, prune)
        report.removed = len(gone)
        report.kept = sum(d not in given and d not in gone for d in old_docs)
        keep = [i for i, c in enumerate(old.chunks) if c.doc_id not in gone and (
            c.doc_id not in given or old_docs[c.doc_id]["digest"] == given[c.doc_id].digest)] if old else []
        chunks = [old.chunks[i] for i in keep]
        vectors = [old.vectors[keep]] if old is not None and old.vectors is not None else []
        documents = {d: v for d, v in old_docs.items()
                     if d not in gone and (d not in given or v["digest"] == given[d].digest)}
        new_chunks = []
        docs = read.documents
        if progress and len(docs) > 50:
            from tqdm import tqdm
            docs = tqdm(docs, desc="chunk", unit="doc")
        for d in docs:
            prev = old_docs.get(d.doc_id)
            if prev is not None and prev["digest"] == d.digest:
                report.unchanged += 1
                documents[d.doc_id] = {**prev, "source": d.source}  # where it is now, for later pruning
                continue
            report.changed += prev is not None
            report.added += prev is None
            cs = chunk_text(d.doc_id, d.text, tokenizer, config.chunk_tokens, config.overlap)
            documents[d.doc_id] = {"digest": d.digest, "source": d.source, "chunks": len(cs)}
            new_chunks.extend(cs)
        chunks.extend(new_chunks)
        if embedding_name is not None:
            from lmlab.rag.embed import Embedder
            if new_chunks:
                vectors.append(Embedder(config.embedding)([c.text for c in new_chunks], progress=progress))
            vectors = np.concatenate(vectors) if vectors else np.zeros((0, 1), np.float32)
        else:
            vectors = None
        index = cls(Path(out) if out is not None else None, config, chunks, vectors, documents,
                    embedding_name, tok_name)
        index._build_search()
        if out is not None:
            index.save(out)
        report.chunks, report.embedded = len(chunks), len(new_chunks) if embedding_name else 0
        report.seconds = time.perf_counter() - t0
        return index, report

    def _check_same_settings(self, config: IndexConfig, embedding_name: str | None) -> None:
        if embedding_name != self.embedding_name:
            raise LmlabError(f"{self.folder}: this index was built with embedding model "
                             f"{self.embedding_name or 'none (BM25 only)'}, not {embedding_name or 'none'}; "
                             "use the same model or a new --out folder")
        for key in ("chunk_tokens", "overlap", "dense", "bm25_method"):
            if getattr(config, key) != getattr(self.config, key):
                raise LmlabError(f"{self.folder}: built with {key}={getattr(self.config, key)}, not "
                                 f"{getattr(config, key)}; an update keeps the index's settings")

    def _build_search(self) -> None:
        import bm25s

        self._bm25 = bm25s.BM25(method=self.config.bm25_method, k1=self.config.k1, b=self.config.b)
        if self.chunks:
            self._bm25.index([bm25_tokens(c.text) for c in self.chunks], show_progress=False)
        if self.vectors is not None and len(self.vectors):
            self._dense = _faiss_index(self.vectors, self.config)

    # ---- persistence --------------------------------------------------------------------------

    def save(self, out: str | Path) -> None:
        import faiss

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "chunks.jsonl", "w", encoding="utf-8") as f:
            for c in self.chunks:
                f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
        if self.vectors is not None:
            np.save(out / "vectors.npy", self.vectors)
        if self._dense is not None:
            faiss.write_index(self._dense, str(out / "dense.faiss"))
        else:  # pruned to nothing: no stale search structure may outlive its chunks
            (out / "dense.faiss").unlink(missing_ok=True)
        if self.chunks:
            self._bm25.save(out / "bm25", show_progress=False)
        else:
            shutil.rmtree(out / "bm25", ignore_errors=True)
        manifest = {"format": FORMAT, "embedding_model": self.embedding_name, "tokenizer": self.tokenizer_name,
                    "config": asdict(self.config), "chunks": len(self.chunks),
                    "dim": None if self.vectors is None else int(self.vectors.shape[1]), "documents": self.documents}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
        self.folder = out

    @classmethod
    def load(cls, folder: str | Path, embedding: str | None = None) -> "Index":
        """Open a saved index; `embedding` (if given) must be the model that built it."""
        import bm25s
        import faiss

        folder = Path(folder)
        path = folder / "manifest.json"
        if not path.is_file():
            raise LmlabError(f"{folder}: not an index folder (no manifest.json; build one with lmlab rag index)")
        m = json.loads(path.read_text())
        if m.get("format") != FORMAT:
            raise LmlabError(f"{path}: index format {m.get('format')}, this lmlab reads {FORMAT}; rebuild it")
        if embedding is not None:
            from lmlab.rag.embed import model_folder
            name = model_folder(embedding)[0]
            if name != m["embedding_model"]:
                raise LmlabError(f"{folder}: index built with embedding model {m['embedding_model']}, "
                                 f"not {name}; queries must be embedded by the model that built it")
        config = IndexConfig(**m["config"])
        chunks = []
        with open(folder / "chunks.jsonl", encoding="utf-8") as f:
            chunks = [Chunk(**json.loads(line)) for line in f]
        vectors = np.load(folder / "vectors.npy") if m["embedding_model"] else None
        index = cls(folder, config, chunks, vectors, m["documents"], m["embedding_model"], m["tokenizer"])
        if chunks:
            index._bm25 = bm25s.BM25.load(folder / "bm25", show_progress=False) if (folder / "bm25").is_dir() else None
            if index._bm25 is None:
                index._build_search()
            elif vectors is not None and (folder / "dense.faiss").is_file():
                index._dense = faiss.read_index(str(folder / "dense.faiss"))
                _set_search_params(index._dense, config)
        return index

    # ---- search -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.chunks)

    def bm25_scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for `query` (what `search_bm25` ranks)."""
        return self._bm25.get_scores(bm25_tokens(query)) if self.chunks else np.zeros(0)

    def search_bm25(self, query: str, k: int) -> list[tuple[int, float]]:
        """(chunk index, score) best first; chunks sharing no term with the query are left out."""
        k = min(k, len(self.chunks))
        tokens = bm25_tokens(query)
        if k == 0 or not tokens:
            return []
        ids, scores = self._bm25.retrieve([tokens], k=k, show_progress=False, n_threads=1)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]

    def embed_query(self, texts: list[str]) -> np.ndarray:
        if self.embedding_name is None:
            raise LmlabError(f"{self.folder}: a BM25-only index (built with dense=none): use mode bm25")
        if self._embedder is None:
            from lmlab.rag.embed import Embedder
            self._embedder = Embedder(self.config.embedding)
        return self._embedder(texts)

    def search_dense(self, query: str, k: int, vector: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(chunk index, cosine similarity) best first."""
        k = min(k, len(self.chunks))
        if k == 0:
            return []
        q = self.embed_query([query]) if vector is None else vector.reshape(1, -1)
        scores, ids = self._dense.search(q.astype(np.float32), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]


def _source_file(source: str) -> Path:
    m = _JSONL_ROW.match(source)
    return Path(m.group(1) if m else source).resolve()


def _gone(old_docs: dict, given: dict, paths, skipped: list[tuple[str, str]], prune: str) -> set[str]:
    """Ids of the indexed documents that this run's inputs no longer hold."""
    if prune == "none":
        return set()
    unseen = {d: v for d, v in old_docs.items() if d not in given}
    if prune == "all":
        return set(unseen)
    roots = [Path(p).resolve() for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    unreadable = {Path(p).resolve() for p, _ in skipped if Path(p).exists()}
    gone = set()
    for doc_id, entry in unseen.items():
        f = _source_file(entry["source"])
        if f not in unreadable and any(f == r or r in f.parents for r in roots):
            gone.add(doc_id)
    return gone


def _tokenizer(spec: str | None):
    from lmlab.model.io.resolve import DEFAULT_MODEL, resolve
    from lmlab.tokenizer import Tokenizer

    spec = spec or DEFAULT_MODEL
    return spec, Tokenizer.from_folder(resolve(spec))


def _faiss_index(vectors: np.ndarray, config: IndexConfig):
    import faiss

    n, d = vectors.shape
    if config.dense == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    elif config.dense == "ivf":
        # faiss wants ~39+ training points per list; 4*sqrt(n) lists is its usual starting point
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    else:
        index = faiss.IndexFlatIP(d)
    index.add(vectors)
    _set_search_params(index, config)
    return index


def _set_search_params(index, config: IndexConfig) -> None:
    if hasattr(index, "nprobe"):
        index.nprobe = config.nprobe
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = config.ef_search
