"""Parity with lm-evaluation-harness (HF backend, fp32, the same bundled weights):
HellaSwag per-item log-likelihoods within 1e-3 and identical acc / acc_norm on 20 items of
../shared/data, and rolling-window perplexity metrics within 0.1% on a text written here."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

N_ITEMS = 20

HELLASWAG_YAML = """\
task: hellaswag_shared
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
  cache_dir: {cache}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""

PPL_YAML = """\
task: ppl_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""

# Three short documents of different lengths; with a 48-token window each spans several windows.
TEXTS = [
    "The river rose through the night, and by morning the lower fields were under water. Farmers "
    "moved their animals to the ridge, where the old church stood, and waited for the rain to stop. "
    "Nobody remembered a flood like it since the winter of the great storm.",
    "Photosynthesis converts light energy into chemical energy. In plants it takes place in the "
    "chloroplasts, which contain chlorophyll, the pigment that absorbs mostly blue and red light.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5\n",
]


def _simple_evaluate(folder, task_dir, task, **model_args):
    import lm_eval
    from lm_eval.tasks import TaskManager

    args = ",".join([f"pretrained={folder}", "dtype=float32"] + [f"{k}={v}" for k, v in model_args.items()])
    return lm_eval.simple_evaluate(model="hf", model_args=args, tasks=[task], batch_size=8, device="cpu",
                                   task_manager=TaskManager(include_path=str(task_dir)), log_samples=True)


@pytest.fixture(scope="module")
def hellaswag_pair(bundled_folder, bundled_lm, shared_data, tmp_path_factory):
    """(lm-eval's samples, lmlab's samples and metrics) on the first 20 HellaSwag items."""
    from lmlab.eval.runner import evaluate

    tmp = tmp_path_factory.mktemp("hs")
    data = tmp / "hs.jsonl"
    lines = (shared_data / "hellaswag_val_dev500.jsonl").read_text().splitlines()[:N_ITEMS]
    data.write_text("\n".join(lines) + "\n")
    (tmp / "hs.yaml").write_text(HELLASWAG_YAML.format(data=data, cache=tmp / "cache"))
    ref = _simple_evaluate(bundled_folder, tmp, "hellaswag_shared")
    ours = evaluate(bundled_lm, "hellaswag", data=str(data), output_dir=tmp / "out", progress=False)
    samples = [json.loads(x) for x in (tmp / "out" / "samples_hellaswag.jsonl").read_text().splitlines()]
    return ref, ours, samples


def test_hellaswag_loglikelihoods_match_lm_eval(hellaswag_pair):
    ref, _, ours = hellaswag_pair
    theirs = sorted(ref["samples"]["hellaswag_shared"], key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in ours] == [s["doc_id"] for s in theirs] == list(range(N_ITEMS))
    for a, b in zip(ours, theirs):
        lls = [r[0][0] for r in b["resps"]]
        assert a["loglikelihoods"] == pytest.approx(lls, abs=1e-3)
        assert a["is_greedy"] == [r[0][1] for r in b["resps"]]


def test_hellaswag_acc_and_acc_norm_identical_to_lm_eval(hellaswag_pair):
    ref, report, ours = hellaswag_pair
    theirs = sorted(ref["samples"]["hellaswag_shared"], key=lambda s: s["doc_id"])
    assert [s["acc"] for s in ours] == [s["acc"] for s in theirs]
    assert [s["acc_norm"] for s in ours] == [s["acc_norm"] for s in theirs]
    got, want = report["results"]["hellaswag"], ref["results"]["hellaswag_shared"]
    for m in ("acc", "acc_norm"):
        assert got[m] == want[f"{m},none"]
        assert got[f"{m}_stderr"] == pytest.approx(want[f"{m}_stderr,none"], rel=1e-9)


def test_rolling_perplexity_matches_lm_eval(bundled_folder, bundled_lm, tmp_path):
    from lmlab.eval.runner import evaluate

    window = 48  # a short window, so that every text needs several rolling windows
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (tmp_path / "ppl.yaml").write_text(PPL_YAML.format(data=data, cache=tmp_path / "cache"))
    ref = _simple_evaluate(bundled_folder, tmp_path, "ppl_text", max_length=window)
    ours = evaluate(bundled_lm, "perplexity", data=str(data), max_length=window, output_dir=tmp_path / "out",
                    progress=False)["results"]["perplexity"]
    want = ref["results"]["ppl_text"]
    for m in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours[m] == pytest.approx(want[f"{m},none"], rel=1e-3)
    # Token perplexity from lm-eval's per-document rolling log-likelihoods and its token counts.
    lls = [s["resps"][0][0] for s in sorted(ref["samples"]["ppl_text"], key=lambda s: s["doc_id"])]
    n_tokens = sum(len(bundled_lm.tokenizer.encode(t, add_special_tokens=False)) for t in TEXTS)
    assert ours["tokens"] == n_tokens
    assert ours["token_perplexity"] == pytest.approx(math.exp(-sum(lls) / n_tokens), rel=1e-3)
