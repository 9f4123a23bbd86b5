"""Bad input gets a clear error that says what to do (core transforms and flows)."""

from __future__ import annotations

import pytest
import torch

import pyroflows as pf
from pyroflows import transforms as T


@pytest.mark.parametrize("flow_cls", [pf.MAF, pf.IAF, pf.RealNVP, pf.NICE, pf.Glow, pf.Planar])
def test_wrong_data_shape(flow_cls):
    flow = flow_cls(3, 2, (8,))
    with pytest.raises(ValueError, match=r"Expected data shape \(\.\.\., 3\); got \(5, 4\)"):
        flow.log_prob(torch.randn(5, 4))


def test_wrong_shape_at_transform_level_names_the_layer():
    with pytest.raises(
        ValueError, match=r"Coupling: expected input shape \(\.\.\., 4\); got \(2, 3\)"
    ):
        T.Coupling(4)(torch.randn(2, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_names_rows(bad):
    flow = pf.RealNVP(2, 2, (8,))
    x = torch.randn(6, 2)
    x[4, 1] = bad
    with pytest.raises(pf.NonFiniteError, match=r"NaN or Inf \(first bad rows \[4\]\)"):
        flow.log_prob(x)


def test_non_finite_output_from_finite_input_names_the_layer():
    t = T.ElementwiseAffine(2)
    with torch.no_grad():
        t.log_scale.fill_(1e4)
    with pytest.raises(pf.NonFiniteError, match=r"ElementwiseAffine.*finite input"):
        t(torch.ones(1, 2))


def test_validation_can_be_switched_off_and_returns_nan():
    flow = pf.RealNVP(2, 2, (8,))
    with pf.validation(False):
        lp = flow.log_prob(torch.tensor([[float("nan"), 0.0]]))
    assert torch.isnan(lp).all()


def test_context_errors():
    flow = pf.MAF(3, 2, (8,), context_dim=2)
    with pytest.raises(ValueError, match=r"Expected context shape \(\.\.\., 2\); got \(4, 5\)"):
        flow.log_prob(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match="is conditional"):
        flow.log_prob(torch.randn(4, 3))
    with pytest.raises(ValueError, match="unconditional"):
        pf.MAF(3, 2, (8,)).log_prob(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="pass a context"):
        T.ConditionalCoupling(3, 2)(torch.randn(2, 3))


def test_dtype_mismatch_says_how_to_convert():
    flow = pf.RealNVP(2, 2, (8,)).double()
    with pytest.raises(TypeError, match=r"float32 input for a torch.float64 transform"):
        flow.log_prob(torch.randn(3, 2, dtype=torch.float32))


def test_invalid_options():
    with pytest.raises(ValueError, match="fast must be"):
        T.MaskedAutoregressive(3, fast="fastest")
    with pytest.raises(ValueError, match="transformer must be"):
        T.Coupling(3, transformer="cubic")
    with pytest.raises(ValueError, match="input_dim >= 2"):
        T.Coupling(1)
    with pytest.raises(ValueError, match="permutation"):
        T.Permute([0, 0, 1])
    with pytest.raises(ValueError, match="base must be"):
        pf.MAF(2, base="laplace")


def test_save_of_a_hand_built_flow_explains_the_alternative(tmp_path):
    flow = pf.Flow([T.Coupling(2)], event_shape=(2,))
    with pytest.raises(ValueError, match="state_dict"):
        pf.save(flow, tmp_path / "x.pt")


def test_load_rejects_files_that_are_not_models(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a pyroflows model file"):
        pf.load(path)
    with pytest.raises(FileNotFoundError):
        pf.load(tmp_path / "missing.pt")
