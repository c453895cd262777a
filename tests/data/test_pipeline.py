"""`lmlab data curate` end to end on a planted corpus: what each step removes, the output layout,
resuming a killed run without duplicates or losses, the Ray executor, and bad input."""

import json
import random

import pytest

from lmlab.cli.main import main
from lmlab.data import pipeline
from lmlab.data.config import DEFAULT_STEPS, CurateConfig
from lmlab.errors import LmlabError

from .corpora import document, near_copy, read_jsonl, write_jsonl

QUESTION = ("A farmer has 17 sheep and buys 5 more every week for 3 weeks, then sells half of them at the market. "
            "How many sheep does the farmer have left?")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    good = [document(rng) for _ in range(40)]
    rows = [{"text": t, "id": f"good-{i}"} for i, t in enumerate(good)]
    rows += [{"text": good[i][0].lower() + good[i][1:].replace(" ", "  ") + "\n", "id": f"exact-{i}"}
             for i in range(5)]
    rows += [{"text": near_copy(rng, good[10 + i], 0.01), "id": f"near-{i}"} for i in range(5)]
    rows += [{"text": "Buy now. Click here.", "id": "short"}]
    rows += [{"text": good[20 + i] + "\nThis is a fucking disgrace to the whole family and the team.",
              "id": f"toxic-{i}"} for i in range(2)]
    rows += [{"text": "오늘은 날씨가 좋아서 친구들과 함께 공원에 산책을 갔습니다. " * 20, "id": "korean"}]
    rows += [{"text": good[30] + "\nQuestion of the week. " + QUESTION + " Send answers in.", "id": "leak"}]
    rows += [{"text": document(rng) + "\nWrite to jane.doe@example.com or call +1 415-555-0132 with the details.",
              "id": "pii"}]
    rng.shuffle(rows)
    data = write_jsonl(tmp / "corpus.jsonl", rows)
    evals = write_jsonl(tmp / "gsm8k.jsonl", [{"question": "What is two plus two when both are added?",
                                               "answer": "2 + 2 = 4\n#### 4"},
                                              {"question": QUESTION, "answer": "17 + 15 = 32, 32 / 2 = 16\n#### 16"}])
    return data, evals, rows


def curate(corpus, out, *extra):
    data, evals, _ = corpus
    overrides = [x for x in extra if "=" in x and not x.startswith("-")]  # positionals go with the inputs
    flags = [x for x in extra if x not in overrides]
    return main(["data", "curate", str(data), *overrides, "--out", str(out), "--batch-size", "8", "--workers", "2",
                 "--no-progress", *flags, "--decontaminate", str(evals)])


def outputs(out) -> dict:
    kept = [r for p in sorted((out / "data").glob("*.jsonl")) for r in read_jsonl(p)]
    removed = {p.stem: read_jsonl(p) for p in sorted((out / "removed").glob("*.jsonl"))}
    return {"kept": kept, "removed": removed}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert curate(corpus, out) == 0
    return out, outputs(out)


def test_each_step_removes_what_was_planted(reference, corpus):
    out, res = reference
    ids = lambda step: sorted(r["id"] for r in res["removed"][step])  # noqa: E731
    line_of = {x["id"]: n for n, x in enumerate(corpus[2], 1)}
    later = lambda a, b: max(a, b, key=line_of.get)  # noqa: E731  dedup keeps the first copy
    assert ids("exact_dedup") == sorted(later(f"good-{i}", f"exact-{i}") for i in range(5))
    assert ids("minhash") == sorted(later(f"good-{10 + i}", f"near-{i}") for i in range(5))
    assert ids("gopher") == ["short"]
    assert ids("toxicity") == ["toxic-0", "toxic-1"]
    assert ids("language") == ["korean"]
    assert ids("decontaminate") == ["leak"]
    assert res["removed"]["decontaminate"][0]["leaked"] == ["gsm8k:1"]
    for r in res["removed"]["minhash"]:  # the cluster is the kept copy, by file:line
        i = int(r["id"].split("-")[1]) % 10
        kept_copy = ({f"good-{10 + i}", f"near-{i}"} - {r["id"]}).pop()
        assert r["cluster"].endswith(f":{line_of[kept_copy]}") and r["cluster_size"] == 2
    for r in res["removed"]["exact_dedup"]:
        i = int(r["id"].split("-")[1])
        assert r["duplicate_of"].endswith(f":{line_of[({f'good-{i}', f'exact-{i}'} - {r['id']}).pop()]}")
    kept = {r["id"]: r for r in res["kept"]}
    planted_out = set(ids("exact_dedup") + ids("minhash"))
    assert sorted(kept) == sorted(({f"good-{i}" for i in range(40)} | {f"exact-{i}" for i in range(5)}
                                   | {f"near-{i}" for i in range(5)} | {"pii"}) - planted_out)
    assert "<EMAIL>" in kept["pii"]["text"] and "<PHONE>" in kept["pii"]["text"]
    assert kept["good-39"]["language"] == "en" and set(kept["good-39"]) == {"text", "id", "language", "language_score"}


