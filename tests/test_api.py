"""One name per meaning: the default conditioner size, renamed options, keyword-only options."""

from __future__ import annotations

import inspect

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


def _positional_after_first(fn) -> list[str]:
    params = list(inspect.signature(fn).parameters.values())
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params[1:] if p.kind in kinds]


PRESETS = [c for n, c in sorted(pf.FLOWS.items()) if c.__module__.startswith("pyroflows.")]
TRANSFORM_CLASSES = [
    getattr(T, n) for n in T.__all__ if isinstance(getattr(T, n), type) and n[0].isupper()
]


@pytest.mark.parametrize("cls", PRESETS + TRANSFORM_CLASSES, ids=lambda c: c.__name__)
def test_options_after_the_first_argument_are_keyword_only(cls):
    # Standardize(mean, std): data, not options; ConditionedTransform(parent, context) is what
    # transform.condition(context) returns, not built by users
    allowed = {"Standardize": ["std"], "ConditionedTransform": ["context"]}.get(cls.__name__, [])
    assert _positional_after_first(cls.__init__)[1:] == allowed  # [0] is self


def test_a_positional_option_is_refused_with_a_type_error():
    with pytest.raises(TypeError, match="positional"):
        pf.MAF(3, 2, (8,))
    with pytest.raises(TypeError, match="positional"):
        T.ConditionalCoupling(3, 2, (8,))


# Pyro's helper convention: input_dim, context_dim and hidden_dims are positional (iterated and
# AutoNormalizingFlow pass them so); pyroflows' spline_coupling differs from Pyro's, whose second
# positional argument is split_dim, so there it is keyword-only.
@pytest.mark.parametrize(
    ("helper", "positional"),
    [
        (T.affine_coupling, ["hidden_dims"]),
        (T.conditional_affine_coupling, ["context_dim", "hidden_dims"]),
        (T.maf, ["hidden_dims"]),
        (T.conditional_iaf, ["context_dim", "hidden_dims"]),
        (T.spline_autoregressive, ["hidden_dims"]),
        (T.conditional_planar, ["context_dim", "hidden_dims"]),
        (T.spline_coupling, []),
        (T.image_coupling, []),
        (T.conditional_image_coupling, ["context_dim"]),
        (T.glow_transforms, []),
        (T.realnvp_image_transforms, []),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_helpers_keep_pyros_positional_order(helper, positional):
    assert _positional_after_first(helper) == positional
