"""The training loop shared by pf.fit and pf.fit_svi (pyroflows.infer.engine), exercised through
pf.fit: rollback on divergence, validation and early stopping, callbacks, checkpoints with exact
resume, optimisers and schedules, the progress bar."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from test_fit import all_finite, gaussian, linear_flow, same_state, state

import pyroflows as pf
from pyroflows.transforms import ElementwiseAffine, NonFiniteError

# ---- rollback and divergence ----------------------------------------------------------------------


def failing(bad_calls, kind="nan"):
    """NLL objective that fails on the given (0-based) training calls."""
    calls = {"n": 0}

    def objective(flow, x, c):
        loss = -flow.log_prob(x).mean()
        if not torch.is_grad_enabled():  # validation
            return loss
        k, calls["n"] = calls["n"], calls["n"] + 1
        if k in bad_calls:
            if kind == "nan":
                return loss * float("nan")
            if kind == "grad":  # finite value, NaN gradient (the classic where-sqrt trap)
                p = flow.transforms[1].log_scale
                return loss + torch.where(p > -1e9, 0.0, torch.sqrt(-p - 1e9)).sum()
            if kind == "overflow":  # finite gradients (1e30) whose squared norm overflows
                return loss + (flow.transforms[1].log_scale * 1e30).sum()
            raise NonFiniteError("LULinear (inverse): produced NaN or Inf from a finite input.")
        return loss

    return objective


@pytest.mark.parametrize("kind", ["nan", "grad", "raise"])
def test_a_failed_step_is_rolled_back_and_training_continues(kind):
    flow = linear_flow()
    with pytest.warns(RuntimeWarning, match="rolled back") as rec:
        h = pf.fit(
            flow, gaussian(500, 0), steps=40, lr=0.05, objective=failing({10}, kind), progress=False
        )
    assert h.rollbacks == 1 and h.rollback_steps == [10] and not h.diverged
    assert h.final_lr == pytest.approx(0.025)
    assert math.isnan(h.train_loss[10]) and math.isfinite(h.train_loss[-1])
    assert all_finite(flow)
    if kind == "grad":
        assert any("transforms.1.log_scale" in str(w.message) for w in rec)


def test_an_overflowing_gradient_norm_is_named_not_an_empty_list():
    with pytest.warns(RuntimeWarning, match="rolled back") as rec:
        h = pf.fit(linear_flow(), gaussian(500, 0), steps=30, lr=0.05,
                   objective=failing({10}, "overflow"), progress=False)  # fmt: skip
    assert h.rollbacks == 1 and not h.diverged
    text = " ".join(str(w.message) for w in rec)
    assert "the gradient norm overflowed (inf) though every gradient is finite" in text
    assert "transforms.1.log_scale (max |grad| 1e+30)" in text
    assert "the gradients of  are" not in text


def test_rollbacks_that_do_not_recover_are_reported_as_divergence():
    # sgd at lr=10 on two moons: every other step fails and the steps in between blow the
    # weights up to finite but huge values; five rollbacks in a row never happen
    x = pf.datasets.two_moons(300, seed=0)
    torch.manual_seed(0)
    flow = pf.MAF(2, num_layers=2, hidden_dims=(16,))
    with pytest.warns(RuntimeWarning) as rec:
        h = pf.fit(flow, x, steps=60, lr=10.0, optimizer="sgd", seed=0, progress=False)
    assert h.diverged and h.steps < 60 and h.rollbacks == 5
    assert h.message.startswith("training diverged: 5 steps failed without 10 good steps")
    assert "Returned the best-validation weights" in h.message
    assert str(rec[-1].message) == h.message
    with torch.no_grad():
        assert torch.isfinite(flow.log_prob(x)).all()


def test_sporadic_failures_that_recover_do_not_stop_the_run():
    with pytest.warns(RuntimeWarning, match="rolled back"):
        h = pf.fit(linear_flow(), gaussian(500, 0), steps=80, lr=0.05, val_fraction=0.0,
                   objective=failing({5, 17, 29, 41, 53, 65}), progress=False)  # fmt: skip
    assert h.rollbacks == 6 and not h.diverged and h.steps == 80 and h.message == ""


def test_final_weights_that_fail_on_training_data_are_replaced_and_reported():
    # the last step's learning rate is 1e12 times larger: its loss and gradients were fine,
    # but the update leaves finite weights whose NLL overflows
    steps = 20
    explode = lambda opt: torch.optim.lr_scheduler.LambdaLR(  # noqa: E731
        opt, lambda k: 1e12 if k == steps - 1 else 1.0
    )
    snaps = {}
    flow, x = linear_flow(), gaussian(300, 0)
    with pytest.warns(RuntimeWarning, match="were unusable") as rec:
        h = pf.fit(flow, x, steps=steps, lr=0.05, lr_schedule=explode, val_fraction=0.0,
                   callbacks=lambda k, hist, f: snaps.__setitem__(k, state(f)),
                   progress=False)  # fmt: skip
    assert h.diverged and h.rollbacks == 0
    assert h.message.startswith("At the end the final weights were unusable (the loss on a")
    assert h.message.endswith("returned the last good weights (those of the last step that "
                              "passed its checks).")  # fmt: skip
    # the bad weights were finite: only the final check saw that they were unusable
    assert all(v.isfinite().all() for v in snaps[steps - 1].values())
    assert same_state(state(flow), snaps[steps - 2])  # the weights the last step started from
    with torch.no_grad():
        assert torch.isfinite(flow.log_prob(x)).all()
    assert str(rec[-1].message) == h.message


def test_rollback_restores_weights_and_optimiser_state_exactly():
    from pyroflows.infer.state import Snapshot

    w = torch.nn.Parameter(torch.randn(3))
    opt, snap = torch.optim.Adam([w], lr=0.1), Snapshot()
    for _ in range(4):  # the first saves allocate; later ones reuse the buffers
        (w**2).sum().backward()
        snap.save({"w": w}, opt)
        before = w.detach().clone(), {k: v.clone() for k, v in opt.state[w].items()}
        opt.step()
        opt.zero_grad()
    snap.restore({"w": w}, opt)
    assert torch.equal(w.detach(), before[0])
    assert before[1].keys() == opt.state[w].keys()
    assert all(torch.equal(opt.state[w][k], v) for k, v in before[1].items())


def test_repeated_failures_stop_with_the_last_good_weights():
    flow = linear_flow()
    snaps = {}
    cb = lambda step, h, f: snaps.__setitem__(step, state(f))  # noqa: E731
    with pytest.warns(RuntimeWarning) as rec:
        h = pf.fit(
            flow,
            gaussian(500, 0),
            steps=100,
            lr=0.05,
            val_fraction=0.0,
            objective=failing(set(range(20, 100))),
            callbacks=[cb],
            progress=False,
        )
    assert h.diverged and h.rollbacks == 5 and h.steps == 25
    assert "diverged" in str(rec[-1].message)
    assert "the loss is nan" in h.message and "Returned the last good weights" in h.message
    assert all_finite(flow)
    # step 19 was the last good update; its starting point (the state after step 18) was the
    # last state whose loss and gradients were checked, so that is where the weights are now
    assert same_state(state(flow), snaps[18])


def test_a_huge_learning_rate_never_leaves_nan_weights():
    flow = pf.RealNVP(2, num_layers=2, hidden_dims=(16,))
    x = gaussian(400, 0) * 1e3
    with pytest.warns(RuntimeWarning):
        h = pf.fit(flow, x, steps=60, lr=1e4, optimizer="sgd", seed=0, progress=False)
    assert h.rollbacks >= 1
    assert all_finite(flow)


# ---- validation, early stopping, callbacks ---------------------------------------------------------


def test_best_validation_weights_are_restored():
    checks = {"n": 0}
    scores = [5.0, 4.0, 3.0, 3.5, 4.5, 6.0, 7.0, 8.0]

    def objective(flow, x, c):
        if torch.is_grad_enabled():
            return -flow.log_prob(x).mean()
        checks["n"] += 1
        return torch.tensor(scores[checks["n"] - 1])

    snaps = {}
    flow = linear_flow()
    h = pf.fit(
        flow,
        gaussian(300, 0),
        steps=50,
        eval_every=1,
        patience=3,
        objective=objective,
        callbacks=lambda step, hist, f: snaps.__setitem__(step, state(f)),
        progress=False,
    )
    assert h.val_loss == scores[:6] and h.val_steps == list(range(6))
    assert h.best_step == 2 and h.best_val_loss == 3.0
    assert h.stopped_early and h.steps == 6
    assert same_state(state(flow), snaps[2])  # the weights validated at the best check
    assert not same_state(snaps[5], snaps[2])  # ... although training moved on


def test_a_callback_returning_true_stops_the_run():
    h = pf.fit(linear_flow(), gaussian(200, 0), steps=50, callbacks=lambda k, h, f: k == 4,
               progress=False)  # fmt: skip
    assert h.steps == 5 and h.stopped_early and "callback" in h.message


# ---- checkpoints ----------------------------------------------------------------------------------

OPTS = dict(steps=60, lr=1e-2, batch_size=64, seed=5, lr_schedule="cosine", eval_every=7,
            checkpoint_every=20, progress=False)  # fmt: skip


def glow(seed: int) -> pf.Flow:
    torch.manual_seed(seed)
    return pf.Glow(2, num_layers=2, hidden_dims=(8,))  # ActNorm buffers, LU, couplings


class Interruptible:
    """The NLL objective; raises KeyboardInterrupt on training call ``at`` when armed."""

    def __init__(self, at: int | None = None) -> None:
        self.at, self.calls = at, 0

    def __call__(self, flow, x, c):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
        return -flow.log_prob(x).mean()


@pytest.mark.parametrize("where, saved_at", [("callback", 31), ("mid-step", 20)])
def test_resume_after_an_interrupt_is_bit_identical(tmp_path, where, saved_at):
    x = gaussian(500, 0)
    ref = glow(0)
    h_ref = pf.fit(ref, x, checkpoint=tmp_path / "ref.pt", objective=Interruptible(), **OPTS)

    def interrupt(step, history, flow):
        if step == 30:
            raise KeyboardInterrupt

    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        if where == "callback":  # between steps: the state is saved right there
            pf.fit(
                glow(0), x, checkpoint=path, callbacks=interrupt, objective=Interruptible(), **OPTS
            )
        else:  # inside a step: the last periodic checkpoint stands
            pf.fit(glow(0), x, checkpoint=path, objective=Interruptible(at=35), **OPTS)
    assert torch.load(path, weights_only=True)["step"] == saved_at
    fresh = glow(1)  # other initial weights, other global RNG state: the checkpoint restores all
    h = pf.fit(fresh, x, checkpoint=path, resume=True, objective=Interruptible(), **OPTS)
    assert same_state(state(fresh), state(ref))
    assert h.train_loss == h_ref.train_loss and h.val_loss == h_ref.val_loss
    assert (h.best_step, h.final_lr) == (h_ref.best_step, h_ref.final_lr)
    # resuming a finished run changes nothing
    done = glow(2)
    again = pf.fit(done, x, checkpoint=tmp_path / "ref.pt", resume=True, **OPTS)
    assert again.train_loss == h_ref.train_loss and same_state(state(done), state(ref))


def test_seeded_runs_repeat_and_resume_checks_its_settings(tmp_path):
    x = gaussian(300, 0)
    a, b = glow(0), glow(0)
    pf.fit(a, x, steps=15, seed=3, progress=False)
    pf.fit(b, x, steps=15, seed=3, progress=False)
    assert same_state(state(a), state(b))
    pf.fit(glow(0), x, checkpoint=tmp_path / "c.pt", **OPTS)
    with pytest.raises(ValueError, match="batch_size"):
        pf.fit(glow(0), x, checkpoint=tmp_path / "c.pt", resume=True, **{**OPTS, "batch_size": 32})
    with pytest.raises(ValueError, match="data: checkpoint sha256:"):
        pf.fit(glow(0), x + 1, checkpoint=tmp_path / "c.pt", resume=True, **OPTS)
    with pytest.raises(ValueError, match="not a pyroflows checkpoint"):
        (tmp_path / "junk.pt").write_text("junk")
        pf.fit(glow(0), x, checkpoint=tmp_path / "junk.pt", resume=True, **OPTS)
    torch.save({"format": "pyroflows-checkpoint-1"}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"written by an older pyroflows .* resume=False"):
        pf.fit(glow(0), x, checkpoint=tmp_path / "old.pt", resume=True, **OPTS)


RESUME = dict(steps=20, lr=1e-2, batch_size=50, seed=5, checkpoint_every=10, progress=False)


def maf(hidden: int = 16, cls=pf.MAF) -> pf.Flow:
    torch.manual_seed(1)
    return cls(2, num_layers=2, hidden_dims=(hidden,))


@pytest.mark.parametrize(
    "change, match",
    [
        ({"flow": lambda: maf(cls=pf.IAF)}, r"\(flow class: checkpoint MAF, now IAF\)"),
        ({"flow": lambda: maf(32)}, r"\(flow hidden_dims: checkpoint \[16\], now \[32\]\)"),
        ({"flow": lambda: pf.Flow([ElementwiseAffine(2)], event_shape=(2,))}, "flow class"),
        ({"data": lambda x: x.flip(0)}, r"\(data: checkpoint sha256:\w+\.\.\., now sha256:"),
        ({"data": lambda x: x[torch.randperm(len(x))]}, "the same rows in the same order"),
        ({"optimizer": "sgd"}, r"\(optimizer: checkpoint Adam, now SGD\)"),
        ({"lr": 0.1}, r"\(lr: checkpoint 0.01, now 0.1\); a resumed run continues"),
        ({"lr_schedule": "cosine"}, r"\(lr_schedule: checkpoint None, now cosine\)"),
        ({"warmup": 5}, r"\(warmup: checkpoint 0, now 5\)"),
        ({"seed": 6}, r"its run used seed=5, this one seed=6"),
    ],
)
def test_resume_refuses_another_model_data_or_optimiser_before_touching_weights(
    tmp_path, change, match
):
    x, path = pf.datasets.two_moons(400, seed=0), tmp_path / "run.ckpt"
    pf.fit(maf(), x, checkpoint=path, **RESUME)
    saved = path.read_bytes()
    change = dict(change)
    flow = change.pop("flow", maf)()
    data = change.pop("data", lambda v: v)(x)
    before = state(flow)
    with pytest.raises(ValueError, match=match) as err:
        pf.fit(flow, data, checkpoint=path, resume=True, **{**RESUME, "steps": 40, **change})
    assert str(err.value).startswith("cannot resume from")
    assert same_state(state(flow), before)  # refused before any weight was overwritten
    assert path.read_bytes() == saved


def test_resume_refuses_tensors_that_do_not_fit(tmp_path):
    path = tmp_path / "run.ckpt"
    pf.fit(pf.Flow([ElementwiseAffine(2)], event_shape=(2,)), gaussian(200, 0), checkpoint=path,
           **RESUME)  # fmt: skip
    other = linear_flow()  # also built from a list of transforms (no configuration to compare)
    before = state(other)
    with pytest.raises(ValueError, match=r"its tensors do not fit this model \(transforms\.0\."):
        pf.fit(other, gaussian(200, 0), checkpoint=path, resume=True, **RESUME)
    assert same_state(state(other), before)


def test_resume_with_the_same_settings_and_more_steps_continues(tmp_path):
    x, path = pf.datasets.two_moons(400, seed=0), tmp_path / "run.ckpt"
    ref = maf()
    h_ref = pf.fit(ref, x, **{**RESUME, "steps": 30, "eval_every": 5})
    pf.fit(maf(), x, checkpoint=path, eval_every=5, **RESUME)
    resumed = maf()  # float64 numpy rows equal to the float32 ones, and seed=None: accepted
    h = pf.fit(resumed, x.numpy().astype("float64"), checkpoint=path, resume=True,
               **{**RESUME, "steps": 30, "seed": None, "eval_every": 5})  # fmt: skip
    assert h.train_loss == h_ref.train_loss and same_state(state(resumed), state(ref))


def test_a_failed_checkpoint_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path, x = tmp_path / "run.ckpt", gaussian(200, 0)
    pf.fit(linear_flow(), x, checkpoint=path, **RESUME)
    saved = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        pf.fit(linear_flow(), x, checkpoint=path, **RESUME)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]
    assert path.read_bytes() == saved


@pytest.mark.parametrize(
    "optimizer",
    ["sgd", "adamw", torch.optim.RMSprop, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)],
)
def test_optimizers_and_the_cosine_schedule(optimizer):
    h = pf.fit(linear_flow(), gaussian(300, 0), steps=20, lr=0.01, optimizer=optimizer,
               lr_schedule="cosine", progress=False)  # fmt: skip
    assert h.lr[0] == pytest.approx(0.01) and h.final_lr == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(h.lr, h.lr[1:], strict=False))


# ---- progress bar, last-step repair --------------------------------------------------------------


def test_a_corrupted_parameter_is_rolled_back_even_at_the_last_step():
    flow = linear_flow()

    def corrupt(step, history, f):
        if step in (10, 29):  # 29 is the last step: fit must not return NaN weights either
            with torch.no_grad():
                f.transforms[1].log_scale.fill_(float("nan"))

    with pytest.warns(RuntimeWarning) as rec:
        h = pf.fit(flow, gaussian(300, 0), steps=30, val_fraction=0.0, callbacks=corrupt,
                   progress=False)  # fmt: skip
    assert "rolled back" in str(rec[0].message) and str(rec[-1].message) == h.message
    assert h.rollbacks == 1 and h.rollback_steps == [11] and all_finite(flow)
    assert h.diverged  # the end state was repaired, and the message says so
    assert h.message.startswith("At the end the final weights were unusable (some weights are")
    assert "returned the last good weights" in h.message


def test_progress_bar_only_on_a_terminal(capsys, monkeypatch):
    import sys

    pf.fit(linear_flow(), gaussian(100, 0), steps=3, progress=True)
    assert capsys.readouterr().err == ""  # stderr is captured here, not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    pf.fit(linear_flow(), gaussian(100, 0), steps=3, progress=True)
    assert "loss=" in capsys.readouterr().err
    pf.fit(linear_flow(), gaussian(100, 0), steps=3, progress=False)
    assert capsys.readouterr().err == ""


# ---- the loop's options, declared once (LoopConfig) and shared by fit and fit_svi ---------------


def svi_model(x):
    import pyro
    import pyro.distributions as dist

    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def fit_svi(**options):
    import pyro
    from pyro.infer.autoguide import AutoNormal

    pyro.clear_param_store()
    opts = {"steps": 3, "progress": False, "final_check": False, **options}
    return pf.fit_svi(svi_model, AutoNormal(svi_model), torch.ones(4), **opts)


def test_the_signatures_keep_only_their_own_options_and_the_docs_name_every_loop_option():
    import inspect

    from pyroflows.infer.config import LOOP_OPTIONS

    fit_own = set(inspect.signature(pf.fit).parameters) - {"flow", "data", "options"}
    svi_own = set(inspect.signature(pf.fit_svi).parameters) - {"model", "guide", "args", "kwargs"}
    assert not fit_own & set(LOOP_OPTIONS) and not svi_own & set(LOOP_OPTIONS)
    for name in LOOP_OPTIONS:
        assert f"``{name}``" in pf.fit.__doc__ and f"``{name}``" in pf.fit_svi.__doc__, name
        assert f"        {name}: " in pf.infer.LoopConfig.__doc__, name


@pytest.mark.parametrize("caller", ["fit", "fit_svi"])
def test_a_misspelt_option_is_refused_with_the_closest_name(caller):
    with pytest.raises(
        TypeError, match=r"argument 'stpes' \(did you mean 'steps'\?\); valid: .*lr"
    ):
        if caller == "fit":
            pf.fit(linear_flow(), gaussian(50, 0), stpes=5, progress=False)
        else:
            fit_svi(stpes=5)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'val_frac' \(did you mean"):
        pf.fit(linear_flow(), gaussian(50, 0), val_frac=0.2, progress=False)


def test_fit_svi_passes_other_keywords_to_the_model():
    import pyro
    from pyro.infer.autoguide import AutoNormal

    seen = []

    def model(x, shift=0.0):
        seen.append(shift)
        svi_model(x + shift)

    pyro.clear_param_store()
    pf.fit_svi(model, AutoNormal(model), torch.ones(4), shift=2.0, steps=2, progress=False,
               final_check=False)  # fmt: skip
    assert seen and set(seen) == {2.0}


@pytest.mark.parametrize(
    "options, match",
    [
        # whole numbers are checked by LoopConfig, not truncated by int(...)
        ({"steps": 2.5}, r"steps must be a whole number >= 1; got 2.5"),
        ({"seed": 1.5}, r"seed must be a whole number >= 0; got 1.5"),
        ({"num_particles": 1.5}, r"num_particles must be a whole number >= 1; got 1.5"),
        ({"anneal": 2.5}, r"anneal must be a whole number >= 0; got 2.5"),
        ({"lr": -1.0}, r"lr must be a finite number >= 0"),
        ({"resume": True}, r"resume=True needs checkpoint=path"),
    ],
)
def test_fit_svi_refuses_what_fit_refuses(options, match):
    with pytest.raises(ValueError, match=match):
        fit_svi(**options)


def test_fit_svi_refuses_the_validation_options_and_bad_callbacks():
    with pytest.raises(TypeError, match="fit_svi has no validation loss, so it takes no patience"):
        fit_svi(patience=3)
    with pytest.raises(TypeError, match="callbacks must be callables; got 1"):
        fit_svi(callbacks=[1])
    with pytest.raises(TypeError, match="callbacks must be callables; got 'x'"):
        pf.fit(linear_flow(), gaussian(50, 0), steps=2, callbacks=["x"], progress=False)


def test_fit_svi_keeps_its_defaults_and_takes_the_shared_options():
    h = fit_svi()
    assert h.lr == [3e-3] * 3  # fit_svi's default lr (fit's is 1e-3)
    h = fit_svi(weight_decay=0.1, seed=0)  # a loop option fit_svi did not take before
    assert h.steps == 3 and not h.diverged


def test_fit_svi_resume_refuses_another_seed_like_fit(tmp_path):
    path = tmp_path / "svi.pt"
    fit_svi(seed=1, checkpoint=path)
    with pytest.raises(ValueError, match=r"its run used seed=1, this one seed=2 \(the seed fixes"):
        fit_svi(seed=2, checkpoint=path, resume=True, steps=5)
    assert fit_svi(checkpoint=path, resume=True, steps=5).steps == 5  # seed=None: accepted


def test_history_has_a_final_check_field_that_survives_a_checkpoint(tmp_path):
    import dataclasses

    from pyroflows.infer.state import load_checkpoint

    assert "final_check" in {f.name for f in dataclasses.fields(pf.History)}
    with warnings.catch_warnings():  # whether 3 steps give a trusted guide does not matter
        warnings.simplefilter("ignore", RuntimeWarning)
        h = fit_svi(final_check=True, num_check_samples=50)
    assert isinstance(h.final_check, pf.PSISDiagnostic)
    again = pf.History.from_state_dict(h.state_dict())
    assert again.final_check == h.final_check and again.train_loss == h.train_loss
    pf.fit(linear_flow(), gaussian(50, 0), steps=2, checkpoint=tmp_path / "a.pt", progress=False)
    saved = load_checkpoint(tmp_path / "a.pt")["history"]
    assert saved["final_check"] is None
    del saved["final_check"]  # a checkpoint written before the field existed
    assert pf.History.from_state_dict(saved).final_check is None


def test_warnings_point_at_the_callers_line():
    # the loop's warnings count frames up to the user's call of fit / fit_svi
    with pytest.warns(RuntimeWarning, match="rolled back") as rec:
        pf.fit(linear_flow(), gaussian(200, 0), steps=20, lr=0.05, objective=failing({3}),
               progress=False)  # fmt: skip
    assert {w.filename for w in rec} == {__file__}

    def corrupt(step, history, guide):
        if step == 1:
            guide.locs.z.data.fill_(float("nan"))

    with pytest.warns(RuntimeWarning, match="rolled back") as rec:
        fit_svi(callbacks=corrupt, steps=5)
    assert {w.filename for w in rec} == {__file__}