def test_report_json_html_and_table(reference, capsys):
    out, _ = reference
    report = json.loads((out / "report.json").read_text())
    assert report["records_in"] == 56 and report["records_out"] == 41
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == list(DEFAULT_STEPS)
    assert steps["exact_dedup"]["removed"] == 5 and steps["minhash"]["removed"] == 5
    assert steps["gopher"]["examples"][0]["reason"] == "gopher_short_doc"
    assert report["leaked_items"] == {"gsm8k:1": 1}
    assert report["pii_redacted"] == {"email": 1, "phone": 1}
    assert report["languages"] == {"en": 41}
    assert report["near_duplicate_clusters"] == {"count": 5, "largest": 2}
    page = (out / "report.html").read_text()
    assert "<svg" in page and "src=" not in page and "<link" not in page  # self-contained
    assert main(["data", "report", str(out)]) == 0
    assert "exact_dedup" in capsys.readouterr().out


def test_finished_run_is_refused_unless_overwrite(reference, corpus, tmp_path, capsys):
    out, res = reference
    assert curate(corpus, out) == 2
    assert "holds a finished curation run (report.json); pass --overwrite" in capsys.readouterr().err
    copy = tmp_path / "again"
    assert curate(corpus, copy) == 0
    assert curate(corpus, copy, "--overwrite") == 0
    assert outputs(copy) == res


def _killed_after(monkeypatch, marker: str, n: int):
    real = pipeline._save_map_result
    calls = []

    def save(folder, result, m):
        if m == marker and len(calls) == n:
            raise KeyboardInterrupt  # the run dies here
        calls.append(m)
        real(folder, result, m)
    monkeypatch.setattr(pipeline, "_save_map_result", save)


@pytest.mark.parametrize("phase", ["A.json", "C.json"])
def test_killed_run_resumes_without_duplicates_or_losses(reference, corpus, tmp_path, monkeypatch, phase):
    _, res = reference
    out = tmp_path / "run"
    _killed_after(monkeypatch, phase, 3 if phase == "A.json" else 10)
    assert curate(corpus, out) == 130  # interrupted
    assert not (out / "report.json").exists()
    (out / "data" / "part-00005.jsonl.tmp").parent.mkdir(exist_ok=True)
    (out / "data" / "part-00005.jsonl.tmp").write_text('{"text": "half a li')  # a file cut by the kill
    monkeypatch.undo()
    assert curate(corpus, out) == 0
    assert outputs(out) == res


