"""`lmlab generate` with a constraint: --json-schema / --regex / --choice / --grammar [--repair N]."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jsonschema

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                           "country": {"type": "string", "maxLength": 12}},
          "required": ["city", "country"], "additionalProperties": False}


def lmlab(*args):
    return subprocess.run([sys.executable, "-m", "lmlab.cli.main", "generate", *args], capture_output=True,
                          text=True, timeout=300)


def test_json_schema_output_is_the_parsed_value(bundled_folder, tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    r = lmlab("Name a city and its country.", "--json-schema", str(path), "--temperature", "0",
              "--max-new-tokens", "40", "--json", "--repair", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    jsonschema.validate(out["value"], SCHEMA)
    assert out["ok"] and json.loads(out["text"]) == out["value"] and out["attempts"][0]["error"] is None


def test_choice_and_regex_print_the_text(bundled_folder):
    r = lmlab("Is the sky blue?", "--choice", "yes,no", "--temperature", "0", "--max-new-tokens", "4")
    assert r.returncode == 0 and r.stdout.strip() in ("yes", "no"), r.stderr
    r = lmlab("When was Python released?", "--regex", r"[0-9]{4}", "--temperature", "0", "--max-new-tokens", "8")
    assert r.returncode == 0 and re.fullmatch(r"[0-9]{4}", r.stdout.strip()), r.stderr


def test_bad_constraints_are_one_line_errors_before_the_model_loads(tmp_path):
    bad = tmp_path / "bad.lark"
    bad.write_text("start: a b\n")
    for args, fragment in [(["--regex", "a(b"], "unclosed group"), (["--grammar", str(bad)], "unknown name"),
                           (["--json-schema", str(tmp_path / "none.json")], "no such file")]:
        r = lmlab("hi", *args, "--model", str(tmp_path / "no-model"))
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], r.stderr


def test_beam_with_a_constraint_or_sampling_flags_is_refused_before_the_model_loads(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    for args, fragment in [(["--json-schema", str(path)], "--beam (beam search) does not support output "
                                                          "constraints (got --json-schema)"),
                           (["--choice", "a,b"], "(got --choice)"),
                           (["--seed", "3", "--top-p", "0.5"], "--top-p, --seed do(es) not apply"),
                           (["--watermark"], "--watermark do(es) not apply")]:
        r = lmlab("hi", "--beam", "2", *args, "--model", str(tmp_path / "no-model"))
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], r.stderr


def test_beam_prints_the_best_beam(bundled_folder, bundled_lm):
    r = lmlab("Name a colour.", "--beam", "2", "--max-new-tokens", "12", "--weights", "fp32", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    best = bundled_lm.beam_search("Name a colour.", num_beams=2, max_new_tokens=12)
    assert out["token_ids"] == best.token_ids and out["text"] == bundled_lm.tokenizer.decode(best.token_ids)
    assert out["finish_reason"] in ("stop", "length") and out["completion_tokens"] == len(best.token_ids)
