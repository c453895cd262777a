"""fp32 products through oneDNN instead of MKL, where oneDNN is faster (features.onednn_preferred).

torch's fp32 GEMM on x86 is MKL's, which takes slow paths on CPUs not made by Intel. Measured on
an AMD EPYC (benchmarks/gemm_kernels.py): oneDNN ran the bundled model's shapes at 1.1-1.24x MKL's
rate for 2048 rows and up to 3-5x for 8-32 rows on the wide gate_up and vocabulary layers.
Two ways in: PackedLinear for inference (the weight reordered once into oneDNN's layout and held
instead of the plain one), and OneDNNFrozenLinear for training (a frozen layer, such as LoRA's base
or a frozen output layer, multiplied through oneDNN forward and for the input gradient).
"""

from __future__ import annotations

import torch
from torch import nn

from lmlab.cpu import features


def onednn_pack(weight: torch.Tensor) -> torch.Tensor:
    """An fp32 [out, in] weight reordered into oneDNN's blocked layout for onednn_linear."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().float().contiguous())


def onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ W.T + bias for fp32 x [..., in] and a weight packed by onednn_pack (no autograd)."""
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]).contiguous(), packed, bias, "none", [], "")
    return y.reshape(*x.shape[:-1], y.shape[-1])


class PackedLinear(nn.Module):
    """An fp32 linear layer for inference, its weight held only in oneDNN's blocked layout (no
    gradient; a head tied to the embedding gets its own copy)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.packed = onednn_pack(linear.weight)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x):
        return onednn_linear(x.float(), self.packed, self.bias).to(x.dtype)

    def dequantised(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight [out, in] as a plain tensor."""
        return self.packed.to_dense().to(dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        # state_dict() (so save_model) holds the plain weight under nn.Linear's name
        destination[prefix + "weight"] = self.dequantised()
        super()._save_to_state_dict(destination, prefix, keep_vars)


def pack_linears(model: nn.Module) -> nn.Module:
    """Replace every fp32 nn.Linear by a PackedLinear (in place; inference only)."""
    for name, child in model.named_children():
        if type(child) is nn.Linear:
            setattr(model, name, PackedLinear(child))
        else:
            pack_linears(child)
    return model


class OneDNNFrozenLinear(nn.Linear):
    """An nn.Linear that, while its weight is frozen, multiplies through oneDNN in the forward pass
    and for the input gradient. Its class is swapped onto existing layers (same parameters, same
    state_dict). The weight is reordered once for x @ W.T and once for grad @ W, and these copies are
    cached on the layer until the weight changes (two more copies in memory)."""

    def forward(self, x):
        w = self.weight
        if (not w.requires_grad and type(w.data) is torch.Tensor  # not a DTensor (FSDP)
                and x.dtype == w.dtype == torch.float32 and x.device.type == "cpu"
                and not torch.is_autocast_enabled("cpu")):
            return _OneDNNFrozen.apply(x, self)
        return super().forward(x)

    def packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, W.T) in oneDNN's layout, cached until the weight changes."""
        w = self.weight
        cached = self.__dict__.get("_onednn")
        if cached is None or cached[0] != (w.data_ptr(), w._version):
            cached = ((w.data_ptr(), w._version), onednn_pack(w), onednn_pack(w.t()))
            self.__dict__["_onednn"] = cached
        return cached[1:]


    def drop_copies(self) -> None:
        """Free the packed copies (their weight changed, or they are no longer needed)."""
        self.__dict__.pop("_onednn", None)


class _OneDNNFrozen(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, linear):
        ctx.linear = linear
        return onednn_linear(x, linear.packed()[0], linear.bias)

    @staticmethod
    def backward(ctx, grad):
        return onednn_linear(grad, ctx.linear.packed()[1], None), None


def frozen_through_onednn(model: nn.Module) -> int:
    """Give every plain nn.Linear the oneDNN forward for when it is frozen; how many."""
    n = 0
    for m in model.modules():
        if type(m) is nn.Linear:
            m.__class__ = OneDNNFrozenLinear
            n += 1
    return n

