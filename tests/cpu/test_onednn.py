"""fp32 products through oneDNN (lmlab.cpu.onednn): the same numbers as the plain layer, packed
for inference or frozen under training, and only on the CPUs where oneDNN is preferred."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmlab.cpu import features, onednn


@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_equals_the_linear_it_packs(bias):
    torch.manual_seed(0)
    lin = nn.Linear(64, 96, bias=bias)
    packed = onednn.PackedLinear(lin)
    assert not hasattr(packed, "weight") or packed.weight is None  # the plain weight is not kept
    assert torch.equal(packed.dequantised(), lin.weight)
    for shape in [(1, 64), (7, 64), (2, 300, 64)]:  # a decoded row, a few streams, a prompt batch
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(packed(x), lin(x), rtol=1e-5, atol=1e-5)


def test_onednn_is_preferred_on_non_intel_cpus_only(monkeypatch):
    for vendor, expected in [("AuthenticAMD", True), ("HygonGenuine", True), ("GenuineIntel", False), (None, False)]:
        monkeypatch.setattr(features, "_cpuinfo", lambda: {} if vendor is None else {"vendor_id": vendor})
        assert features.onednn_preferred() is (expected and torch.backends.mkldnn.is_available())


def test_a_packed_linear_saves_the_plain_weight_under_linears_name():
    lin = nn.Linear(16, 8)
    state = onednn.PackedLinear(lin).state_dict()
    assert set(state) == {"weight", "bias"}
    assert torch.equal(state["weight"], lin.weight) and torch.equal(state["bias"], lin.bias)


@pytest.mark.parametrize("frozen", [True, False])
def test_a_frozen_layer_multiplies_through_onednn_and_a_trained_one_does_not(frozen):
    """A frozen fp32 weight goes through oneDNN (forward and input gradient) with the same results
    as the plain layer; a trained weight takes the plain path and gets its gradient."""
    torch.manual_seed(0)
    lin = nn.Linear(40, 300)  # wide, as the output layer
    plain = nn.Linear(40, 300)
    plain.load_state_dict(lin.state_dict())
    assert onednn.frozen_through_onednn(lin) == 1
    assert isinstance(lin, nn.Linear) and set(lin.state_dict()) == {"weight", "bias"}  # same layer to others
    lin.weight.requires_grad_(not frozen)
    x = torch.randn(2, 9, 40, requires_grad=True)
    y = lin(x)
    assert ("_onednn" in lin.__dict__) == frozen
    y.square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    plain(x2).square().sum().backward()
    torch.testing.assert_close(y, plain(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-4)
    assert (lin.weight.grad is None) == frozen
    lin.drop_copies()
    assert "_onednn" not in lin.__dict__


def test_a_changed_frozen_weight_is_packed_again_not_served_stale():
    torch.manual_seed(0)
    lin = nn.Linear(32, 24).requires_grad_(False)
    onednn.frozen_through_onednn(lin)
    x = torch.randn(5, 32)
    lin(x)
    with torch.no_grad():
        lin.weight.mul_(2)
    torch.testing.assert_close(lin(x), x @ lin.weight.t() + lin.bias, rtol=1e-5, atol=1e-5)
