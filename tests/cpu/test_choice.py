"""The weight format and compile setting a workload gets (lmlab.cpu.choice): the measured table's
pick where the caller says auto, the caller's own choice otherwise, fp32 off the CPU and for
scoring; the CLI and the configs default to auto and report what they loaded."""

from __future__ import annotations

import json
import os
import time

import pytest

from lmlab.cli.main import main
from lmlab.cpu import choice, kernels
from lmlab.cpu.choice import TABLE, choose
from lmlab.model.formats import FORMATS


def test_auto_takes_the_tables_pick_for_this_cpu():
    for workload in ("one-stream", "many-streams"):
        weights, compile, _ = TABLE[choice.cpu_kind()][workload]
        c = choose(workload)
        assert (c.weights, c.compile) == (weights, compile)
        assert c.weights in FORMATS and c.why


def test_every_cpu_kind_has_a_measured_pick_for_every_decode_workload():
    for kind, picks in TABLE.items():
        assert set(picks) == {"one-stream", "many-streams"}, kind
        assert all(w in FORMATS and isinstance(c, bool) and why for w, c, why in picks.values())


def test_what_the_caller_asks_for_wins():
    assert choose("one-stream", weights="fp32") == choice.Choice("fp32", False, "as asked")  # no compile unless asked
    assert choose("one-stream", weights="int4", compile=True).compile is True
    auto = choose("many-streams", compile=False)
    assert auto.weights == TABLE[choice.cpu_kind()]["many-streams"][0] and auto.compile is False


def test_scoring_and_other_devices_stay_exact():
    assert (choose("scoring").weights, choose("scoring").compile) == ("fp32", False)
    assert (choose("one-stream", device="cuda").weights, choose("one-stream", device="cuda").compile) == ("fp32", False)
    with pytest.raises(ValueError, match="workload"):
        choose("chatting")


def test_bench_decode_reports_the_format_auto_chose(capsys):
    assert main(["bench", "decode", "--streams", "1", "--new-tokens", "4", "--prompt-tokens", "8", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = choose("one-stream")
    assert (r["weights"], r["compile"]) == (want.weights, want.compile)


def test_serve_config_compile_flag_is_three_valued():
    import argparse

    from lmlab.config import add_flags, from_args
    from lmlab.serve.config import ServeConfig

    p = argparse.ArgumentParser()
    add_flags(p, ServeConfig)
    assert from_args(ServeConfig, p.parse_args([])).compile is None
    assert from_args(ServeConfig, p.parse_args(["--compile"])).compile is True
    assert from_args(ServeConfig, p.parse_args(["--no-compile"])).compile is False
    assert from_args(ServeConfig, p.parse_args([])).weights == "auto"


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    from torch.utils.cpp_extension import _get_build_directory

    lock = _get_build_directory("lmlab_test_kernels", verbose=False)
    lock = os.path.join(lock, "lock")
    open(lock, "w").close()
    kernels._clear_stale_lock("lmlab_test_kernels")
    assert os.path.exists(lock)  # a build may hold it right now
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="stale build lock"):
        kernels._clear_stale_lock("lmlab_test_kernels")
    assert not os.path.exists(lock)
