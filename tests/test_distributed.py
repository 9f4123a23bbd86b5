"""Data-parallel pf.fit on torch.distributed: 2 CPU processes (gloo) spawned by the tests."""

import multiprocessing as mp
import socket
import traceback

import numpy as np
import pytest
import torch

import pyroflows as pf

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)

N, D, STEPS = 256, 2, 8


def _data():
    g = np.random.default_rng(0)
    return torch.from_numpy(g.normal(size=(N, D)) * [1.0, 2.0] + 1.0)


def _flow(kind="maf"):
    torch.manual_seed(0)
    if kind == "glow":  # ActNorm layers: initialised from the first batch
        return pf.Glow(D, num_layers=2, hidden_dims=(8,))
    return pf.MAF(D, num_layers=2, hidden_dims=(8,))


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out, opts, fail_at):
    import os

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    result = {}
    try:
        opts = dict(opts)
        flow = _flow(opts.pop("flow", "maf"))

        def boom(step, history, flow):
            if rank == 1 and fail_at is not None and step == fail_at:
                raise RuntimeError("callback failed on rank 1")

        h = pf.fit(flow, _data(), distributed=True, progress=False, callbacks=boom, **opts)
        result = {"state": flow.state_dict(), "train_loss": h.train_loss, "val": h.val_loss}
    except BaseException as exc:  # reported to the test
        result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    torch.save(result, f"{out}/rank{rank}.pt")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _spawn(tmp_path, opts, world=2, fail_at=None, timeout=120):
    ctx = mp.get_context("fork")
    port = _port()
    procs = [
        ctx.Process(target=_worker, args=(r, world, port, str(tmp_path), opts, fail_at))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"ranks {hung} hung"
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


def _close(a, b, tol=1e-6):  # float32 weights
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a) <= tol


def _reference(batch_size, steps=STEPS, flow="maf", **kw):
    flow = _flow(flow)
    h = pf.fit(flow, _data(), steps=steps, batch_size=batch_size, seed=5, progress=False, **kw)
    return flow.state_dict(), h


def test_two_processes_half_batch_equal_one_process(tmp_path):
    ref, h = _reference(32, eval_every=4)
    r0, r1 = _spawn(tmp_path, dict(steps=STEPS, batch_size=16, seed=5, eval_every=4))
    assert "error" not in r0, r0.get("trace")
    assert "error" not in r1, r1.get("trace")
    assert _close(r0["state"], r1["state"], 0.0)  # the ranks agree exactly
    assert _close(r0["state"], ref)  # and equal one process with the whole batch
    np.testing.assert_allclose(r0["train_loss"], h.train_loss, rtol=1e-6)
    np.testing.assert_allclose(r0["val"], h.val_loss, rtol=1e-6)
    assert r0["val"] == r1["val"]


def test_actnorm_initialises_from_the_whole_global_batch_on_every_rank(tmp_path):
    # lr ~ 0: Adam's first steps are +-lr on gradients that are ~0 at a data-dependent init
    # (so rounding decides their sign); what is compared here is the initialisation itself
    ref, h = _reference(32, steps=2, flow="glow", lr=1e-9)
    r0, r1 = _spawn(tmp_path, dict(steps=2, batch_size=16, seed=5, flow="glow", lr=1e-9))
    assert "error" not in r0, r0.get("trace")
    assert "error" not in r1, r1.get("trace")
    assert _close(r0["state"], r1["state"], 0.0)  # not each rank's own half of the batch
    assert _close(r0["state"], ref, 1e-6)  # one process with the whole batch
    np.testing.assert_allclose(r0["train_loss"], h.train_loss, rtol=1e-6)


def test_one_rank_raising_stops_all_with_clear_message(tmp_path):
    r0, r1 = _spawn(tmp_path, dict(steps=50, batch_size=16, seed=5), fail_at=2, timeout=90)
    assert "callback failed on rank 1" in r1["error"]
    assert "a collective operation failed" in r0["error"], r0
    assert "resume=True" in r0["error"]


