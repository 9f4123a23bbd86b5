"""Generic property tests driven by the registry (tests/registry.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import context_for, default_dtype, perturb
from registry import REGISTRY

import pyroflows as pf
from pyroflows.diagnostics.checks import _forward, roundtrip_errors, steps_of

IDS = sorted(REGISTRY)
FLOW_IDS = [k for k in IDS if REGISTRY[k].is_flow]
TRANSFORM_IDS = [k for k in IDS if not REGISTRY[k].is_flow]
CONDITIONAL_IDS = [k for k in IDS if REGISTRY[k].context_dim]


def _x(entry, batch=(4,), dtype=torch.float64):
    return torch.randn(*batch, *entry.shape, dtype=dtype)


@pytest.mark.parametrize("key", IDS)
def test_logdet_matches_autograd_jacobian_both_directions(key, make):
    entry = REGISTRY[key]
    obj = make(entry, torch.float64)
    ctx = context_for(entry, (4,), torch.float64)
    report = pf.check_flow(obj, _x(entry), context=ctx, tolerance=entry.tol)
    assert report.logdet_error < entry.tol, str(report)
    assert report.inverse_logdet_error < entry.tol, str(report)


@pytest.mark.parametrize("key", IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roundtrip_without_cache(key, dtype, make):
    entry = REGISTRY[key]
    obj = make(entry, dtype)
    ctx = context_for(entry, (4,), dtype)
    steps = steps_of(obj, ctx)
    x = _x(entry, dtype=dtype)
    fwd, inv = roundtrip_errors(steps, x)
    if dtype == torch.float64:
        tol = entry.tol
    else:  # float32: relative to the largest intermediate value (perturbed deep flows reach ~1e2)
        with torch.no_grad():
            scale = max(float(_forward(steps, x)[0].abs().max()), 1.0)
        tol = 1e-5 * scale + 1e-4
    assert fwd < tol and inv < tol


@pytest.mark.parametrize("key", TRANSFORM_IDS)
def test_roundtrip_with_cache_returns_cached_tensor(key, make):
    entry = REGISTRY[key]
    t = make(entry)
    ctx = context_for(entry, (4,))
    tt = t.condition(ctx) if entry.context_dim else t
    x = _x(entry, dtype=torch.float32)
    y = tt(x)
    assert tt.inv(y) is x
    ld = tt.log_abs_det_jacobian(x, y)
    assert ld.shape == (4,)
    # the slot is consumed once read: a second read recomputes and agrees
    torch.testing.assert_close(tt.log_abs_det_jacobian(x, y), ld)


@pytest.mark.parametrize("key", [k for k in TRANSFORM_IDS if REGISTRY[k].autoregressive])
def test_autoregressive_jacobian_is_triangular_in_its_order(key, make):
    entry = REGISTRY[key]
    t = make(entry, torch.float64)
    ctx = context_for(entry, (1,), torch.float64)
    x = _x(entry, (1,))
    jac = torch.autograd.functional.jacobian(lambda v: t.forward_and_log_det(v, ctx)[0], x)[0, :, 0]
    order = t.conditioner.order
    permuted = jac[order][:, order]
    assert torch.allclose(permuted.triu(1), torch.zeros_like(permuted), atol=1e-12)
    assert (permuted.diagonal().abs() > 0).all()


@pytest.mark.parametrize("key", TRANSFORM_IDS)
@pytest.mark.parametrize("batch", [(), (3,), (3, 4)])
def test_transform_batch_shapes(key, batch, make):
    entry = REGISTRY[key]
    t = make(entry)
    ctx = context_for(entry, batch)
    x = _x(entry, batch, torch.float32)
    y, ld = t.forward_and_log_det(x, ctx)
    x2, ld2 = t.inverse_and_log_det(y, ctx)
    assert y.shape == t.forward_shape(x.shape) and x2.shape == x.shape  # Squeeze changes shape
    assert ld.shape == batch and ld2.shape == batch


@pytest.mark.parametrize("key", FLOW_IDS)
@pytest.mark.parametrize("batch", [(), (3,), (3, 4)])
def test_flow_sample_and_log_prob_shapes(key, batch, make):
    entry = REGISTRY[key]
    flow = make(entry)
    ctx = context_for(entry, batch)
    d = flow(ctx)
    assert d.batch_shape == (batch if entry.context_dim else ())
    n = (5,)
    expect = n + (batch if entry.context_dim else ()) + entry.shape
    s = d.sample(n)
    assert s.shape == expect
    assert d.rsample(n).shape == expect
    x, lp = d.rsample_and_log_prob(n)
    assert x.shape == expect and lp.shape == expect[: -len(entry.shape)]
    torch.testing.assert_close(d.log_prob(x), lp, atol=1e-4, rtol=1e-4)
    data = torch.randn(*batch, *entry.shape)
    assert flow.log_prob(data, ctx).shape == batch
    assert torch.isfinite(flow.log_prob(data, ctx)).all()


@pytest.mark.parametrize("key", IDS)
def test_gradients_reach_every_parameter(key, make):
    entry = REGISTRY[key]
    obj = make(entry)
    if not list(obj.parameters()):
        pytest.skip("no parameters")
    ctx = context_for(entry, (16,))
    x = _x(entry, (16,), torch.float32)
    if entry.is_flow:
        loss = -obj.log_prob(x, ctx).mean() - obj.rsample_and_log_prob((), ctx)[1].mean()
    else:
        y, ld = obj.forward_and_log_det(x, ctx)
        x2, ld2 = obj.inverse_and_log_det(x, ctx)
        loss = (y**2).sum() + ld.sum() + (x2**2).sum() + ld2.sum()
    loss.backward()
    for name, p in obj.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient at {name}"


@pytest.mark.parametrize("key", [k for k in IDS if REGISTRY[k].context_dim])
def test_context_broadcasts(key, make):
    entry = REGISTRY[key]
    obj = make(entry)
    x = torch.randn(5, 4, *entry.shape)
    one = torch.randn(entry.context_dim)
    per_row = torch.randn(4, entry.context_dim)
    if entry.is_flow:
        assert obj.log_prob(x, one).shape == (5, 4)
        assert obj.log_prob(x, per_row).shape == (5, 4)
        lp_rows = obj.log_prob(x, per_row.expand(5, 4, -1))
        torch.testing.assert_close(obj.log_prob(x, per_row), lp_rows)
    else:
        for c in (one, per_row):
            y, ld = obj.forward_and_log_det(x, c)
            assert y.shape == x.shape and ld.shape == (5, 4)


@pytest.mark.parametrize("key", FLOW_IDS)
def test_save_load_roundtrip(key, make, tmp_path):
    entry = REGISTRY[key]
    flow = make(entry)
    ctx = context_for(entry, (6,))
    x = torch.randn(6, *entry.shape)
    path = tmp_path / "flow.pt"
    pf.save(flow, path, note=key)
    again = pf.load(path)
    assert type(again) is type(flow) and again.metadata == {"note": key}
    torch.testing.assert_close(again.log_prob(x, ctx), flow.log_prob(x, ctx))


@pytest.mark.parametrize("key", FLOW_IDS)
def test_float64_module_under_float32_default_and_reverse(key, make):
    entry = REGISTRY[key]
    flow = make(entry, torch.float64)
    ctx = context_for(entry, (4,), torch.float64)
    lp = flow.log_prob(torch.randn(4, *entry.shape, dtype=torch.float64), ctx)
    assert lp.dtype == torch.float64
    assert flow.sample((2,), ctx).dtype == torch.float64
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        flow32 = entry.factory().float()
        perturb(flow32)
        ctx32 = context_for(entry, (4,), torch.float32)
        assert (
            flow32.log_prob(torch.randn(4, *entry.shape, dtype=torch.float32), ctx32).dtype
            == torch.float32
        )
        assert flow32.sample((2,), ctx32).dtype == torch.float32
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("key", FLOW_IDS)
def test_log_prob_on_same_tensor_in_consecutive_steps(key, make):
    """Pyro's own flows raise 'backward through the graph a second time' here."""
    entry = REGISTRY[key]
    flow = make(entry)
    ctx = context_for(entry, (32,))
    data = torch.randn(32, *entry.shape)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = -flow.log_prob(data, ctx).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(v == v for v in losses) and losses[0] != losses[-1]
    # sampled values scored twice, with a backward in between, also work
    y = flow.sample((), ctx)
    flow.log_prob(y, ctx).sum().backward()
    flow.log_prob(y, ctx).sum().backward()


