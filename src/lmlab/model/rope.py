"""Rotary position embeddings (RoPE) and the frequency rescalings found in HF configs.

Rotation follows the HF "rotate_half" layout: the first and second halves of each head are the
two coordinates of every rotated pair.
"""

from __future__ import annotations

import math

import torch

from lmlab.errors import LmlabError


def inv_frequencies(head_dim: int, theta: float, scaling: dict | None,
                    max_seq_len: int) -> tuple[torch.Tensor, float]:
    """Return (inv_freq [head_dim/2], attention_factor) for a rope_scaling dict (or None).

    Always computed on the CPU, even inside a `torch.device("meta")` block: the buffer is small and
    a checkpoint never stores it.
    """
    base = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim))
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "default":
        return base, 1.0
    factor = float(scaling["factor"])
    if kind == "linear":  # positions compressed by `factor` (Chen et al. 2023)
        return base / factor, 1.0
    if kind == "llama3":  # long wavelengths scaled, short kept, a smooth ramp between
        old_len = scaling["original_max_position_embeddings"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        wavelen = 2 * math.pi / base
        scaled = torch.where(wavelen > old_len / low, base / factor, base)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, smoothed, scaled), 1.0
    if kind == "yarn":  # interpolate low frequencies, keep high ones, temper attention (Peng et al.)
        old_len = scaling.get("original_max_position_embeddings") or max_seq_len
        beta_fast, beta_slow = scaling.get("beta_fast", 32), scaling.get("beta_slow", 1)

        def correction_dim(rotations):
            return head_dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        lo = max(math.floor(correction_dim(beta_fast)), 0)
        hi = min(math.ceil(correction_dim(beta_slow)), head_dim - 1)
        ramp = ((torch.arange(head_dim // 2, dtype=torch.float32, device="cpu") - lo) / max(hi - lo, 1e-3)).clamp(0, 1)
        keep = 1 - ramp
        inv = base / factor * (1 - keep) + base * keep
        def mscale(scale=1.0):
            return 0.1 * scale * math.log(factor) + 1.0 if factor > 1 else 1.0

        attn = scaling.get("attention_factor")
        if attn is None:
            m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
            attn = mscale(m) / mscale(m_all) if m and m_all else mscale()
        return inv, float(attn)
    raise LmlabError(f"unsupported rope_scaling type {kind!r}; supported: default, linear, llama3, yarn")


class Rotary(torch.nn.Module):
    def __init__(self, head_dim: int, theta: float, scaling: dict | None, max_seq_len: int):
        super().__init__()
        inv_freq, self.attention_factor = inv_frequencies(head_dim, theta, scaling, max_seq_len)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [B, T, 1, head_dim] for integer positions [B, T] (to rotate heads laid
        out as [B, T, heads, head_dim])."""
        freqs = positions[..., None].float() * self.inv_freq  # [B, T, hd/2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, :, None]
        return (emb.cos() * self.attention_factor).to(dtype), (emb.sin() * self.attention_factor).to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.addcmul(x * cos, torch.cat((-x2, x1), dim=-1), sin)  # x cos + rotate_half(x) sin
