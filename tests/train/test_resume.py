"""A run killed with SIGKILL and resumed ends bitwise where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from lmlab.train import checkpoint

# Trains through the public API; with KILL_AT set, the process SIGKILLs itself inside that
# step's forward pass (after the step-4 checkpoint, before the step-6 one): no clean-up runs.
SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from lmlab.train.config import TrainConfig
    from lmlab.train import run, sft as sft_stage
    from lmlab.train.objectives import sft
    from lmlab.train.trainer import Trainer

    model_dir, data, out, resume = sys.argv[1:5]
    kill_at = int(os.environ.get("KILL_AT", "0"))
    cfg = TrainConfig(model=model_dir, data=data, output=out, max_steps=8, batch_size=4, lr=5e-3,
                      save_every=2, resume=resume == "1", progress=False)
    cfg.lora.dropout = 0.1  # dropout draws random numbers: the RNG state must resume too
    model, tok, folder = run.load_base(cfg)
    run.apply_method(model, cfg, quiet=True)
    calls = {"n": 0}

    def loss(m, batch):
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return sft.loss(m, batch)

    Trainer(model, loss, sft_stage.sft_batches(cfg, tok, data), cfg).fit()
""")


def _run(tmp_path, tiny_folder, tiny_data, out, resume=False, kill_at=0):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "KILL_AT": str(kill_at)}
    return subprocess.run([sys.executable, str(script), str(tiny_folder), str(tiny_data), str(out),
                           "1" if resume else "0"], env=env, capture_output=True, text=True, timeout=600)


def _final_state(out):
    return checkpoint.weights(out / "checkpoints" / "step-000008")


def test_sigkill_then_resume_is_bitwise_identical(tiny_folder, tiny_data, tmp_path):
    whole = _run(tmp_path, tiny_folder, tiny_data, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    killed = _run(tmp_path, tiny_folder, tiny_data, tmp_path / "cut", kill_at=5)
    assert killed.returncode == -signal.SIGKILL
    ckpts = tmp_path / "cut" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000002", "step-000004"]
    # A checkpoint interrupted while being written is never loaded: fake one newer than the rest.
    (ckpts / ".tmp-step-000006").mkdir()
    (ckpts / ".tmp-step-000006" / "model.pt").write_bytes(b"half a file")
    (ckpts / "step-000007").mkdir()  # no trainer.json: incomplete

    resumed = _run(tmp_path, tiny_folder, tiny_data, tmp_path / "cut", resume=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _final_state(tmp_path / "whole"), _final_state(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = lambda p: [json.loads(l) for l in (p / "metrics.jsonl").read_text().splitlines()]
    clock = ("tokens_per_s", "elapsed_s")  # wall-clock figures differ; everything else must not
    assert [{k: v for k, v in r.items() if k not in clock} for r in log(tmp_path / "whole")] == \
        [{k: v for k, v in r.items() if k not in clock} for r in log(tmp_path / "cut")]


def test_resume_refuses_a_different_world_size(tmp_path):
    from lmlab.errors import LmlabError
    from lmlab.train import checkpoint
    from lmlab.train.distributed import Dist

    path = tmp_path / "step-000001"
    path.mkdir()
    (path / "trainer.json").write_text(json.dumps({"step": 1, "world": 2}))
    torch.save({}, path / "model.pt")
    torch.save({}, path / "optimizer.pt")
    with pytest.raises(LmlabError, match="same number of processes"):
        checkpoint.load(path, Dist())
