"""Masked autoregressive layers: the sequential solve (MAF sampling, IAF density)."""

from __future__ import annotations

import pytest
import torch
from conftest import perturb

from pyroflows.transforms import ConditionalMaskedAutoregressive, MaskedAutoregressive

F64 = torch.float64
D = 4


def _layer(fast: str, transformer: str, context_dim: int = 0) -> MaskedAutoregressive:
    torch.manual_seed(0)
    kw = {"hidden_dims": (8,), "fast": fast, "transformer": transformer}
    if context_dim:
        t = ConditionalMaskedAutoregressive(D, context_dim=context_dim, **kw)
    else:
        t = MaskedAutoregressive(D, **kw)
    t = t.double()
    perturb(t)
    return t


def _eager_reference(t: MaskedAutoregressive, u, context, inverse: bool):
    """The solve with every pass's log-derivatives computed (the previous code), the last kept."""
    w, s = torch.zeros_like(u), None
    for _ in range(D):
        w, s = t._tau(u, t.conditioner(w, context), inverse=inverse, dim=-2)
    return w, s.sum(-1)


def _sequential_pass(t: MaskedAutoregressive, u, context):
    """The layer's sequential direction: forward for MAF, inverse for IAF."""
    if t.fast == "density":
        return t.forward_and_log_det(u, context), False
    return t.inverse_and_log_det(u, context), True


@pytest.mark.parametrize("transformer", ["spline", "affine"])
@pytest.mark.parametrize("fast", ["density", "sample"])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_the_sequential_solve_equals_the_all_eager_loop_bit_for_bit(fast, transformer, context_dim):
    t = _layer(fast, transformer, context_dim)
    u = 3 * torch.randn(32, D, dtype=F64)  # spline: inside and outside [-B, B]
    c = torch.randn(32, context_dim, dtype=F64) if context_dim else None
    (w, ld), inverse = _sequential_pass(t, u, c)
    w_ref, ld_ref = _eager_reference(t, u, c, inverse)
    assert torch.equal(w, w_ref)
    assert torch.equal(ld, ld_ref)
    assert ld.abs().min() > 0  # a real log-det, not zeros


@pytest.mark.parametrize("fast", ["density", "sample"])
def test_only_the_last_of_the_d_passes_computes_the_log_derivatives(fast):
    t = _layer(fast, "spline")
    tau, flags, calls = t._tau, [], []

    def spy(*args, log_det=True, **kwargs):
        flags.append(log_det)
        return tau(*args, log_det=log_det, **kwargs)

    t._tau = spy
    t.conditioner.register_forward_hook(lambda *_: calls.append(1))
    _sequential_pass(t, torch.randn(5, D, dtype=F64), None)
    assert len(calls) == D  # one conditioner pass per coordinate, none added
    assert flags == [False] * (D - 1) + [True]
