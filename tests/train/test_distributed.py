"""torchrun: 2 processes (gloo, CPU) x batch 2 update the weights as 1 process x batch 4, with DDP
and with FSDP2."""

import socket
import subprocess
import sys

import torch

from lmlab.train import checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(procs: int, batch: int, tiny_folder, tiny_data, out, mode="ddp"):
    args = ["-m", "lmlab.cli.main", "train", "sft", "--model", str(tiny_folder), "--data", str(tiny_data),
            "--output", str(out), "--method", "full", "--max-steps", "3", "--batch-size", str(batch),
            "--grad-accum", "2", "--lr", "1e-4", "--device", "cpu", "--no-progress", f"distributed={mode}"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    r = subprocess.run(launcher + args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return checkpoint.weights(out / "checkpoints" / "step-000003")


def test_two_processes_ddp_and_fsdp2_equal_one_process(tiny_folder, tiny_data, tmp_path):
    one = _train(1, 4, tiny_folder, tiny_data, tmp_path / "one")
    for mode in ("ddp", "fsdp"):
        two = _train(2, 2, tiny_folder, tiny_data, tmp_path / mode, mode)
        assert one.keys() == two.keys() and len(one) > 10
        for k in one:
            torch.testing.assert_close(two[k], one[k], atol=1e-6, rtol=0, msg=lambda m: f"{mode}: {k}: {m}")
    assert (tmp_path / "fsdp" / "final" / "config.json").is_file()  # shards gathered for export
    # ... and training moved the weights by far more than that tolerance.
    from lmlab.model.io.hf import load_model

    start = load_model(tiny_folder).state_dict()
    assert max((one[k] - start[k.removeprefix("model.")]).abs().max() for k in one) > 1e-4
