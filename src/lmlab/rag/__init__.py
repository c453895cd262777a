"""Retrieval-augmented generation: read documents, chunk, index (BM25 + dense), retrieve, answer with
[n] citations, and check the answer (citation recall/precision, faithfulness).

    from lmlab.rag import Index, IndexConfig, retrieve, ask
    index, report = Index.build(["docs/"], "my_index")
    result = ask(lm, "question?", index)   # result.answer, result.citations, result.retrieved
"""

from lmlab.rag.index import BuildReport, Index, IndexConfig
from lmlab.rag.readers import Document, read_documents
from lmlab.rag.retrieve import Hit, retrieve, rrf

__all__ = ["BuildReport", "Document", "Hit", "Index", "IndexConfig", "read_documents", "retrieve", "rrf"]