# ---- conditional entries: the context reaches every output (issue 10 item 1) ------------------
# The conditioner networks of pyroflows transforms, by attribute name. Each takes the context as
# its last positional argument (Planar's hypernetwork takes nothing else).
CONDITIONER_NAMES = ("conditioner", "hypernet", "vector_field")


def _conditioner_calls(obj, run) -> dict:
    """``name -> (module, args)`` of the first call of every conditioner inside ``obj`` during
    ``run()``, for those that take a context."""
    calls, handles = {}, []
    for name, module in obj.named_modules():
        if name.rsplit(".", 1)[-1] not in CONDITIONER_NAMES:
            continue
        takes_context = name.endswith("hypernet") or getattr(module, "context_dim", 0) > 0

        def hook(mod, args, name=name, takes_context=takes_context):
            if takes_context and name not in calls:
                calls[name] = (mod, tuple(a.detach() if torch.is_tensor(a) else a for a in args))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return calls


def _run_density(entry, obj, x, ctx):
    if entry.is_flow:
        return obj.log_prob(x, ctx)
    z, ld = obj.inverse_and_log_det(x, ctx)  # data -> base, forward log-det at z
    n = len(entry.shape)
    return -0.5 * z.pow(2).flatten(z.dim() - n).sum(-1) - ld