def test_resume_with_other_settings_is_refused(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _killed_after(monkeypatch, "A.json", 1)
    assert curate(corpus, out) == 130
    monkeypatch.undo()
    assert curate(corpus, out, "minhash.bands=20") == 2
    assert "unfinished run with other inputs or settings" in capsys.readouterr().err


def test_ray_executor_gives_the_local_output(reference, corpus, tmp_path):
    pytest.importorskip("ray")
    _, res = reference
    out = tmp_path / "ray"
    try:
        assert curate(corpus, out, "--executor", "ray") == 0
    finally:
        import ray

        ray.shutdown()
    assert outputs(out) == res


def test_steps_can_be_switched_off_and_unknown_steps_are_listed(corpus, tmp_path, capsys):
    out = tmp_path / "few"
    assert curate(corpus, out, "--steps", "normalize,exact_dedup", "pii.enabled=false") == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["normalize", "exact_dedup"]
    assert report["records_out"] == 51
    assert curate(corpus, tmp_path / "bad", "--steps", "normalize,dedupe") == 2
    assert ("unknown step 'dedupe'; valid steps: normalize, language, gopher, c4, toxicity, decontaminate, "
            "exact_dedup, minhash, pii") in capsys.readouterr().err


def test_bad_input_errors(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "fine and dandy"}\n{"body": "no text here"}\n', encoding="utf-8")
    with pytest.raises(LmlabError, match=r"x\.jsonl:2: record has no 'text' text field"):
        pipeline.curate(CurateConfig(inputs=[str(p)], out=str(tmp_path / "o"), progress=False, workers=1))
    p.write_text('{"text": "fine and dandy"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(LmlabError, match=r"x\.jsonl:2: invalid JSON"):
        pipeline.curate(CurateConfig(inputs=[str(p)], out=str(tmp_path / "o2"), progress=False, workers=1))
    report = pipeline.curate(CurateConfig(inputs=[str(p)], out=str(tmp_path / "o3"), progress=False, workers=1,
                                          skip_bad_rows=True, steps=["normalize"]))
    assert report["bad_rows_skipped"] == 1 and report["records_out"] == 1
    with pytest.raises(LmlabError, match="no such file or folder"):
        pipeline.curate(CurateConfig(inputs=[str(tmp_path / "missing.jsonl")], out=str(tmp_path / "o4")))


# ---- Parquet output -------------------------------------------------------------------------

def parquet_rows(out) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for p in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_parquet_output_equals_the_jsonl_output_record_for_record(reference, corpus, tmp_path):
    ref_out, res = reference
    out = tmp_path / "pq"
    assert curate(corpus, out, "--out-format", "parquet") == 0
    assert not list((out / "data").glob("*.jsonl"))
    assert len(list((out / "data").glob("*.parquet"))) == len(list((ref_out / "data").glob("*.jsonl")))
    assert parquet_rows(out) == res["kept"]
    assert {p.stem: read_jsonl(p) for p in sorted((out / "removed").glob("*.jsonl"))} == res["removed"]
    # the report: what each step removed and why, the same as with JSONL output
    drop = ("cpu_seconds",)
    steps = lambda d: [{k: v for k, v in s.items() if k not in drop}  # noqa: E731
                       for s in json.loads((d / "report.json").read_text())["steps"]]
    assert steps(out) == steps(ref_out)
    assert {s["step"]: s["reasons"] for s in json.loads((out / "report.json").read_text())["steps"]}["gopher"] \
        == {"gopher_short_doc": 1}


def test_datasets_reads_the_parquet_output(reference, corpus, tmp_path):
    datasets = pytest.importorskip("datasets")
    _, res = reference
    out = tmp_path / "pq"
    assert curate(corpus, out, "--out-format", "parquet") == 0
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.to_list() == res["kept"]


@pytest.mark.parametrize("phase", ["A.json", "C.json"])
def test_killed_parquet_run_resumes_without_duplicates_or_losses(reference, corpus, tmp_path, monkeypatch, phase):
    _, res = reference
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("out_format: parquet\n")  # the format from the config, not a flag
    out = tmp_path / "run"
    _killed_after(monkeypatch, phase, 3 if phase == "A.json" else 10)
    assert curate(corpus, out, "--config", str(recipe)) == 130
    assert not (out / "report.json").exists()
    if phase == "C.json":
        assert 0 < len(list((out / "data").glob("*.parquet"))) < 7  # some parts written, not all
    (out / "data").mkdir(exist_ok=True)
    (out / "data" / "part-00005.parquet.tmp").write_bytes(b"PAR1 half a file")  # a file cut by the kill
    monkeypatch.undo()
    assert curate(corpus, out, "--config", str(recipe)) == 0
    assert parquet_rows(out) == res["kept"]
    assert not list((out / "data").glob("*.tmp"))
    assert json.loads((out / "report.json").read_text())["records_out"] == len(res["kept"])


def test_resume_in_the_other_format_is_refused(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _killed_after(monkeypatch, "C.json", 9)
    assert curate(corpus, out) == 130
    monkeypatch.undo()
    assert curate(corpus, out, "--out-format", "parquet") == 2
    assert "unfinished run with other inputs or settings" in capsys.readouterr().err


def test_parquet_parts_share_one_schema_when_batches_differ(tmp_path):
    rows = [{"text": "first record here", "id": 1},               # batch 0: `score` missing, `id` int
            {"text": "second record here", "id": 2, "tag": None},
            {"text": "third record here", "id": 3.5, "score": 0.5},  # batch 1: `id` a float, `score` new
            {"text": "fourth record here", "id": 4, "tag": "b"}]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    cfg = dict(inputs=[str(data)], progress=False, workers=1, batch_size=2, steps=["normalize"])
    pipeline.curate(CurateConfig(out=str(tmp_path / "j"), **cfg))
    pipeline.curate(CurateConfig(out=str(tmp_path / "p"), out_format="parquet", **cfg))
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(p) for p in sorted((tmp_path / "p" / "data").glob("*.parquet"))]
    assert len(schemas) == 2 and schemas[0].equals(schemas[1])
    assert str(schemas[0].field("id").type) == "double" and str(schemas[0].field("tag").type) == "string"
    jsonl = outputs(tmp_path / "j")["kept"]
    fields = ["text", "id", "tag", "score"]
    assert parquet_rows(tmp_path / "p") == [{f: r.get(f) for f in fields} for r in jsonl]
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "p" / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds["score"] == [None, None, 0.5, None]


def test_parquet_refuses_a_field_of_two_types(tmp_path):
    within = write_jsonl(tmp_path / "within.jsonl", [{"text": "one record here", "n": 1},
                                                     {"text": "two record here", "n": "two"}])
    cfg = dict(progress=False, workers=1, steps=["normalize"], out_format="parquet")
    with pytest.raises(LmlabError, match=r"within\.jsonl:2: field 'n' holds values that do not fit one "
                                         r"Parquet column .*out_format=jsonl"):
        pipeline.curate(CurateConfig(inputs=[str(within)], out=str(tmp_path / "a"), **cfg))
    across = write_jsonl(tmp_path / "across.jsonl", [{"text": "one record here", "n": 1},
                                                     {"text": "two record here", "n": "two"}])
    with pytest.raises(LmlabError, match=r"the batches disagree on a column's type .*out_format=jsonl"):
        pipeline.curate(CurateConfig(inputs=[str(across)], out=str(tmp_path / "b"), batch_size=1, **cfg))
