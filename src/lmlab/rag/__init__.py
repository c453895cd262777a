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

from lmlab.rag.answer import ABSTAIN, Answer, ask, parse_citations  # noqa: E402
from lmlab.rag.checks import citation_scores, faithfulness, judge_entails, lexical_entails  # noqa: E402

__all__ += ["ABSTAIN", "Answer", "ask", "citation_scores", "faithfulness", "judge_entails",
            "lexical_entails", "parse_citations"]
