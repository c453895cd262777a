"""What the trainer refuses and survives: run folders that would run code, diverging runs,
non-UTF-8 data, checkpoint pruning (keep_last) and a checkpoint left without its weights."""

from __future__ import annotations

import json
import os
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from lmlab.errors import LmlabError
from lmlab.train import checkpoint
from lmlab.train.config import TrainConfig
from lmlab.train.distributed import Dist
from lmlab.train.trainer import Batches, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- a toy regression the Trainer runs in milliseconds --------------------------------------------

def toy_batches(n: int = 64, batch: int = 8, noise: float = 0.3) -> Batches:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + noise * torch.randn(n, generator=g)
    examples = list(zip(x, y))

    def plan(epoch):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).tolist()
        return [order[i:i + batch] for i in range(0, n, batch)]

    def collate(ex):
        return {"x": torch.stack([e[0] for e in ex]), "y": torch.stack([e[1] for e in ex])}

    return Batches(examples, plan, collate)


def mse(model, batch):
    err = model(batch["x"]).squeeze(-1) - batch["y"]
    return err.square().sum(), len(err), {}


def toy(tmp_path, loss=mse, **kw) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainConfig(output=str(tmp_path / "run"), progress=False, device="cpu", **{"max_steps": 20, "lr": 1e-2,
                                                                                   "save_every": 1, **kw})
    return Trainer(nn.Linear(4, 1), loss, toy_batches(), cfg)


def steps(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))


# ---- untrusted run folders ------------------------------------------------------------------------

