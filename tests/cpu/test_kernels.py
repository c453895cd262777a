"""lmlab's own CPU kernels (lmlab.cpu.kernels): exactly the products they define, on the AVX2
path (inputs a multiple of 32) and the plain C++ one, for any number of rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmlab.cpu import int8, kernels as cpu_kernels
from lmlab.model.quant import Int8Linear

pytestmark = pytest.mark.skipif(not cpu_kernels.available(),
                                reason="lmlab's kernels are not built (no C++ toolchain, or LMLAB_NO_KERNELS=1)")


def _int8_reference(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The kernel's definition: each row of x rounded to int16 with scale max|x| / 8191, then
    exact integer dot products with q, times both scales."""
    x = x.double()
    sx = x.abs().amax(-1, keepdim=True) / 8191
    sx[sx == 0] = 1
    xq = (x / sx).round()
    return (xq @ q.double().T) * sx * scale.double()


@pytest.mark.parametrize("k", [64, 40], ids=["avx2", "plain"])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9, 37])
def test_int8_linear_is_the_product_it_defines(rows, k):
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, k, generator=g) * torch.logspace(-2, 1, rows)[:, None]
    q = torch.randint(-127, 128, (48, k), dtype=torch.int8, generator=g)
    scale = torch.rand(48, generator=g) + 0.01
    y = cpu_kernels.int8_linear(x, q, scale)
    assert y.shape == (rows, 48) and y.dtype == torch.float32
    assert torch.allclose(y.double(), _int8_reference(x, q, scale), rtol=1e-5, atol=1e-6)
    exact = x.double() @ (q.double() * scale.double()[:, None]).T
    assert (y.double() - exact).abs().max() <= 1e-3 * exact.abs().max()  # int16 rounding of x only


@pytest.mark.parametrize("k", [1056, 1000], ids=["avx2", "plain"])
def test_int8_linear_gives_each_row_the_same_bits_alone_or_in_a_batch(k):
    """Weight blocks and groups of rows must not change a row's sums: a stream's tokens may not
    depend on which other streams share its decode step (the engine's seed guarantee)."""
    g = torch.Generator().manual_seed(k)
    x = torch.randn(13, k, generator=g).bfloat16()
    q = torch.randint(-127, 128, (61, k), dtype=torch.int8, generator=g)  # blocks of 7 or 8 rows, a short last one
    scale = (torch.rand(61, generator=g) + 0.01).bfloat16()
    batch = cpu_kernels.int8_linear(x, q, scale)
    for r in (0, 5, 12):
        assert torch.equal(cpu_kernels.int8_linear(x[r:r + 1], q, scale)[0], batch[r])
    ref = _int8_reference(x.float(), q, scale.float())
    assert (batch.double() - ref).abs().max() <= 2**-8 * ref.abs().max()  # bf16 output rounding


def test_int8_linear_takes_bf16_and_returns_bf16_and_a_zero_row_stays_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 64, generator=g).bfloat16()
    x[1] = 0
    q = torch.randint(-127, 128, (32, 64), dtype=torch.int8, generator=g)
    scale = (torch.rand(32, generator=g) + 0.01).bfloat16()
    y = cpu_kernels.int8_linear(x, q, scale)
    assert y.dtype == torch.bfloat16 and torch.equal(y[1], torch.zeros(32, dtype=torch.bfloat16))
    ref = _int8_reference(x.float(), q, scale.float())
    assert (y.double() - ref).abs().max() <= 2**-8 * ref.abs().max()


def test_int8_layers_decode_through_the_kernel_and_agree_with_torchs():
    torch.manual_seed(0)
    layer = Int8Linear(nn.Linear(128, 96)).to(torch.bfloat16)
    int8.use_cpu_int8(layer)  # as lmlab.cpu.optimize does
    assert layer.own_kernel
    x = torch.randn(2, 128).bfloat16()
    with torch.no_grad(), torch.profiler.profile() as prof:
        ours = layer(x).float()
    assert any(e.name == "lmlab_cpu::int8_linear" for e in prof.events())
    layer.own_kernel = False
    with torch.no_grad():
        torchs = layer(x).float()
    assert (ours - torchs).abs().max() <= 0.01 * torchs.abs().max()


def test_a_build_failure_leaves_torchs_kernels(monkeypatch):
    import torch.utils.cpp_extension as ext

    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(ext, "load", broken)
    cpu_kernels.available.cache_clear()
    try:
        with pytest.warns(UserWarning, match="could not be built"):
            assert cpu_kernels.available() is False
        layer = nn.Sequential(Int8Linear(nn.Linear(64, 32)))
        int8.use_cpu_int8(layer)
        assert getattr(layer[0], "own_kernel", False) is False
    finally:
        monkeypatch.undo()
        cpu_kernels.available.cache_clear()
        assert cpu_kernels.available()


@pytest.mark.parametrize("D", [16, 64, 20], ids=["vector", "registers", "plain"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask", ["none", "per row", "shared"])
def test_decode_attention_equals_torchs_attention_on_cache_views(dtype, mask, D):
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    B, H, Hkv, L = 3, 6, 2, 37  # 37 keys: groups of 4 and 8 with a remainder
    q = torch.randn(B, H, 1, D, generator=g).to(dtype)
    cache_k, cache_v = (torch.randn(B + 2, Hkv, L + 9, D, generator=g).to(dtype) for _ in range(2))
    k, v = cache_k[:B, :, :L], cache_v[:B, :, :L]  # strided views, as the engine's cache hands them
    m = None if mask == "none" else torch.rand(B if mask == "per row" else 1, 1, 1, L, generator=g) > 0.4
    if m is not None:
        m[..., 0] = True
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=m, enable_gqa=True)
    y = cpu_kernels.decode_attention(q, k, v, m, D ** -0.5)
    assert y.dtype == dtype and y.shape == (B, H, 1, D)
    assert (y.float() - ref).abs().max() <= (1e-5 if dtype == torch.float32 else 1e-2)



def test_greedy_pick_is_the_first_argmax_and_its_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1003, generator=g) * 4  # 1003: vector blocks of 8 and a remainder
    logits[1, [7, 900]] = 50.0  # a tie: the first index wins, as with torch.argmax
    logits[2, 1001] = 60.0  # the largest value in the remainder
    logits[3, ::3] = float("-inf")  # masked tokens
    idx, lp = cpu_kernels.greedy_pick(logits)
    assert idx.tolist() == logits.argmax(-1).tolist() and idx[1] == 7 and idx[2] == 1001
    ref = logits.log_softmax(-1).gather(1, idx[:, None])[:, 0]
    assert torch.allclose(lp, ref, atol=1e-5, rtol=1e-5)


def test_a_build_is_announced_only_when_the_kernels_are_not_yet_built():
    if not cpu_kernels.available():
        pytest.skip("kernels unavailable here")
    name = f"lmlab_cpu_kernels_{torch.backends.cpu.get_cpu_capability().lower()}"
    assert cpu_kernels._built(name)  # the line is not printed again once built
    assert not cpu_kernels._built("lmlab_cpu_kernels_never_built")
