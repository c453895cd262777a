"""The report of a tiny recipe with every stage: report.json, and report.html with every section,
self-contained (no network), its plots inline PNGs. A headless-Chromium load is checked when
`chromium` is installed."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest


@pytest.fixture(scope="module")
def run(tiny_recipe, tmp_path_factory):
    import yaml

    from lmlab.pipeline.recipe import load_recipe
    from lmlab.pipeline.runner import run_pipeline

    folder = tmp_path_factory.mktemp("report")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(stages=("adapt", "sft", "preference", "eval", "package"))))
    report = run_pipeline(load_recipe(path), folder / "out", progress=False)
    return folder / "out", report


def test_report_json_holds_every_stage_and_metric(run):
    out, report = run
    saved = json.loads((out / "report.json").read_text())
    assert list(saved["stages"]) == ["adapt", "sft", "preference", "eval", "package"]
    assert [m for m, _ in saved["models"]] == ["base", "adapt", "sft", "preference"]
    ev = saved["stages"]["eval"]["result"]
    for model in ("base", "adapt", "sft", "preference"):
        m = ev["metrics"][model]
        assert {"hellaswag acc", "gsm8k exact_match", "flan held-out exact_match", "perplexity"} <= set(m)
        lo, hi = m["perplexity"]["ci"]
        assert lo <= m["perplexity"]["value"] <= hi
        assert len(ev["answers"][model]) == 2
    adapt = saved["stages"]["adapt"]["result"]
    assert adapt["domain_ppl_before"] > 0 and adapt["general_ppl_before"]["value"] > 0
    assert set(saved["stages"]["package"]["result"]["quantised"]) == {"fp32", "int8"}


def test_report_html_has_every_section_and_needs_no_network(run):
    from lxml import html as lh

    from lmlab.pipeline.report import SECTIONS

    out, _ = run
    page = (out / "report.html").read_text()
    doc = lh.fromstring(page)
    assert [s.get("id") for s in doc.findall(".//section")] == list(SECTIONS)
    assert "name: tiny" in doc.get_element_by_id("recipe").text_content()
    header = [th.text_content() for th in doc.get_element_by_id("metrics").findall(".//th")]
    assert header == ["metric", "base", "adapt", "sft", "preference"]
    cells = doc.get_element_by_id("metrics").findall(".//tbody/tr")
    assert any(r[0].text_content() == "perplexity" and "[" in r[1].text_content() for r in cells)
    answers = doc.get_element_by_id("answers")
    assert [th.text_content() for th in answers.findall(".//th")] == ["prompt", "base", "adapt", "sft", "preference"]
    assert len(answers.findall(".//tbody/tr")) == 2
    for sid in ("judge", "arena", "safety"):
        assert "Not available" in doc.get_element_by_id(sid).text_content() or doc.get_element_by_id(sid).findall(".//table")
    imgs = doc.findall(".//img")
    assert len(imgs) >= 3  # metrics, curves, resources
    for img in imgs:
        src = img.get("src")
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not doc.findall(".//script") and not doc.findall(".//link")
    assert "http://" not in page and "https://" not in page


def test_report_loads_in_headless_chromium(run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    out, _ = run
    shot = tmp_path / "page.png"
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        f"--screenshot={shot}", "--window-size=1280,4000", f"file://{out / 'report.html'}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # tables and plots drawn, not a blank page
    assert "Uncaught" not in r.stderr and "ERR_" not in r.stderr
    from PIL import Image

    colours = Image.open(shot).convert("RGB").resize((64, 256)).getcolors(1 << 16)
    assert colours is not None and len(colours) > 20
