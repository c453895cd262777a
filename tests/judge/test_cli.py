"""`lmlab judge` and `lmlab arena` as a user runs them (in-process main(), real files)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmlab.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_winrate_json_has_alpaca_eval_keys(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [{"instruction": f"q{i}", "output_1": "x" * int(rng.integers(10, 900)),
             "output_2": "y" * int(rng.integers(10, 900)), "generator_1": "gpt4_turbo", "generator_2": "mine",
             "preference": float(rng.choice([1.0, 2.0, 1.5]))} for i in range(80)]
    p = tmp_path / "annotations.json"
    p.write_text(json.dumps(rows))
    code, out, _ = run(capsys, "judge", "winrate", str(p), "--json")
    got = json.loads(out)
    assert code == 0 and set(got) == {"win_rate", "standard_error", "length_controlled_winrate", "n_total"}
    assert got["n_total"] == 80
    assert got["win_rate"] == pytest.approx(100 * np.mean([r["preference"] - 1 for r in rows]))


def test_arena_ratings_json_png_html(tmp_path, capsys):
    battles = [{"model_a": a, "model_b": b, "winner": w} for a, b, w in
               [("x", "y", "model_a"), ("y", "z", "model_a"), ("x", "z", "model_a"), ("z", "x", "tie"),
                ("y", "x", "model_a"), ("z", "y", "tie (bothbad)"), ("x", "y", "model_a"), ("z", "x", "model_a")] * 5]
    p = tmp_path / "battles.jsonl"
    p.write_text("".join(json.dumps(b) + "\n" for b in battles))
    code, out, _ = run(capsys, "arena", "ratings", str(p), "--bootstrap", "50", "--json",
                       "--png", str(tmp_path / "lb.png"), "--html", str(tmp_path / "lb.html"))
    got = json.loads(out)["ratings"]
    assert code == 0 and set(got) == {"x", "y", "z"}
    assert set(got["x"]) >= {"rating", "lower", "upper", "rank"}
    assert np.mean([v["rating"] for v in got.values()]) == pytest.approx(1000)
    assert (tmp_path / "lb.png").read_bytes()[:4] == b"\x89PNG"
    assert "<table>" in (tmp_path / "lb.html").read_text()
    code, out, _ = run(capsys, "arena", "ratings", str(p), "--bootstrap", "20")
    assert code == 0 and "Bradley-Terry" in out


def test_answer_file_without_fields_names_file_and_line(tmp_path, capsys, shared_data):
    a = tmp_path / "answers.jsonl"
    a.write_text('{"question_id": 81, "model_id": "m", "choices": [{"turns": ["hi"]}]}\n'
                 '{"question_id": 82, "choices": [{"turns": ["hi"]}]}\n')
    code, _, err = run(capsys, "judge", "pairwise", "--questions", str(shared_data / "mt_bench_questions.jsonl"),
                       "--answers", str(a), "--model", "m", "--baseline", "n")
    assert code == 2 and f"{a}:2: an answer needs model_id" in err


def test_model_without_answers_is_named(tmp_path, capsys, shared_data):
    a = tmp_path / "answers.jsonl"
    a.write_text('{"question_id": 81, "model_id": "m", "choices": [{"turns": ["hi"]}]}\n')
    code, _, err = run(capsys, "arena", "judge", "--questions", str(shared_data / "mt_bench_questions.jsonl"),
                       "--answers", str(a), "--models", "m,ghost", "--out", str(tmp_path / "b.jsonl"))
    assert code == 2 and "model 'ghost' has no answers" in err and "models with answers: m" in err


def test_pairwise_with_a_local_judge_end_to_end(tmp_path, capsys, shared_data, tiny_chat_folder):
    """Real MT-Bench questions, two answer sets, a tiny local judge; the re-run is served by the cache."""
    qs = [json.loads(line) for line in (shared_data / "mt_bench_questions.jsonl").read_text().splitlines()[:2]]
    a = tmp_path / "answers.jsonl"
    with a.open("w") as f:
        for q in qs:
            for m, text in (("long", "A detailed, careful answer. " * 6), ("short", "No.")):
                f.write(json.dumps({"question_id": q["question_id"], "model": m, "answer": text}) + "\n")
    out_v = tmp_path / "verdicts.jsonl"
    argv = ["judge", "pairwise", "--questions", str(shared_data / "mt_bench_questions.jsonl"), "--limit", "2",
            "--answers", str(a), "--model", "long", "--baseline", "short", "--judge-model", str(tiny_chat_folder),
            "--judge-max-tokens", "12", "--cache", str(tmp_path / "c.sqlite"), "--out", str(out_v), "--json"]
    code, out, _ = run(capsys, *argv)
    res = json.loads(out)
    assert code == 0 and res["n_total"] + res["parse_failures"] == 2
    rows = [json.loads(line) for line in out_v.read_text().splitlines()]
    assert len(rows) == 2 and all(r["winner"] in ("model_a", "model_b", "tie", "error") for r in rows)
    code, out2, _ = run(capsys, *argv)  # from the cache, the same verdicts
    assert json.loads(out2) == res


def test_single_and_geval_with_a_local_judge(tmp_path, capsys, shared_data, tiny_chat_folder):
    a = tmp_path / "answers.jsonl"
    a.write_text("".join(json.dumps({"question_id": q, "model": "m", "answer": "An answer."}) + "\n" for q in (81, 82)))
    common = ["--questions", str(shared_data / "mt_bench_questions.jsonl"), "--limit", "2", "--answers", str(a),
              "--judge-model", str(tiny_chat_folder), "--no-cache", "--json"]
    code, out, _ = run(capsys, "judge", "single", "--geval", *common)
    (row,) = json.loads(out)
    assert code == 0 and 1 <= row["score"] <= 10 and row["graded"] == 2
    code, out, _ = run(capsys, "judge", "single", "--judge-max-tokens", "8", *common)
    (row,) = json.loads(out)
    assert row["graded"] + row["parse failures"] == 2
