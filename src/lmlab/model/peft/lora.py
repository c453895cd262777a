"""LoRA (Hu et al. 2021): a frozen weight W plus a trainable low-rank update (alpha/r) * B @ A.

Our model fuses q/k/v and gate/up into one Linear each, while HF and `peft` name them apart. A
`LoRALinear` therefore wraps one Linear whose output is split into named parts (q_proj, k_proj,
v_proj) and gives each targeted part its own A and B, which is exactly what peft computes for
separate modules. Names in `target_modules` and in saved adapters are the HF/peft names.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.errors import LmlabError
from lmlab.model.io.hf import FUSED, GPT2_NAMES, LLAMA_NAMES, _rename

# peft's "all-linear": every Linear but the output layer.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Module, parts: list[tuple[str, int]], targets: set[str], r: int,
                 alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base, self.parts, self.r, self.scaling = base, parts, r, alpha / r
        for p in base.parameters():
            p.requires_grad_(False)
        in_features = base.in_features
        self.lora_A = nn.ModuleDict({n: nn.Linear(in_features, r, bias=False) for n, _ in parts if n in targets})
        self.lora_B = nn.ModuleDict({n: nn.Linear(r, size, bias=False) for n, size in parts if n in targets})
        for n in self.lora_A:  # peft's default init: A Kaiming-uniform, B zero, so training starts at W
            nn.init.kaiming_uniform_(self.lora_A[n].weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B[n].weight)
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True
        self.in_features, self.out_features = in_features, sum(s for _, s in parts)

    def forward(self, x):
        y = _frozen(self.base, x)
        if not self.enabled:
            return y
        # Every targeted part's A in one matmul and their Bs as one block-diagonal matrix (zero
        # rows for untargeted parts), added onto the base output by one fused addmm: the same sums
        # as separate A/B pairs, without a pass over the wide output per part.
        A = torch.cat([a.weight for a in self.lora_A.values()])  # [k r, in]
        z = F.linear(self.dropout(x).to(A.dtype), A)
        B = self._block_b()
        if y.dtype != A.dtype:  # a quantised or bf16 base under fp32 adapters
            return y + (F.linear(z, B) * self.scaling).to(y.dtype)
        return torch.addmm(y.reshape(-1, y.shape[-1]), z.reshape(-1, z.shape[-1]), B.t(),
                           alpha=self.scaling).view(y.shape)

    def _block_b(self) -> torch.Tensor:
        k, r, rows, j = len(self.lora_A), self.r, [], 0
        any_b = next(iter(self.lora_B.values())).weight
        for n, size in self.parts:
            if n in self.lora_B:
                rows.append(F.pad(self.lora_B[n].weight, (j * r, (k - j - 1) * r)))
                j += 1
            else:
                rows.append(any_b.new_zeros(size, k * r))
        return rows[0] if len(rows) == 1 else torch.cat(rows)

    def delta_weight(self) -> torch.Tensor:
        """The update (alpha/r) * B @ A as one [out, in] matrix, zero rows for untargeted parts."""
        rows = [self.lora_B[n].weight @ self.lora_A[n].weight * self.scaling if n in self.lora_A
                else self.lora_B[next(iter(self.lora_B))].weight.new_zeros(size, self.in_features)
                for n, size in self.parts]
        return torch.cat(rows)


class Dropout(nn.Module):
    """Inverted dropout that draws 16 random bits per element, four from each 64-bit draw. The
    CPU generator costs one call per element in nn.Dropout, which made LoRA's dropout over wide
    inputs a tenth of a training step; this is ~2.5x cheaper. The drop probability is rounded
    to a multiple of 1/65536 (0.05 -> 0.050003) and the scale uses the rounded value, so the
    expectation is exact."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise LmlabError(f"dropout must be in [0, 1), got {p}")
        self.p, self.drop = p, round(p * 65536)

    def forward(self, x):
        if not self.training or self.drop == 0:
            return x
        n = x.numel()
        bits = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        bits = bits.view(torch.int16)[:n].view(x.shape)
        return torch.where(bits >= self.drop - 32768, x * (65536 / (65536 - self.drop)), 0.0)


def _frozen(base: nn.Module, x):
    """The base layer's output; int8 bases (QLoRA-style) have no autograd kernel, so their input
    gradient is taken through the dequantised weight."""
    if hasattr(base, "qweight") and hasattr(base, "scale") and torch.is_grad_enabled() and x.requires_grad:
        return _Int8Frozen.apply(x, base)
    return base(x)


class _Int8Frozen(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, base):
        ctx.base = base
        return base(x)

    @staticmethod
    def backward(ctx, grad):
        return grad @ ctx.base.dequantised(grad.dtype), None


# ---- applying, merging, disabling -----------------------------------------------------------------

def _parts(model, name: str, out_features: int) -> list[tuple[str, int]]:
    """The HF module names (last component) and output sizes that one of our Linears holds."""
    c = model.config
    leaf = name.rsplit(".", 1)[-1]
    fused = next((f for f in FUSED if name.endswith(f)), None)
    if fused is None or c.family == "gpt2":
        hf = _hf_module_name(model, name)
        return [(hf.rsplit(".", 1)[-1], out_features)]
    if leaf == "qkv_proj":
        sizes = [c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim]
    else:
        sizes = [c.ffn_dim, c.ffn_dim]
    return [(p.rsplit(".", 1)[-1], s) for p, s in zip(FUSED[fused], sizes)]