@pytest.mark.parametrize("key", CONDITIONAL_IDS)
def test_every_conditioner_output_depends_on_the_context(key, make):
    """No output of a conditional conditioner is a constant of the context (MADE's first
    variable was, so a 1-D conditional MAF ignored its context)."""
    entry = REGISTRY[key]
    obj = make(entry, torch.float64)
    x, ctx = _x(entry, (8,)), context_for(entry, (8,), torch.float64)
    calls = _conditioner_calls(obj, lambda: _run_density(entry, obj, x, ctx))
    assert calls, "no conditioner saw the context"
    for name, (module, args) in calls.items():
        c = args[-1]
        jac = torch.autograd.functional.jacobian(lambda v, m=module, a=args: m(*a[:-1], v), c)
        rows = c.shape[0]
        jac = jac.reshape(rows, -1, rows, c.shape[-1])  # (row, output, row', context)
        own = jac[torch.arange(rows), :, torch.arange(rows)]  # each row's own context
        dead = (own.abs().amax(dim=(0, 2)) == 0).nonzero().flatten().tolist()
        assert not dead, f"{name}: outputs {dead} do not depend on the context"


@pytest.mark.parametrize("key", CONDITIONAL_IDS)
def test_log_prob_depends_on_the_context_of_each_row(key, make):
    entry = REGISTRY[key]
    obj = make(entry, torch.float64)
    x = _x(entry, (4,))
    ctx = context_for(entry, (4,), torch.float64).requires_grad_()
    lp = _run_density(entry, obj, x, ctx)
    (grad,) = torch.autograd.grad(lp.sum(), ctx, allow_unused=True)
    assert grad is not None, "log_prob ignores the context"
    assert (grad.abs().sum(-1) > 0).all(), grad


# ---- dtype and batch edge cases ----------------------------------------------------------------
@pytest.mark.parametrize("key", IDS)
def test_built_under_a_float64_default_everything_is_float64(key):
    """Parameters and buffers follow the default dtype (LULinear used to build float32)."""
    entry = REGISTRY[key]
    with default_dtype(torch.float64):
        obj = entry.factory()
        perturb(obj)
        tensors = [*obj.named_parameters(), *obj.named_buffers()]
        wrong = [n for n, t in tensors if t.is_floating_point() and t.dtype != torch.float64]
        assert not wrong, f"not float64: {wrong}"
        ctx = context_for(entry, (4,))
        x = _x(entry)
        if entry.is_flow:
            lp = obj.log_prob(x, ctx)
            assert lp.dtype == torch.float64 and torch.isfinite(lp).all()
            assert obj.sample((2,), ctx).dtype == torch.float64
        else:
            t = obj.condition(ctx) if entry.context_dim else obj
            y = t(x)
            assert y.dtype == torch.float64
            assert t.log_abs_det_jacobian(x, y).dtype == torch.float64


@pytest.mark.parametrize("key", FLOW_IDS)
def test_empty_batch(key):
    """A batch of no rows scores to an empty result and does not touch the flow's state."""
    entry = REGISTRY[key]
    flow = entry.factory()  # fresh: ActNorm must not initialise itself from zero rows
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    empty = torch.randn(0, *entry.shape)
    assert flow.log_prob(empty, context_for(entry, (0,))).shape == (0,)
    if entry.context_dim:
        assert flow.log_prob(empty, context_for(entry)).shape == (0,)
    for k, v in flow.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    x, lp = flow.rsample_and_log_prob((0,), context_for(entry))
    assert x.shape == (0, *entry.shape) and lp.shape == (0,)
