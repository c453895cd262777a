"""The `lmlab` command as a user runs it: a real process, real bundled model, real errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def lmlab(*args, stdin: str | None = None, timeout: int = 300):
    return subprocess.run([sys.executable, "-m", "lmlab.cli.main", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(r, *fragments):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and lines[0].startswith("lmlab: error:")
    for f in fragments:
        assert f in lines[0], lines[0]


def test_help_lists_the_stages():
    r = lmlab("--help")
    assert r.returncode == 0
    for command in ("generate", "chat", "models"):
        assert command in r.stdout


def test_generate_greedy_names_paris_as_json(bundled_folder):
    r = lmlab("generate", "What is the capital of France?", "--temperature", "0", "--json",
              "--max-new-tokens", "32")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"text", "token_ids", "finish_reason", "prompt_tokens", "completion_tokens", "seconds",
                        "incomplete"}
    assert "Paris" in out["text"]
    assert out["completion_tokens"] == len(out["token_ids"]) > 0
    assert out["finish_reason"] in ("stop", "length") and out["seconds"] > 0


def test_generate_streams_text_and_respects_max_new_tokens(bundled_folder):
    r = lmlab("generate", "Count from one to fifty in words.", "--temperature", "0", "--max-new-tokens", "5")
    assert r.returncode == 0, r.stderr
    js = json.loads(lmlab("generate", "Count from one to fifty in words.", "--temperature", "0",
                          "--max-new-tokens", "5", "--json").stdout)
    assert js["completion_tokens"] == 5 and js["finish_reason"] == "length"
    assert r.stdout.strip() == js["text"].strip()


def test_missing_model_path(tmp_path):
    assert_one_line_error(lmlab("generate", "hi", "--model", str(tmp_path / "nope")), "not found")


def test_corrupt_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16}))
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    assert_one_line_error(lmlab("generate", "hi", "--model", str(tmp_path)), "model.safetensors")


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    assert_one_line_error(lmlab("generate", "hi", "--model", str(bad)), "bad.gguf")


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    assert_one_line_error(lmlab("models", "info", str(tmp_path)), "bert")


def test_empty_prompt(bundled_folder):
    assert_one_line_error(lmlab("generate", "   "), "empty prompt")


def test_prompt_longer_than_context(bundled_folder):
    assert_one_line_error(lmlab("generate", "word " * 9000, "--raw"), "context")


def test_bad_sampling_value_states_valid_range(bundled_folder):
    assert_one_line_error(lmlab("generate", "hi", "--top-p", "0"), "top_p", "(0, 1]")


def test_debug_shows_the_traceback(tmp_path):
    r = lmlab("--debug", "generate", "hi", "--model", str(tmp_path / "nope"))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_chat_repl_commands_and_turns(bundled_folder):
    script = "/set temperature 0\n/set max_new_tokens 12\n/show\nWhat is the capital of France?\n" \
             "/system Answer in French.\n/reset\n/set top_p 7x\n/exit\n"
    r = lmlab("chat", stdin=script)
    assert r.returncode == 0, r.stderr
    assert "(temperature = 0.0)" in r.stdout and "max_new_tokens=12" in r.stdout
    assert "Paris" in r.stdout
    assert "system message set" in r.stdout and "conversation cleared" in r.stdout
    assert "top_p needs a float" in r.stdout


def test_models_list_and_info(bundled_folder):
    r = lmlab("models", "list")
    assert r.returncode == 0 and "smollm2" in r.stdout
    info = json.loads(lmlab("models", "info", "--json").stdout)
    assert info["layers"] == 30 and info["dim"] == 576 and info["kv_heads"] == 3
    assert info["chat_template"] is True and info["parameters"].startswith("134.5")


@pytest.mark.parametrize("distinct", [False, True], ids=["one-prompt", "distinct-prompts"])
def test_bench_decode_prints_the_json_the_issue_names(bundled_folder, distinct):
    r = lmlab("bench", "decode", "--streams", "3", "--prompt-tokens", "30", "--new-tokens", "4", "--json",
              *(["--distinct-prompts"] if distinct else []))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"weights", "compile", "streams", "tok_s", "ttft_s", "peak_rss_mb"}  # what it loaded, too
    assert out["streams"] == 3 and out["tok_s"] > 0 and out["ttft_s"] > 0 and out["peak_rss_mb"] > 100
