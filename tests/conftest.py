from __future__ import annotations

import contextlib
import math
import os
import sys

import pyro
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield


@pytest.fixture
def fit_calls(monkeypatch):
    """Record every ``pyroflows.infer.fit(flow, data, **kw)`` call (the fit still runs)."""
    import pyroflows.infer

    calls: list = []
    real_fit = pyroflows.infer.fit

    def spy(flow, data, **kw):
        calls.append((flow, data, kw))
        return real_fit(flow, data, **kw)

    monkeypatch.setattr(pyroflows.infer, "fit", spy)
    return calls


def gaussian_flow(dim: int, scale: float = 1.0):
    """A flow that is exactly N(0, scale^2 I): no transforms, a diagonal base."""
    import pyroflows as pf

    flow = pf.Flow([], event_shape=(dim,), base="diag")
    with torch.no_grad():
        flow.base_log_scale.fill_(math.log(scale))
    return flow


def normal_nll(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The exact NLL of ``x`` under N(0, scale^2 I), in float64."""
    d = x.shape[-1]
    return (x.double() ** 2).sum(-1) / (2 * scale**2) + d * (
        math.log(scale) + 0.5 * math.log(2 * math.pi)
    )


def perturb(obj, scale: float = 0.3) -> None:
    """Move every parameter away from its (identity) initialisation, so checks are not trivial."""
    with torch.no_grad():
        for p in obj.parameters():
            p.add_(scale * torch.randn_like(p))
        for name, b in obj.named_buffers():
            if name.endswith("initialized"):
                b.fill_(True)


def context_for(entry, batch=(), dtype=None):
    if not entry.context_dim:
        return None
    return torch.randn(*batch, entry.context_dim, dtype=dtype or torch.get_default_dtype())


@pytest.fixture
def make():
    """Build a registry entry, perturbed, optionally in float64."""

    def _make(entry, dtype=torch.float32, perturbed=True):
        obj = entry.factory()
        if perturbed:
            perturb(obj)
        return obj.to(dtype)

    return _make


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Run a block under another torch default dtype, restoring the old one afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
