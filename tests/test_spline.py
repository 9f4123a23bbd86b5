"""Neural spline flows: the rational-quadratic spline transformer, its layers and the NSF preset."""

from __future__ import annotations

import functools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import perturb
from pyro.distributions.transforms import iterated
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormalizingFlow

import pyroflows as pf
from pyroflows import transforms as T
from pyroflows.transforms.elementwise import _knots, rational_quadratic_spline

F64 = torch.float64


def _params(n: int, bins: int, scale: float = 1.0, dtype=torch.float32, seed: int = 0):
    """``(n, 3 * bins - 1)`` raw parameters: the parameter axis last (``dim=-1``)."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(3 * bins - 1, n, generator=g, dtype=F64).to(dtype).T


def _spline(x, params, bins, bound, inverse=False):
    n = x.shape[0]
    return rational_quadratic_spline(x, params[:n], bins=bins, bound=bound, inverse=inverse)


# ---- an independent evaluation in Python floats --------------------------------------------


def _py_knots(raw, min_size, bound):
    e = [math.exp(r) for r in raw]
    sizes = [min_size + (1 - min_size * len(raw)) * v / sum(e) for v in e]
    cum = [0.0]
    for s in sizes:
        cum.append(cum[-1] + s)
    return [-bound + 2 * bound * c for c in cum[:-1]] + [bound]


def _py_spline(x, raw, bins, bound, m=1e-3):
    xs, ys = _py_knots(raw[:bins], m, bound), _py_knots(raw[bins : 2 * bins], m, bound)
    c = math.log(math.expm1(1 - m))
    ds = [1.0] + [m + math.log1p(math.exp(r + c)) for r in raw[2 * bins :]] + [1.0]
    if not -bound <= x <= bound:
        return x
    k = max(i for i in range(bins) if xs[i] <= x) if x < bound else bins - 1
    w, h = xs[k + 1] - xs[k], ys[k + 1] - ys[k]
    s, xi = h / w, (x - xs[k]) / w
    # Gregory & Delbourgo's monotone rational quadratic (Durkan et al. 2019, eq. 4)
    num = h * (s * xi**2 + ds[k] * xi * (1 - xi))
    return ys[k] + num / (s + (ds[k + 1] + ds[k] - 2 * s) * xi * (1 - xi))


@pytest.mark.parametrize("bins", [2, 3])
def test_spline_equals_an_independent_closed_form_on_hand_set_knots(bins):
    raw = [0.3, -0.7, 1.1, 0.2, -1.3, 0.9, 0.4, -0.5][: 3 * bins - 1]
    bound = 1.5
    xs = [-4.0, -1.5, -1.2, -0.3, 0.0, 0.41, 0.9, 1.49, 1.5, 2.5]
    params = torch.tensor(raw, dtype=F64).expand(len(xs), -1)
    x = torch.tensor(xs, dtype=F64)
    y, ld = rational_quadratic_spline(x, params, bins=bins, bound=bound)
    want = [_py_spline(v, raw, bins, bound) for v in xs]
    assert y.tolist() == pytest.approx(want, abs=1e-12)
    # log-derivative against a central difference of the independent formula
    e = 1e-6
    slope = [(_py_spline(v + e, raw, bins, bound) - _py_spline(v - e, raw, bins, bound)) / (2 * e)
             for v in xs]  # fmt: skip
    interior = [i for i, v in enumerate(xs) if abs(abs(v) - bound) > 1e-3]
    got = ld.exp().tolist()
    assert [got[i] for i in interior] == pytest.approx([slope[i] for i in interior], rel=1e-6)
    # the inverse of the independent values, and the same log-derivative
    back, ld_inv = rational_quadratic_spline(
        torch.tensor(want, dtype=F64), params, bins=bins, bound=bound, inverse=True
    )
    assert torch.allclose(back, x, atol=1e-12, rtol=0)
    assert torch.allclose(ld_inv, ld, atol=1e-10, rtol=0)


def test_zero_parameters_give_the_identity():
    x = torch.linspace(-7, 7, 1001)
    y, ld = _spline(x, torch.zeros(1001, 23), 8, 3.0)
    assert torch.allclose(y, x, atol=1e-6, rtol=0) and ld.abs().max() < 1e-6


def test_spline_is_strictly_monotonic():
    bins, bound = 8, 3.0
    x = torch.linspace(-6, 6, 20001, dtype=F64)
    params = _params(1, bins, scale=3.0, dtype=F64).expand(20001, -1)
    y, ld = _spline(x, params, bins, bound)
    assert bool((y.diff() > 0).all()) and bool(torch.isfinite(ld).all())
    x_back, _ = _spline(y, params, bins, bound, inverse=True)
    assert bool((x_back.diff() > 0).all())


def test_value_and_slope_are_continuous_at_bin_edges_and_at_the_tails():
    # the slope may change fast inside a narrow bin: compare one-sided values 1e-12 apart
    bins, bound, eps = 5, 2.0, 1e-12
    params = _params(1, bins, scale=2.0, dtype=F64)
    edges = _knots(params[..., :bins], 1e-3, bound)[0]  # -B, the inner knots, B
    assert edges[0] == -bound and edges[-1] == bound
    n = 3 * len(edges)
    x = torch.cat([edges - eps, edges, edges + eps])
    y, ld = _spline(x, params.expand(n, -1), bins, bound)
    left, mid, right = y.view(3, -1)
    assert torch.allclose(left, mid, atol=1e-10, rtol=0)
    assert torch.allclose(right, mid, atol=1e-10, rtol=0)
    l_ld, _, r_ld = ld.view(3, -1)
    assert torch.allclose(l_ld, r_ld, atol=1e-6, rtol=0)  # slopes agree across each edge
    assert abs(float(l_ld[0])) < 1e-6 and abs(float(r_ld[-1])) < 1e-6  # slope 1 at +-B
    assert torch.equal(y[len(edges)], torch.tensor(-bound, dtype=F64))  # exactly on -B


def test_inputs_on_bin_edges_map_to_the_knots():
    bins, bound = 4, 3.0
    params = _params(1, bins, scale=1.5, dtype=F64)
    xk = _knots(params[..., :bins], 1e-3, bound)
    yk = _knots(params[..., bins : 2 * bins], 1e-3, bound)
    y, _ = _spline(xk[0], params.expand(bins + 1, -1), bins, bound)
    assert torch.allclose(y, yk[0], atol=1e-12, rtol=0)
    x, _ = _spline(yk[0], params.expand(bins + 1, -1), bins, bound, inverse=True)
    assert torch.allclose(x, xk[0], atol=1e-12, rtol=0)


def test_all_tail_batches_are_the_identity_with_finite_gradients():
    # nflows issue 23: a batch with no input inside the interval raised a RuntimeError
    params = _params(4, 8, scale=2.0).detach().requires_grad_()
    x = torch.tensor([-1e30, -5.0, 3.0000002, 1e30])
    for inverse in (False, True):
        y, ld = _spline(x, params, 8, 3.0, inverse=inverse)
        assert torch.equal(y, x) and torch.equal(ld, torch.zeros(4))
        (y.sum() + ld.sum()).backward()
        assert bool(torch.isfinite(params.grad).all())


def test_huge_inputs_have_a_finite_log_prob_in_float32_and_float64():
    for dtype, big in ((torch.float32, 1e15), (F64, 1e150)):  # big**2 is finite in dtype
        flow = pf.NSF(2, num_layers=2, hidden_dims=(8,), bound=3.0).to(dtype)
        perturb(flow)
        x = torch.tensor([[big, -big], [1e6, 0.5], [0.0, 0.0]], dtype=dtype)
        lp = flow.log_prob(x)
        assert lp.dtype == dtype and bool(torch.isfinite(lp).all())


@pytest.mark.parametrize("bins", [4, 8, 16])
def test_float32_round_trip_below_1e5_on_a_dense_grid(bins):
    # raw parameters ~ N(0, 0.5^2): slopes down to ~0.06. (At N(0, 1), slopes reach ~3e-3 and the
    # exact inverse of the float32 y is itself off by ~1e-4: that is conditioning, not the solver.)
    bound, n = 3.0, 20001
    params = _params(1, bins, scale=0.5, seed=bins).expand(n, -1)
    x = torch.linspace(-bound, bound, n)
    y, ld = _spline(x, params, bins, bound)
    x_back, ld_back = _spline(y, params, bins, bound, inverse=True)
    assert float((x_back - x).abs().max()) < 1e-5
    assert float((ld_back - ld).abs().max()) < 1e-3
    y_back, _ = _spline(x_back, params, bins, bound)
    assert float((y_back - y).abs().max()) < 1e-5
    # and a batch of independent perturbed splines
    params = _params(n, bins, scale=0.5, seed=100 + bins)
    x = (torch.rand(n, generator=torch.Generator().manual_seed(1)) * 2 - 1) * bound
    x_back, _ = _spline(_spline(x, params, bins, bound)[0], params, bins, bound, inverse=True)
    assert float((x_back - x).abs().max()) < 1e-5


def test_float32_inverse_is_accurate_next_to_flat_bins():
    # one nearly flat bin (height at its minimum) beside steep ones: the root stays in [0, 1]
    bins, bound, n = 4, 3.0, 4001
    raw = [0.0] * bins + [6.0, -6.0, 6.0, 6.0] + [4.0, -4.0, 0.0]
    params = torch.tensor(raw).expand(n, -1)
    y = torch.linspace(-bound, bound, n)
    x, _ = _spline(y, params, bins, bound, inverse=True)
    y_back, _ = _spline(x, params, bins, bound)
    assert bool(torch.isfinite(x).all()) and bool((x.diff() >= 0).all())
    assert float((y_back - y).abs().max()) < 1e-5


def test_bad_spline_options_raise_value_errors():
    with pytest.raises(ValueError, match="bins must be"):
        T.Coupling(3, transformer="spline", bins=0)
    with pytest.raises(ValueError, match="bound must be"):
        T.MaskedAutoregressive(3, transformer="spline", bound=-1.0)
    with pytest.raises(ValueError, match="transformer must be"):
        T.get_transformer("cubic")
    with pytest.raises(ValueError, match="fast must be"):
        pf.NSF(2, fast="both")
    with pytest.raises(ValueError, match="fast='density'"):
        pf.NSF(1)
    with pytest.raises(ValueError, match="input_dim >= 2"):
        T.Coupling(1, transformer="spline")


def test_transformer_table_binds_each_transformers_own_options():
    n, tau = T.get_transformer("spline", bins=5, bound=2.0, log_scale_bound=1.0)
    assert n == 14 and tau.keywords == {"bins": 5, "bound": 2.0}
    assert T.get_transformer("affine", bins=5, log_scale_bound=1.0)[1].keywords == {"bound": 1.0}
    assert (
        T.Coupling(4, hidden_dims=(8,), transformer="spline", bins=5).conditioner.out_features
        == 14 * 2
    )


@pytest.mark.parametrize("fast", [None, "density"])
@pytest.mark.parametrize("invert", [True, False])
def test_invert_spline_puts_the_spline_on_the_data_side_or_the_base_side(fast, invert):
    torch.manual_seed(0)
    options = dict(hidden_dims=(8,), transformer="spline", bins=4, bound=2.0)
    options["invert_spline"] = invert
    layer = (
        T.Coupling(2, **options)
        if fast is None
        else T.MaskedAutoregressive(2, fast=fast, **options)
    )
    perturb(layer)
    y = 1.5 * torch.randn(64, 2)  # data side
    x = layer.inv(y)  # base side
    # the second coordinate's parameters depend on the first, which neither map changes
    params = layer._params(y[:, :1], None) if fast is None else layer.conditioner(y)[..., 1:]
    s = rational_quadratic_spline
    want = s(y[:, 1], params[:, :, 0], bins=4, bound=2.0, inverse=not invert, dim=-1)[0]
    torch.testing.assert_close(x[:, 1], want)
    # log_prob's log-det: the log-derivative of the data -> base map, by autograd
    ld = -layer.log_abs_det_jacobian(x, y)
    yy = y.clone().requires_grad_(True)
    out = layer.inv(yy)
    rows = [torch.autograd.grad(out[:, i].sum(), yy, retain_graph=True)[0] for i in range(2)]
    jac = torch.stack(rows, dim=1)  # (64, 2, 2), lower-triangular
    torch.testing.assert_close(ld, torch.logdet(jac), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="invert_spline must be True or False"):
        T.Coupling(2, transformer="spline", invert_spline="yes")


@pytest.mark.parametrize("coords", [1, 3, 8, 20])  # below and above the transposed-copy size
@pytest.mark.parametrize("inverse", [False, True])
def test_transformers_take_one_parameter_tensor_on_any_axis(coords, inverse):
    # layers hand the conditioner's output (..., P, D) over as it comes (dim=-2); the result
    # equals the same parameters laid out on the last axis, for every transformer
    g = torch.Generator().manual_seed(coords)
    x = 2 * torch.randn(5, coords, generator=g, dtype=F64)
    for name, options in (("spline", {"bins": 4, "bound": 3.0}), ("affine", {}), ("additive", {})):
        n, tau = T.get_transformer(name, **options)
        p = torch.randn(5, n, coords, generator=g, dtype=F64)
        y, ld = tau(x, p, inverse=inverse, dim=-2)
        y_last, ld_last = tau(x, p.transpose(-1, -2), inverse=inverse)
        assert torch.allclose(y, y_last, atol=1e-12, rtol=0)
        assert (ld is None and ld_last is None) or torch.allclose(ld, ld_last, atol=1e-12, rtol=0)
    # one parameter set broadcast over a batch, and an image-shaped parameter axis (dim=-4)
    p = torch.randn(11, coords, generator=g, dtype=F64)
    y, _ = rational_quadratic_spline(x, p, dim=-2, bins=4, bound=3.0)
    y_each, _ = rational_quadratic_spline(x, p.expand(5, 11, coords), dim=-2, bins=4, bound=3.0)
    assert torch.equal(y, y_each)
    img = torch.randn(2, 11, 1, coords, 2, generator=g, dtype=F64)
    xi = torch.randn(2, 1, coords, 2, generator=g, dtype=F64)
    y, ld = rational_quadratic_spline(xi, img, dim=-4, bins=4, bound=3.0, inverse=inverse)
    y_last, ld_last = rational_quadratic_spline(
        xi, img.movedim(-4, -1), bins=4, bound=3.0, inverse=inverse
    )
    assert torch.allclose(y, y_last, atol=1e-12, rtol=0) and y.shape == xi.shape
    assert torch.allclose(ld, ld_last, atol=1e-12, rtol=0)


@pytest.mark.parametrize("coords", [3, 20])  # below and above the transposed-copy size
@pytest.mark.parametrize("inverse", [False, True])
def test_transformers_without_the_log_derivative_give_the_same_output_and_none(coords, inverse):
    g = torch.Generator().manual_seed(coords)
    x = 4 * torch.randn(64, coords, generator=g, dtype=F64)  # inside and outside [-B, B]
    for name, options in (("spline", {"bins": 4, "bound": 3.0}), ("affine", {}), ("additive", {})):
        n, tau = T.get_transformer(name, **options)
        p = torch.randn(64, n, coords, generator=g, dtype=F64)
        y, ld = tau(x, p, inverse=inverse, dim=-2)
        y_only, none = tau(x, p, inverse=inverse, dim=-2, log_det=False)
        assert torch.equal(y_only, y), name
        assert none is None, name
        assert (ld is None) == (name == "additive"), name  # the default still computes it


def test_spline_parameter_count_and_axis_errors_say_what_to_pass():
    with pytest.raises(ValueError, match=r"expected 11 spline parameters .* got shape \(3, 5\)"):
        rational_quadratic_spline(torch.zeros(3), torch.zeros(3, 5), bins=4)
    with pytest.raises(ValueError, match="dim must be a negative axis"):
        rational_quadratic_spline(torch.zeros(3), torch.zeros(3, 11), bins=4, dim=1)


# ---- layers --------------------------------------------------------------------------------


def test_one_dimensional_conditional_coupling_reads_the_context_only():
    t = T.ConditionalCoupling(
        1, context_dim=2, hidden_dims=(16,), transformer="spline", bins=4, bound=3.0
    )
    perturb(t)
    x = torch.linspace(-2, 2, 7).unsqueeze(-1)
    c1, c2 = torch.zeros(2), torch.ones(2)
    y1, y2 = t.condition(c1)(x), t.condition(c2)(x)
    assert not torch.allclose(y1, y2)  # the context moves the one coordinate
    assert torch.allclose(t.condition(c1).inv(y1), x, atol=1e-5)
    with torch.no_grad():  # and nothing but the context: a zero context net is the identity
        t.conditioner[0].weight.zero_()
        t.conditioner[0].bias.zero_()
        t.conditioner[-1].bias.zero_()
    assert torch.allclose(t.condition(c2)(x), x, atol=1e-6)
    with pytest.raises(ValueError, match="input_dim >= 2"):
        T.Coupling(1)


def test_checkerboard_spline_coupling_keeps_the_seen_pixels_exactly():
    t = T.ImageCoupling(
        (1, 4, 4), hidden_channels=(8,), mask="checkerboard", transformer="spline", bound=2.0
    )
    perturb(t)
    x = torch.randn(5, 1, 4, 4)
    y = t(x)
    seen = t.board.bool()
    assert torch.equal(y[..., seen], x[..., seen]) and not torch.allclose(y, x)


def _outputs_depend_on_context(flow, d):
    x = torch.randn(6, d, dtype=F64)

    jac = torch.autograd.functional.jacobian(
        lambda c: _inverse_all(flow, x, c), torch.randn(6, 2, dtype=F64)
    )
    per_output = jac.abs().sum((2, 3))  # (batch, output coordinate)
    return bool((per_output > 0).all())


def _inverse_all(flow, x, c):
    d = flow(c)
    for t in reversed(d.transforms):
        x = t.inv(x)
    return x


@pytest.mark.parametrize("fast", [None, "density", "sample"])
def test_conditional_nsf_uses_the_context_in_every_output(fast):
    # a coupling layer keeps half of its input, so two layers; one autoregressive layer must
    # reach every output itself (its first variable needs the MADE context fix, defects issue)
    layers = 2 if fast is None else 1
    flow = pf.NSF(3, num_layers=layers, hidden_dims=(8,), context_dim=2, fast=fast).double()
    perturb(flow)
    assert _outputs_depend_on_context(flow, 3)


@pytest.mark.parametrize("d", [3, 4, 5, 8])
def test_nsf_permutations_transform_every_coordinate_in_two_layers(d):
    flow = pf.NSF(d, num_layers=4, hidden_dims=(8,))
    kinds = [type(t).__name__ for t in flow.transforms]
    assert kinds == ["Coupling", "Permute"] * 3 + ["Coupling"]
    keep = d // 2
    for perm in [t.perm for t in flow.transforms if isinstance(t, T.Permute)]:
        # the next layer keeps positions [0, keep): they held coordinates transformed just before
        assert bool((perm[:keep] >= keep).all())
    assert len({tuple(t.perm.tolist()) for t in flow.transforms[1::2]}) > 1 or d == 3


def test_nsf_two_dimensional_layers_alternate_halves():
    flow = pf.NSF(2, num_layers=3)
    assert [type(t).__name__ for t in flow.transforms] == ["Coupling"] * 3
    assert [t.swap for t in flow.transforms] == [False, True, False]
    ar = pf.NSF(2, num_layers=3, fast="sample").transforms
    assert [t.fast for t in ar] == ["sample"] * 3
    assert [t.conditioner.order.tolist() for t in ar] == [[0, 1], [1, 0], [0, 1]]


def test_autoregressive_nsf_takes_seeded_random_orders_each_followed_by_its_reverse():
    # the orders that beat natural/reversed ones on the 64-D digits (docs/benchmarks.md)
    orders = [
        t.conditioner.order.tolist() for t in pf.NSF(5, num_layers=4, fast="density").transforms
    ]
    first, third = (torch.randperm(5, generator=torch.Generator().manual_seed(k)) for k in (0, 2))
    assert orders == [
        first.tolist(),
        first.flip(0).tolist(),
        third.tolist(),
        third.flip(0).tolist(),
    ]
    assert orders[0] != list(range(5)) and orders[0] != orders[2]
    again = [
        t.conditioner.order.tolist() for t in pf.NSF(5, num_layers=4, fast="density").transforms
    ]
    assert again == orders  # fixed, whatever the global seed


def test_save_load_keeps_spline_options(tmp_path):
    flow = pf.NSF(3, num_layers=2, hidden_dims=(8,), bins=5, bound=2.5, fast="sample")
    perturb(flow)
    pf.save(flow, tmp_path / "nsf.pt")
    again = pf.load(tmp_path / "nsf.pt")
    assert again.config["bins"] == 5 and again.transforms[0]._tau.keywords["bound"] == 2.5
    x = torch.randn(4, 3)
    assert torch.allclose(again.log_prob(x), flow.log_prob(x))


# ---- Pyro integration ----------------------------------------------------------------------


def _model():
    z = pyro.sample(
        "z", dist.Normal(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])).to_event(1)
    )
    return z


@pytest.mark.parametrize(
    "helper",
    [
        T.spline_coupling,
        T.spline_autoregressive,
        functools.partial(T.spline_autoregressive, fast="sample"),
    ],
)
def test_pyro_helpers_work_with_iterated_and_auto_normalizing_flow(helper):
    guide = AutoNormalizingFlow(_model, functools.partial(iterated, 2, helper, hidden_dims=(8,)))
    svi = SVI(_model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step() for _ in range(5)]
    assert all(math.isfinite(v) for v in losses)
    names = [n for n in pyro.get_param_store() if "conditioner" in n]
    assert names  # the spline layers' networks are trained


def test_conditional_helpers():
    t = T.conditional_spline_coupling(3, 2, bins=4)
    a = T.conditional_spline_autoregressive(3, 2, fast="sample")
    c = torch.randn(5, 2)
    for layer in (t, a):
        x = torch.randn(5, 3)
        assert torch.allclose(layer.condition(c).inv(layer.condition(c)(x)), x, atol=1e-5)


def test_autoflow_with_nsf_trains_a_guide():
    guide = pf.AutoFlow(_model, pf.NSF, num_layers=2, hidden_dims=(16,), bound=6.0)
    svi = SVI(_model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO(num_particles=8,
              vectorize_particles=True))  # fmt: skip
    first = sum(svi.step() for _ in range(10)) / 10
    for _ in range(80):
        svi.step()
    last = sum(svi.step() for _ in range(10)) / 10
    # the loss falls towards -log Z = 0 (an exact guide; the model is normalised)
    assert last < 0.5 * first, (first, last)


# ---- behaviour (slow) ----------------------------------------------------------------------


@pytest.mark.slow
def test_nsf_on_two_moons_reaches_test_nll_within_003_of_the_entropy():
    from pyroflows.datasets import toy
    from pyroflows.datasets.toy import OPTIMAL_NLL

    train, test = toy.two_moons(10_000, seed=0), toy.two_moons(20_000, seed=1)
    torch.manual_seed(0)
    flow = pf.NSF(2)
    pf.fit(flow, train, steps=3000, batch_size=512, lr=1e-3, lr_schedule="cosine", seed=0,
           progress=False)  # fmt: skip
    flow.eval()
    with torch.no_grad():
        nll = float(-flow.log_prob(test).mean())
    print(f"NSF two moons test NLL {nll:.4f} (optimum {OPTIMAL_NLL['moons']:.4f})")
    assert OPTIMAL_NLL["moons"] - 0.02 < nll < OPTIMAL_NLL["moons"] + 0.03, nll


def _sine_data(n: int, seed: int):
    """x ~ U(-3, 3), y | x ~ N(sin x, s(x)^2) with s(x) = 0.05 + 0.1 |x|; exact log p(y | x)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 6 - 3
    s = 0.05 + 0.1 * x.abs()
    y = torch.sin(x) + s * torch.randn(n, 1, generator=g)
    lp = dist.Normal(torch.sin(x), s).log_prob(y).squeeze(-1)
    return x, y, lp


@pytest.mark.slow
@pytest.mark.parametrize("fast", [None, "density"])
def test_conditional_nsf_fits_a_1d_conditional_density_within_005_nats(fast):
    x, y, _ = _sine_data(10_000, seed=0)
    xt, yt, lp = _sine_data(20_000, seed=1)
    torch.manual_seed(0)
    flow = pf.NSF(1, num_layers=3, hidden_dims=(64, 64), context_dim=1, fast=fast)
    pf.fit(flow, y, context=x, steps=2000, batch_size=512, lr=1e-3, lr_schedule="cosine",
           seed=0, progress=False)  # fmt: skip
    flow.eval()
    with torch.no_grad():
        nll = float(-flow.log_prob(yt, xt).mean())
    best = float(-lp.mean())
    print(f"NSF(fast={fast}) 1-D conditional test NLL {nll:.4f} (true {best:.4f})")
    assert abs(nll - best) < 0.05, (nll, best)
