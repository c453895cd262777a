"""torch.distributed, as torchrun starts it; a single process is the same code with world = 1.

Launch: `torchrun --nproc-per-node 2 -m lmlab.cli.main train sft ...` (gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist



@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Sum numbers over all ranks (one collective for the whole list)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def setup(device: str = "auto") -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(int(os.environ.get("RANK", "0")), world, local, dev)


def wrap(module: torch.nn.Module, d: Dist, mode: str) -> torch.nn.Module:
    """DDP (replicated weights, gradients all-reduced) or FSDP2 (weights sharded per block)."""
    if d.world == 1:
        return module
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in module.model.layers:
            fully_shard(block)
        return fully_shard(module)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
