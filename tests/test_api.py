"""One name per meaning: the default conditioner size, renamed options, keyword-only options."""

from __future__ import annotations

import pytest
from torch import nn

import pyroflows as pf
import pyroflows.transforms as T
from pyroflows.cli import _parser


def first_width(module: nn.Module) -> int:
    return next(m.out_features for m in module.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize(
    "build",
    [
        lambda: pf.MAF(3),
        lambda: pf.IAF(3),
        lambda: pf.RealNVP(3),
        lambda: pf.NICE(3),
        lambda: pf.Glow(3),
        lambda: pf.Planar(3, context_dim=2),
        lambda: pf.CNF(3),
        lambda: pf.NSF(3),
        lambda: pf.NSF(3, fast="density"),
        lambda: T.Coupling(3),
        lambda: T.MaskedAutoregressive(3),
        lambda: T.ContinuousFlow(3),
        lambda: T.maf(3),
        lambda: T.iaf(3),
        lambda: T.affine_coupling(3),
        lambda: T.additive_coupling(3),
        lambda: T.spline_coupling(3),
        lambda: T.spline_autoregressive(3),
        lambda: T.conditional_affine_coupling(3, 2),
        lambda: T.conditional_maf(3, 2),
        lambda: T.conditional_planar(3, 2),
        lambda: T.continuous_flow(3),
        lambda: pf.nn.MLP(3, 4),
        lambda: pf.nn.MADE(3),
    ],
)
def test_every_default_conditioner_follows_the_one_rule(build):
    width = pf.nn.default_hidden_dims()[0]
    assert pf.nn.default_hidden_dims() == (64, 64)
    assert first_width(build()) == width


def test_the_cli_and_saved_configs_use_the_rule():
    args = _parser().parse_args(["fit", "data.csv", "--out", "m.pt"])
    assert args.hidden == pf.nn.default_hidden_dims()
    assert pf.MAF(2).config["hidden_dims"] == (64, 64)  # the sizes built, not None


def test_planar_names_one_thing_each():
    assert issubclass(pf.Planar, pf.Flow)
    assert issubclass(T.PlanarTransform, T.FlowTransform)
    assert issubclass(T.ConditionalPlanarTransform, T.PlanarTransform)
    assert "Planar" not in T.__all__ and "ConditionalPlanar" not in T.__all__
    with pytest.warns(DeprecationWarning, match="PlanarTransform"):
        assert T.Planar is T.PlanarTransform
    with pytest.warns(DeprecationWarning, match="ConditionalPlanarTransform"):
        from pyroflows.transforms import ConditionalPlanar
    assert ConditionalPlanar is T.ConditionalPlanarTransform
    with pytest.raises(AttributeError):
        T.NoSuchTransform  # noqa: B018
