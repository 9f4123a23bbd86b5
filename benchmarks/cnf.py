"""Continuous flows on 2-D toy data: time to a near-optimal test NLL, and evaluation NFE.

One vector-field network (three hidden layers of 128 SiLU units) trained four ways on
``8gaussians``, ``checkerboard`` and ``rings`` (pyroflows.datasets.toy; 200 000 training points,
2 000 test points, Adam, float32, one torch thread):

* ``ffjord``: maximum likelihood of ``pf.CNF`` (exact divergence, dopri5, rtol = atol = 1e-5
  for training and evaluation), trained with ``pf.fit`` (batches of 512, lr 1e-3);
* ``rnode``: the same plus the RNODE penalties, ``regularization={"kinetic": w, "jacobian": w}``;
* ``fm``: flow matching, ``pf.fit(..., objective="flow_matching")`` (no ODE solve in training;
  batches of 1024, lr 2e-3 with a cosine schedule over ``FM_STEPS[data]`` steps, the default
  ``time_power=2``; the same runs as the slow test of tests/test_flow_matching.py);
* ``fm+ml`` / ``fm+rnode`` (not in the default run): the ``fm`` model fine-tuned by maximum
  likelihood, without and with the RNODE penalties (``--tune-cap`` seconds each);
* ``zuko``: ``zuko.flows.CNF`` (its own sinusoidal time embedding, dopri5 with rtol = atol =
  1e-5, adjoint gradients), trained by maximum likelihood with a plain Adam loop.

Every likelihood run trains for a budget of ``--cap`` seconds of *training* wall time
(evaluations are not counted), a flow-matching run for its number of steps; each is evaluated
on the test set at training times 1, 1.41, 2, 2.83, ... s (a factor sqrt 2) and at the end. "to target" is the
first evaluation whose test NLL is within 0.15 nats of the exact optimum (the entropy,
``OPTIMAL_NLL``), so it over-states the time by at most sqrt 2.
"eval NFE" counts the vector-field evaluations of one ``log_prob`` of the test set at
rtol = atol = 1e-5 with the final weights. The exact log-likelihood is used for every NLL.

Usage::

    .venv/bin/python benchmarks/cnf.py                       # full run, ~75 minutes
    .venv/bin/python benchmarks/cnf.py --quick               # smoke run, ~1 minute
    .venv/bin/python benchmarks/cnf.py --datasets rings --methods fm ffjord --cap 120
    .venv/bin/python benchmarks/cnf.py --datasets rings --methods fm --time-power 1  # ablation
    .venv/bin/python benchmarks/cnf.py --datasets checkerboard --methods fm --fm-steps 10000 \
        --fm-batch-size 512 --fm-lr 8e-3 --fm-warmup 1000   # a schedule for the time to target

Each data set also reports the evaluation NFE of :func:`linear_cnf`, the linear flow onto the
data's Gaussian fit: a floor for the NFE of any flow of the set.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyroflows as pf
from benchmarks.common import environment, markdown_table, set_threads
from pyroflows.datasets.toy import OPTIMAL_NLL, TOY_DATASETS
from pyroflows.transforms import ODESolver

DATASETS = ("8gaussians", "checkerboard", "rings")
METHODS = ("ffjord", "rnode", "fm", "fm+ml", "fm+rnode", "zuko")
DEFAULT_METHODS = ("ffjord", "rnode", "fm", "zuko")
HIDDEN = (128, 128, 128)
FM_STEPS = {"8gaussians": 10_000, "checkerboard": 20_000, "rings": 30_000}
TOL = 1e-5
SOLVER = ODESolver(rtol=TOL, atol=TOL)
MARGIN = 0.15


@dataclass
class Run:
    """What one (data set, method) run measured."""

    dataset: str
    method: str
    params: int = 0
    evals: list[tuple[float, int, float]] = field(default_factory=list)  # (train s, steps, NLL)
    hit: tuple[float, int] | None = None
    steps: int = 0
    train_s: float = 0.0
    nll: float = math.nan
    nfe: int = 0


class Clock:
    """Training time without evaluations; evaluates at geometric times and stops at the cap."""

    def __init__(self, run: Run, cap: float, evaluate: Callable[[], float]) -> None:
        self.run, self.cap, self.evaluate = run, cap, evaluate
        self.target = OPTIMAL_NLL[run.dataset] + MARGIN
        self.next, self.train_s = 1.0, 0.0
        self.last = time.perf_counter()

    def tick(self, steps: int) -> bool:
        """Account one step; evaluate when due. Returns True when the budget is spent."""
        self.train_s += time.perf_counter() - self.last
        done = self.train_s >= self.cap
        if done or self.train_s >= self.next:
            self._record(steps)
            while self.next <= self.train_s:
                self.next *= math.sqrt(2)
        self.run.steps, self.run.train_s = steps, self.train_s
        self.last = time.perf_counter()
        return done

    def finish(self) -> None:
        """Evaluate the final weights (unless the last step was just evaluated)."""
        if not self.run.evals or self.run.evals[-1][1] != self.run.steps:
            self._record(self.run.steps)
        self.run.nll = self.run.evals[-1][2]

    def _record(self, steps: int) -> None:
        nll = self.evaluate()
        self.run.evals.append((self.train_s, steps, nll))
        if self.run.hit is None and nll <= self.target:
            self.run.hit = (self.train_s, steps)


def _pyroflows_run(
    run: Run, train: torch.Tensor, test: torch.Tensor, args, start: pf.CNF | None = None
) -> pf.CNF:
    """Train a pf.CNF (``start``: a copy of a flow-matching model to fine-tune) with pf.fit."""
    regularize = run.method in ("rnode", "fm+rnode")
    if start is None:
        flow = pf.CNF(2, hidden_dims=args.hidden, activation=nn.SiLU, solver=SOLVER)
        cap, lr, batch_size = args.cap, args.lr, args.batch_size
        if run.method == "fm":
            cap, lr, batch_size = math.inf, args.fm_lr, args.fm_batch_size
    else:
        flow, cap, lr = copy.deepcopy(start), args.tune_cap, args.tune_lr
        batch_size = args.tune_batch_size
    flow.transform.regularize = regularize
    run.params = sum(p.numel() for p in flow.parameters())

    def evaluate() -> float:
        flow.eval()
        with torch.no_grad():
            nll = float(-flow.log_prob(test).mean())
        run.nfe = flow.transform.nfe
        flow.train()
        return nll

    clock = Clock(run, cap, evaluate)
    kwargs: dict = {"steps": 10**7}
    if run.method == "fm":
        steps = args.fm_steps or (500 if args.quick else FM_STEPS[run.dataset])
        kwargs = {"steps": steps, "objective": "flow_matching", "lr_schedule": "cosine"}
        kwargs["warmup"] = args.fm_warmup
        kwargs["objective_kwargs"] = {"time_power": args.time_power, "ot_pairing": args.fm_ot}
    if regularize:
        kwargs["regularization"] = {"kinetic": args.rnode_weight, "jacobian": args.rnode_weight}
    pf.fit(
        flow,
        train,
        batch_size=batch_size,
        lr=lr,
        val_fraction=0.0,
        progress=False,
        seed=0,
        callbacks=lambda step, history, flow: clock.tick(step + 1),
        **kwargs,
    )
    clock.finish()
    return flow


def _zuko_run(run: Run, train: torch.Tensor, test: torch.Tensor, args) -> None:
    import zuko

    flow = zuko.flows.CNF(2, hidden_features=args.hidden, activation=nn.SiLU, atol=TOL, rtol=TOL)
    run.params = sum(p.numel() for p in flow.parameters())
    calls = [0]
    flow.transform.ode.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    opt = torch.optim.Adam(flow.parameters(), lr=args.lr)

    def evaluate() -> float:
        flow.eval()
        calls[0] = 0
        with torch.no_grad():
            nll = float(-flow().log_prob(test).mean())
        run.nfe = calls[0]
        flow.train()
        return nll

    clock = Clock(run, args.cap, evaluate)
    g = torch.Generator().manual_seed(0)
    step = 0
    while True:
        for rows in torch.randperm(len(train), generator=g).split(args.batch_size):
            if len(rows) < args.batch_size:
                continue
            opt.zero_grad()
            loss = -flow().log_prob(train[rows]).mean()
            loss.backward()
            opt.step()
            step += 1
            if clock.tick(step):
                clock.finish()
                return


def linear_cnf(train: torch.Tensor) -> pf.CNF:
    """The CNF with the linear field dz/dt = A z + b that maps N(0, I) to the Gaussian fit of
    ``train`` (A = log cov^(1/2)): its evaluation NFE is a floor for any flow of these data."""
    mean, cov = train.mean(0).double(), torch.cov(train.T.double())
    lam, vecs = torch.linalg.eigh(cov)
    a = vecs @ torch.diag(0.5 * lam.log()) @ vecs.T  # expm(a) = cov^(1/2)
    # z(1) = expm(a) z(0) + a^-1 (expm(a) - I) b = cov^(1/2) z(0) + mean
    b = torch.linalg.solve(torch.linalg.matrix_exp(a) - torch.eye(2, dtype=a.dtype), a @ mean)
    flow = pf.CNF(2, hidden_dims=(), solver=SOLVER)
    layer = flow.transform.vector_field.layers[0]
    with torch.no_grad():
        for p in (layer.gate_weight, layer.gate_bias, layer.time_weight):
            p.zero_()
        layer.linear.weight.copy_(a)
        layer.linear.bias.copy_(b)
    return flow.eval()


def linear_nfe(train: torch.Tensor, test: torch.Tensor) -> int:
    """Evaluation NFE of :func:`linear_cnf` on ``test``."""
    flow = linear_cnf(train)
    with torch.no_grad():
        flow.log_prob(test)
    return flow.transform.nfe


def _warm_up() -> None:
    """One untimed optimiser step and solve: the first ones pay for lazy imports."""
    flow = pf.CNF(2, hidden_dims=(8,))
    opt = torch.optim.Adam(flow.parameters())
    flow.log_prob(torch.zeros(2, 2)).sum().backward()
    opt.step()


def _fmt_hit(run: Run) -> tuple[str, str]:
    if run.hit is None:
        return "not reached", "-"
    return f"{run.hit[0]:.1f} s", str(run.hit[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--cap", type=float, default=360.0, help="training s per likelihood run")
    parser.add_argument("--tune-cap", type=float, default=25.0, help="training s per fine-tune")
    parser.add_argument("--tune-lr", type=float, default=5e-4, help="fine-tuning runs")
    parser.add_argument("--tune-batch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=512, help="likelihood runs")
    parser.add_argument("--fm-batch-size", type=int, default=1024, help="flow-matching runs")
    parser.add_argument("--lr", type=float, default=1e-3, help="maximum-likelihood runs")
    parser.add_argument("--fm-lr", type=float, default=2e-3, help="flow-matching runs")
    parser.add_argument("--rnode-weight", type=float, default=0.01)
    parser.add_argument("--time-power", type=float, default=2.0, help="flow matching's time_power")
    parser.add_argument("--fm-steps", type=int, help="flow-matching steps (default: FM_STEPS)")
    parser.add_argument("--fm-warmup", type=int, default=0, help="flow matching's lr warm-up")
    parser.add_argument("--fm-ot", action="store_true", help="minibatch-OT pairing (ot_pairing)")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN), help="field sizes")
    parser.add_argument("--train-size", type=int, default=200_000)
    parser.add_argument("--test-size", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s caps, 500 FM steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.cap = args.tune_cap = 5.0
        args.train_size, args.test_size = 5_000, 500
    set_threads(1)
    _warm_up()
    print(environment(["pyro-ppl", "torchdiffeq", "zuko"]), flush=True)
    runs = []
    for name in args.datasets:
        make = TOY_DATASETS[name]
        train, test = make(args.train_size, seed=0), make(args.test_size, seed=1)
        fm_flow = None
        floor = linear_nfe(train, test)
        print(f"{name}: a linear field (Gaussian fit) needs {floor} evaluations", flush=True)
        for method in args.methods:
            torch.manual_seed(0)
            run = Run(name, method)
            if method == "zuko":
                _zuko_run(run, train, test, args)
            elif method.startswith("fm+"):
                if fm_flow is None:
                    raise SystemExit(f"{method} fine-tunes the fm model: list fm before it")
                _pyroflows_run(run, train, test, args, start=fm_flow)
            else:
                flow = _pyroflows_run(run, train, test, args)
                fm_flow = flow if method == "fm" else fm_flow
            runs.append(run)
            trace = ", ".join(f"{s:.0f}s:{nll:.3f}" for s, _, nll in run.evals)
            print(
                f"{name} {method}: NLL {run.nll:.4f} after {run.steps} steps; {trace}", flush=True
            )
    rows = []
    for r in runs:
        when, steps = _fmt_hit(r)
        gap = r.nll - OPTIMAL_NLL[r.dataset]
        rows.append(
            [
                r.dataset,
                r.method,
                r.params,
                when,
                steps,
                f"{r.nll:.3f} (+{gap:.3f})",
                r.steps,
                r.nfe,
            ]
        )
    headers = ["data", "method", "params", "to target", "steps", "NLL at cap", "steps at cap"]
    print(markdown_table([*headers, "eval NFE"], rows))
    by = {(r.dataset, r.method): r for r in runs}
    for name in args.datasets:
        fm, ml = by.get((name, "fm")), by.get((name, "ffjord"))
        if fm and ml and fm.hit:
            t_ml = ml.hit[0] if ml.hit else ml.train_s
            sign = "" if ml.hit else ">"
            print(f"{name}: flow matching reached the target {sign}{t_ml / fm.hit[0]:.1f}x sooner")
        for a, b in (("ffjord", "rnode"), ("fm+ml", "fm+rnode")):
            ml, rn = by.get((name, a)), by.get((name, b))
            if ml and rn:
                print(
                    f"{name}: {b} eval NFE {rn.nfe} vs {a} {ml.nfe} "
                    f"({ml.nfe / max(rn.nfe, 1):.2f}x fewer), NLL {rn.nll - ml.nll:+.3f} nats"
                )


if __name__ == "__main__":
    main()