def _hf_module_name(model, name: str) -> str:
    table = LLAMA_NAMES if model.config.family == "llama" else GPT2_NAMES
    hf = _rename(name + ".", table, to_hf=True)
    if hf is None:
        raise LmlabError(f"no HF name for module {name}")
    hf = hf[:-1]
    return hf if model.config.family == "llama" or hf.startswith("lm_head") else "transformer." + hf


def apply_lora(model: nn.Module, r: int = 16, alpha: float = 32, dropout: float = 0.0,
               targets: str | list[str] = "all-linear") -> list[str]:
    """Freeze the model and wrap targeted Linears (HF names, e.g. q_proj, or "all-linear").
    Returns the wrapped module names."""
    if r <= 0:
        raise LmlabError(f"LoRA rank must be >= 1, got {r}")
    want = set(ALL_LINEAR if targets in ("all-linear", ["all-linear"]) else
               ([targets] if isinstance(targets, str) else targets))
    if model.config.family == "gpt2" and targets in ("all-linear", ["all-linear"]):
        want = {"c_attn", "c_proj", "c_fc"}
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        if name == "lm_head" or not (isinstance(module, nn.Linear) or hasattr(module, "qweight")):
            continue
        parts = _parts(model, name, module.out_features)
        if not want & {n for n, _ in parts}:
            continue
        parent, leaf = _parent(model, name)
        setattr(parent, leaf, LoRALinear(module, parts, want, r, alpha, dropout)
                .to(device=_device(module)))
        wrapped.append(name)
    missing = want - {n for name in wrapped for n, _ in _parts(model, name, 0)}
    if not wrapped or missing:
        raise LmlabError(f"LoRA target modules not found in the model: {', '.join(sorted(missing or want))}")
    return wrapped


def _device(module):
    return next(iter(module.buffers()), next(iter(module.parameters()), torch.empty(0))).device


def _parent(model, name):
    path, _, leaf = name.rpartition(".")
    return (model.get_submodule(path) if path else model), leaf


def lora_modules(model) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


@contextmanager
def lora_disabled(model):
    """The base model, adapters off: DPO/PPO's reference policy without a second copy in memory."""
    mods = lora_modules(model).values()
    for m in mods:
        m.enabled = False
    try:
        yield model
    finally:
        for m in mods:
            m.enabled = True


@torch.no_grad()
def merge_lora(model) -> nn.Module:
    """Fold every adapter into its base weight and unwrap it (inference and export)."""
    for name, m in lora_modules(model).items():
        if not isinstance(m.base, nn.Linear):
            raise LmlabError("merging needs full-precision base weights; reload the base model in fp32/bf16")
        m.base.weight += m.delta_weight().to(m.base.weight.dtype)
        if hasattr(m.base, "drop_copies"):  # copies derived from the old weight (lmlab.cpu's layouts)
            m.base.drop_copies()
        parent, leaf = _parent(model, name)
        setattr(parent, leaf, m.base)
    return model


# ---- peft's adapter format -------------------------------------------------------------------------

def save_adapter(model, out_dir: str | Path, base_model: str = "", r: int | None = None,
                 alpha: float | None = None, dropout: float = 0.0) -> Path:
    """adapter_model.safetensors + adapter_config.json, loadable with peft.PeftModel.from_pretrained."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, targets = {}, set()
    mods = lora_modules(model)
    if not mods:
        raise LmlabError("the model has no LoRA adapters to save")
    for name, m in mods.items():
        hf = _hf_module_name(model, name)
        for part in m.lora_A:
            full = hf if len(m.parts) == 1 else hf.rsplit(".", 1)[0] + "." + part
            targets.add(part)
            tensors[f"base_model.model.{full}.lora_A.weight"] = m.lora_A[part].weight.detach().float().contiguous()
            tensors[f"base_model.model.{full}.lora_B.weight"] = m.lora_B[part].weight.detach().float().contiguous()
    any_m = next(iter(mods.values()))
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
              "r": r or any_m.r, "lora_alpha": alpha if alpha is not None else any_m.scaling * any_m.r,
              "lora_dropout": dropout, "target_modules": sorted(targets), "bias": "none",
              "fan_in_fan_out": model.config.family == "gpt2", "inference_mode": True,
              "use_rslora": False, "modules_to_save": None, "init_lora_weights": True}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def load_adapter(model, adapter_dir: str | Path) -> nn.Module:
    """Apply a peft LoRA adapter folder (ours or peft's) to our model."""
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    except (OSError, ValueError) as e:
        raise LmlabError(f"{adapter_dir}: not a LoRA adapter folder ({e})") from None
    if config.get("peft_type") != "LORA" or config.get("use_rslora"):
        raise LmlabError(f"{adapter_dir}: only plain LoRA adapters are supported")
    apply_lora(model, config["r"], config["lora_alpha"], 0.0, config["target_modules"])
    by_name = {}
    for name, m in lora_modules(model).items():
        hf = _hf_module_name(model, name)
        for part in m.lora_A:
            full = hf if len(m.parts) == 1 else hf.rsplit(".", 1)[0] + "." + part
            by_name[full] = (m, part)
    for key, t in tensors.items():
        m = re.match(r"base_model\.model\.(.+)\.(lora_[AB])(?:\.default)?\.weight$", key)
        if not m or m.group(1) not in by_name:
            raise LmlabError(f"{adapter_dir}: unexpected adapter tensor {key}")
        mod, part = by_name[m.group(1)]
        getattr(mod, m.group(2))[part].weight.data.copy_(t)
    return model