class Payload:
    """Unpickling this runs code: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_never_unpickles_code_from_a_run_folder(tmp_path):
    t = toy(tmp_path, max_steps=2)
    t.fit()
    good = checkpoint.latest(tmp_path / "run" / "checkpoints")
    assert sorted(p.name for p in good.iterdir()) == ["model.safetensors", "optimizer.json",
                                                      "optimizer.safetensors", "rng-0.json", "trainer.json"]
    # a run folder from elsewhere in the old layout, every file a pickle that runs a command
    bad = tmp_path / "evil" / "checkpoints" / "step-000009"
    bad.mkdir(parents=True)
    (bad / "trainer.json").write_text(json.dumps({"step": 9, "epoch": 0, "batch": 0, "world": 1}))
    marker = tmp_path / "pwned"
    for name in ("model.pt", "optimizer.pt", "rng-0.pt"):
        torch.save({"w": Payload(marker)}, bad / name)
    with pytest.raises(LmlabError, match="unreadable checkpoint"):
        checkpoint.load(bad, Dist())
    cfg = TrainConfig(output=str(tmp_path / "evil"), max_steps=12, resume=True, progress=False, device="cpu")
    with pytest.raises(LmlabError, match="step-000009: unreadable checkpoint"):
        Trainer(nn.Linear(4, 1), mse, toy_batches(), cfg).fit()
    assert not marker.exists()
    # old-layout checkpoints of plain tensors still resume
    legacy = tmp_path / "old" / "step-000002"
    legacy.mkdir(parents=True)
    model_state, optim_state, state = checkpoint.load(good, Dist())
    torch.save(model_state, legacy / "model.pt")
    torch.save(optim_state, legacy / "optimizer.pt")
    (legacy / "trainer.json").write_text(json.dumps(state))
    again = checkpoint.load(legacy, Dist())
    assert all(torch.equal(again[0][k], model_state[k]) for k in model_state)


# ---- checkpoints kept -----------------------------------------------------------------------------

def test_keep_last_keeps_exactly_that_many(tmp_path):
    toy(tmp_path, max_steps=6, keep_last=2).fit()
    assert steps(tmp_path) == ["step-000005", "step-000006"]
    toy(tmp_path / "one", max_steps=3, keep_last=1).fit()
    assert steps(tmp_path / "one") == ["step-000003"]


def test_resume_falls_back_past_a_checkpoint_without_its_weights(tmp_path, capsys):
    toy(tmp_path, max_steps=4, keep_last=3).fit()
    whole = checkpoint.weights(tmp_path / "run" / "checkpoints" / "step-000004")
    (tmp_path / "run" / "checkpoints" / "step-000004" / "model.safetensors").unlink()  # killed mid-deletion
    t = toy(tmp_path, max_steps=4, keep_last=3, resume=True)
    assert t.resume() and t.state["step"] == 3
    assert "skipping incomplete checkpoint(s) step-000004" in capsys.readouterr().out
    t.fit()  # step 4 again, from step 3: the same weights as the first time
    again = checkpoint.weights(tmp_path / "run" / "checkpoints" / "step-000004")
    assert all(torch.equal(whole[k], again[k]) for k in whole)


# ---- divergence -----------------------------------------------------------------------------------

def test_exploding_update_stops_with_the_last_good_checkpoint(tmp_path):
    toy(tmp_path, lr=1e-2, max_steps=5).fit()  # five good steps and their checkpoints
    t = toy(tmp_path, lr=1e9, max_steps=30, resume=True)
    with pytest.raises(LmlabError, match=r"multiplied the trainable weights' norm .* at step 6.*Last good "
                                         r"checkpoint: .*step-000005"):
        t.fit()
    assert steps(tmp_path)[-1] == "step-000005"
    assert all(torch.isfinite(v).all() and v.abs().max() < 100
               for v in checkpoint.weights(tmp_path / "run" / "checkpoints" / "step-000005").values())


def test_loss_spike_stops_and_names_the_checkpoint_before_it(tmp_path):
    calls = {"n": 0}

    def spiky(model, batch):
        calls["n"] += 1
        loss, n, m = mse(model, batch)
        return (loss * 1000 if calls["n"] == 15 else loss), n, m

    with pytest.raises(LmlabError, match=r"the loss jumped to .* at step 15.*Last good checkpoint: .*step-000013"):
        toy(tmp_path, loss=spiky, max_steps=40).fit()
    assert steps(tmp_path)[-1] == "step-000014"  # written before the spike showed; not called good


def test_noisy_but_healthy_runs_are_not_stopped(tmp_path):
    """No false alarms: a noisy toy, and an lr high enough to oscillate but not diverge."""
    for run, steps in ((toy(tmp_path, max_steps=150, save_every=0), 150),
                       (toy(tmp_path / "hot", max_steps=80, save_every=0, lr=0.5, max_grad_norm=0), 80)):
        result = run.fit()  # a false alarm would raise
        assert result["step"] == steps and math.isfinite(result["loss"])


def test_diverging_sft_run_exits_non_zero_without_saving_wrecked_weights(tiny_folder, tiny_data, tmp_path):
    out = tmp_path / "lr1e9"
    r = subprocess.run([sys.executable, "-m", "lmlab.cli.main", "train", "sft", "--model", str(tiny_folder),
                        "--data", str(tiny_data), "--output", str(out), "--method", "full", "--lr", "1e9",
                        "--max-steps", "6", "--batch-size", "4", "--save-every", "1", "--device", "cpu",
                        "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "stopped. Last good checkpoint" in r.stderr, r.stderr[-2000:]
    assert not (out / "final").exists() and not list((out / "checkpoints").glob("step-*"))


# ---- data -----------------------------------------------------------------------------------------

def test_non_utf8_data_names_file_line_and_byte_offset_before_the_model_loads(tmp_path):
    from lmlab.train.sft import sft

    good = json.dumps({"prompt": "a", "completion": "b"}).encode() + b"\n"
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(good * 2 + b'{"prompt": "caf\xe9", "completion": "x"}\n')
    offset = 2 * len(good) + len(b'{"prompt": "caf')
    cfg = TrainConfig(model=str(tmp_path / "no-such-model"), data=str(path), progress=False)
    with pytest.raises(LmlabError, match=rf"latin1.jsonl:3: not UTF-8 text: byte 0xe9 at byte offset {offset}"):
        sft(cfg)  # the data's error, not the missing model's: the data is read first
    for suffix in (".json", ".csv"):
        other = path.with_suffix(suffix)
        other.write_bytes(b"[\xff]" if suffix == ".json" else b"prompt,completion\na,\xff\n")
        with pytest.raises(LmlabError, match=rf"latin1{suffix}: not UTF-8 text: byte 0xff at byte offset"):
            sft(TrainConfig(model=cfg.model, data=str(other), progress=False))
    from lmlab.train.data import read_records

    stats = {}
    assert len(read_records(path, skip_bad_rows=True, stats=stats)) == 2 and stats["skipped_rows"] == 1