def test_kill_and_resume_with_two_and_one_process(tmp_path):
    ref, _ = _reference(32)
    ckpt = tmp_path / "run.pt"
    opts = dict(steps=STEPS, batch_size=16, seed=5, checkpoint=str(ckpt), checkpoint_every=2)
    r0, r1 = _spawn(tmp_path, opts, fail_at=4)
    assert "error" in r0 and "error" in r1 and ckpt.exists()
    saved = ckpt.read_bytes()
    # rank 1 raised after step 4 (0-based); rank 0's stop-flag collective then failed between
    # steps, with the weights of steps 0..4 consistent, so rank 0 saved them (step 5 is next)
    assert torch.load(ckpt, weights_only=False)["step"] == 5
    # resume with 2 processes
    a0, a1 = _spawn(tmp_path, dict(opts, resume=True))
    assert "error" not in a0, a0.get("trace")
    assert _close(a0["state"], ref) and _close(a1["state"], ref)
    # resume with 1 process (the plain in-memory fit) from the same checkpoint
    ckpt.write_bytes(saved)
    flow = _flow()
    pf.fit(
        flow,
        _data(),
        steps=STEPS,
        batch_size=32,
        seed=5,
        progress=False,
        checkpoint=str(ckpt),
        checkpoint_every=2,
        resume=True,
    )
    assert _close(flow.state_dict(), ref)


def _nan_on_rank1_at_step3():
    calls = {"n": 0}

    def objective(flow, x, c):
        loss = -flow().log_prob(x).mean()
        calls["n"] += 1
        if torch.distributed.get_rank() == 1 and calls["n"] == 4:  # the 4th training step
            return loss * float("nan")
        return loss

    return objective


def test_divergence_on_one_rank_rolls_back_every_rank(tmp_path):
    opts = dict(steps=STEPS, batch_size=16, seed=5, val_fraction=0.0)
    r0, r1 = _spawn(tmp_path, dict(opts, objective=_nan_on_rank1_at_step3()))
    assert "error" not in r0, r0.get("trace")
    assert "error" not in r1, r1.get("trace")
    assert _close(r0["state"], r1["state"], 0.0)
    assert np.isnan(r0["train_loss"][3]) and np.isnan(r1["train_loss"][3])
    assert np.isfinite(np.delete(r0["train_loss"], 3)).all()


NS, MS = 40, 8
XS = torch.linspace(-2.0, 3.0, NS)


def _svi_model(x, m):
    import pyro
    import pyro.distributions as dist

    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x), subsample_size=m) as idx:
        pyro.sample("obs", dist.Normal(z, 1.0), obs=x[idx])


def _svi_run(m, **kw):
    import pyro
    from pyro.infer.autoguide import AutoNormal

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(_svi_model)
    h = pf.fit_svi(_svi_model, guide, XS, m, steps=6, lr=0.05, seed=3, progress=False,
                   final_check=False, **kw)  # fmt: skip
    return {k: v.detach().clone() for k, v in guide.state_dict().items()}, h


def _svi_worker(rank, world, port, out):
    import os

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    try:
        state, h = _svi_run(MS // world, distributed=True)
        result = {"state": state, "train_loss": h.train_loss}
    except BaseException as exc:  # reported to the test
        result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    torch.save(result, f"{out}/svi{rank}.pt")
    torch.distributed.destroy_process_group()


def test_fit_svi_two_processes_half_subsample_equal_one_process(tmp_path):
    ref, h = _svi_run(MS)
    ctx, port = mp.get_context("fork"), _port()
    procs = [ctx.Process(target=_svi_worker, args=(r, 2, port, str(tmp_path))) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert not any(p.is_alive() for p in procs)
    r0, r1 = (torch.load(tmp_path / f"svi{r}.pt", weights_only=False) for r in (0, 1))
    assert "error" not in r0, r0.get("trace")
    assert _close(r0["state"], r1["state"], 0.0)
    assert _close(r0["state"], ref)
    np.testing.assert_allclose(r0["train_loss"], h.train_loss, rtol=1e-5)
    assert not _close(ref, _svi_run(MS // 2)[0])  # the subsample size matters: it can fail


@pytest.mark.slow
def test_cli_fit_under_torchrun(tmp_path):
    import subprocess
    import sys

    np.save(tmp_path / "t.npy", np.random.default_rng(0).normal(size=(400, 2)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "pyroflows.cli", "fit", "t.npy", "--out", "m.pt", "--steps", "10",
           "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("saved m.pt") == 1  # rank 0 alone reports and saves
    assert pf.load(tmp_path / "m.pt").log_prob(torch.zeros(1, 2)).isfinite().all()
