"""`lmlab eval` as a user runs it: results.json, samples_<task>.jsonl, a Markdown table on stdout,
a progress bar in items/s, and one-line errors naming the file and the line."""

from __future__ import annotations

import json
import subprocess
import sys


def lmlab(*args, timeout: int = 300):
    return subprocess.run([sys.executable, "-m", "lmlab.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


ROWS = [
    {"ctx": "Cooking: A woman cracks two eggs into a bowl. she", "label": 0,
     "endings": ["whisks them with a fork.", "throws the bowl at the ceiling.", "paints the eggs blue."]},
    {"ctx": "Swimming: A boy jumps into the pool. he", "label": 1,
     "endings": ["flies away over the trees.", "swims to the other side.", "eats the water."]},
    {"ctx": "Gardening: A man digs a hole in the garden. he", "label": 2,
     "endings": ["sings to the moon.", "drives the hole to work.", "plants a small tree in it."]},
]


def test_eval_writes_results_samples_and_a_markdown_table(bundled_folder, tmp_path):
    data = tmp_path / "hs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    r = lmlab("eval", "--model", str(bundled_folder), "--task", "hellaswag", "--data", str(data),
              "--limit", "2", "--output", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "| task | metric | value | ± stderr | n |" in r.stdout
    assert "| hellaswag | acc_norm |" in r.stdout
    assert "item/s" in r.stderr  # tqdm's rate, counted in items
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    m = report["results"]["hellaswag"]
    assert m["n"] == 2 and {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"} <= set(m)
    assert report["config"]["limit"] == 2 and report["seed"] == 1234
    assert {"lmlab", "torch"} <= set(report["versions"])
    rows = [json.loads(x) for x in (tmp_path / "out" / "samples_hellaswag.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert {"doc_id", "loglikelihoods", "pred", "acc", "acc_norm"} <= set(row)
        assert len(row["loglikelihoods"]) == 3
        assert row["pred"] == max(range(3), key=row["loglikelihoods"].__getitem__)


def test_bad_data_is_one_line_naming_file_and_line_before_loading_a_model(tmp_path):
    data = tmp_path / "hs.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[1], "label": 7}) + "\n")
    r = lmlab("eval", "--model", str(tmp_path / "no-such-model"), "--task", "hellaswag", "--data", str(data))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmlab: error:"), r.stderr
    assert f"{data}:2: label 7 out of range for 3 choices" in lines[0]


def test_config_file_and_overrides_with_the_resolved_config_written_beside_the_results(bundled_folder, tmp_path):
    data = tmp_path / "hs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "out"
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"model: {bundled_folder}\ntasks: [hellaswag]\ndata: {data}\nlimit: 3\noutput: {out}\n")
    r = lmlab("eval", "--config", str(cfg), "--limit", "2", "fewshot=1", "--no-progress")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "results.json").read_text())
    assert report["results"]["hellaswag"]["n"] == 2 and report["config"]["fewshot"] == 1
    import yaml

    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["limit"] == 2 and written["fewshot"] == 1 and written["tasks"] == ["hellaswag"]
    assert written["progress"] is False and written["model"] == str(bundled_folder)
