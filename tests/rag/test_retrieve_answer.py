"""RRF, retrieval modes, citations parsed and mapped, abstention, trimming to the context, and the
checks (ALCE citation recall/precision, faithfulness) on hand-made answers with a fake judge."""

import pytest

from lmlab.rag import Index, IndexConfig, ask, citation_scores, faithfulness, lexical_entails, parse_citations, rrf
from lmlab.rag.answer import ABSTAIN, fit_passages
from lmlab.rag.checks import judge_entails, split_statements


def test_rrf_matches_the_formula():
    fused = dict(rrf([[10, 20, 30], [30, 10, 40]], k=60))
    assert fused[10] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[30] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[20] == pytest.approx(1 / 62) and fused[40] == pytest.approx(1 / 63)
    assert [i for i, _ in rrf([[10, 20, 30], [30, 10, 40]])] == [10, 30, 20, 40]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from tests.rag.conftest import CORPUS

    folder = tmp_path_factory.mktemp("docs")
    for name, text in CORPUS.items():
        (folder / name).write_text(text)
    return Index.build([folder], None, IndexConfig(chunk_tokens=64, overlap=8))[0]


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_each_mode_finds_the_passage(index, mode):
    from lmlab.rag import retrieve

    hits = retrieve(index, "Which volcano is on Sicily?", k=3, mode=mode)
    assert hits[0].doc_id == "volcano"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_dense_rerank_orders_by_exact_cosine(index):
    from lmlab.rag import retrieve

    hits = retrieve(index, "a bird that cannot fly", k=3, mode="bm25", rerank="dense", candidates=10)
    assert hits[0].doc_id == "kiwi"


def test_citations_parsed_in_order_of_first_use():
    assert parse_citations("Paris [2]. Berlin [1][3], again [2, 4].") == [2, 1, 3, 4]
    assert parse_citations("no marks") == []


def _fake(reply):
    seen = []

    def generate(messages, max_new_tokens, **params):
        seen.append(messages)
        return reply

    return generate, seen


def test_ask_maps_citations_to_the_numbered_passages(index):
    generate, seen = _fake("The kiwi cannot fly [1]. It lives in New Zealand [1][7].")
    out = ask(None, "Which bird cannot fly?", index, k=3, generate=generate)
    prompt = seen[0][-1]["content"]
    assert "[1] The kiwi is a flightless bird" in prompt and "[3] " in prompt
    assert [(c["n"], c["doc_id"]) for c in out.citations] == [(1, "kiwi")]
    assert out.citations[0]["text"].startswith("The kiwi")
    assert any("[7]" in n for n in out.notes)  # a number naming no passage is said, not mapped
    assert out.retrieved[0]["doc_id"] == "kiwi" and len(out.retrieved) == 3
    assert not out.abstained


def test_nothing_relevant_abstains_without_asking_the_model(index):
    generate, seen = _fake("should not be called")
    out = ask(None, "quantum chromodynamics gluon confinement lattice", index, k=3, generate=generate,
              min_similarity=0.3)
    assert out.abstained and out.answer == ABSTAIN and out.citations == [] and not seen
    assert "abstained" in out.notes[0]


def test_passages_are_trimmed_to_fit_and_it_is_said(tokenizer):
    passages = [" ".join(["alpha"] * 300), " ".join(["beta"] * 300), " ".join(["gamma"] * 300)]
    q, kept, notes = fit_passages(tokenizer, "What is alpha?", passages, budget=500)
    assert len(kept) == 2 and kept[0] == passages[0] and kept[1].startswith("beta") and len(kept[1]) < len(passages[1])
    assert any("passage 2 cut" in n for n in notes) and any("1 of 3 passages left out" in n for n in notes)
    from lmlab.rag.answer import messages_for
    assert len(tokenizer.encode_chat(messages_for(q, kept))) <= 500
    long_q = "why " * 2000
    q, kept, notes = fit_passages(tokenizer, long_q, passages, budget=400)
    assert any("question cut" in n for n in notes)
    assert len(tokenizer.encode_chat(messages_for(q, kept))) <= 400


PASSAGES = ["The Eiffel Tower was completed in 1889.", "Berlin is the capital of Germany."]


def test_statements_keep_marks_after_the_full_stop():
    assert split_statements("It opened in 1889. [1] Berlin is 6.5 km wide [2][3]. Not in [1] the end") == [
        ("It opened in 1889.", [1]), ("Berlin is 6.5 km wide.", [2, 3]), ("Not in the end", [1])]


def test_faithfulness_separates_supported_from_unsupported_answers():
    entails = lexical_entails()
    good = faithfulness("The Eiffel Tower was completed in 1889 [1]. Berlin is the capital of Germany [2].",
                        PASSAGES, entails)
    assert good["faithfulness"] == 1.0 and good["unsupported"] == 0
    bad = faithfulness("The Eiffel Tower was completed in 1889 [1]. It was designed by Gustave Eiffel's "
                       "rival in Lyon [1].", PASSAGES, entails)
    assert bad["faithfulness"] == 0.5 and [s["supported"] for s in bad["statements"]] == [True, False]
    assert faithfulness(ABSTAIN, PASSAGES, entails)["faithfulness"] == 1.0


def test_faithfulness_and_citations_with_a_chat_judge():
    calls = []

    def judge(messages):  # a fake judge: "yes" when the statement's year is in the passages
        text = messages[0]["content"]
        calls.append(text)
        premise, statement = text.split("Statement: ")
        return "Yes." if "1889" in statement and "1889" in premise else "No"

    entails = judge_entails(judge)
    answer = "The tower was finished in 1889 [1][2]. It is 500 metres tall [1]."
    f = faithfulness(answer, PASSAGES, entails)
    assert f["faithfulness"] == 0.5
    c = citation_scores(answer, PASSAGES, entails)
    # statement 1 supported by [1]+[2]; [2] alone does not support it and removing it changes
    # nothing: irrelevant. Statement 2 unsupported: its single citation is irrelevant.
    assert c["citation_recall"] == 0.5 and c["citation_precision"] == pytest.approx(1 / 3)
    assert c["citations"] == 3 and calls


def test_wrong_citations_lower_recall():
    entails = lexical_entails()
    right = citation_scores("Berlin is the capital of Germany [2].", PASSAGES, entails)
    wrong = citation_scores("Berlin is the capital of Germany [1].", PASSAGES, entails)
    uncited = citation_scores("Berlin is the capital of Germany.", PASSAGES, entails)
    assert (right["citation_recall"], wrong["citation_recall"], uncited["citation_recall"]) == (1.0, 0.0, 0.0)
    assert right["citation_precision"] == 1.0 and wrong["citation_precision"] == 0.0


def test_a_judge_backend_is_asked_for_yes_or_no():
    class Backend:  # the shape of lmlab.judge.backends: conversations in, texts out
        def __init__(self):
            self.kw = []

        def complete(self, conversations, max_tokens=512, choice=None, **kw):
            self.kw.append(choice)
            return ["yes" if "1889" in c[0]["content"].split("Statement:")[1] else "no" for c in conversations]

    backend = Backend()
    f = faithfulness("It opened in 1889 [1]. It is made of gold [1].", PASSAGES, judge_entails(backend))
    assert [s["supported"] for s in f["statements"]] == [True, False] and backend.kw == [["yes", "no"]] * 2

