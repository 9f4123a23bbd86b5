"""Image flows on the digits: pyroflows' Glow and RealNVP against normflows' Glow.

Data: scikit-learn's 8x8 digits (17 grey levels), the fixed 20 % held-out split of
``pyroflows.datasets.digits`` (1438 train / 359 test images). Every model sees the same data
pipeline: fresh uniform dequantisation ``y = (x + u) / 17`` at every step and a logit
pre-transform with ``alpha = 0.05`` (pyroflows' ``logit=0.05``; normflows'
``transforms.Logit(0.05)`` as the ``MultiscaleFlow`` transform). Matched size:

* pyroflows ``Glow(shape=(1, 8, 8), levels=2, steps_per_level=4, hidden_channels=64)``: 2 levels of
  4 x (ActNorm, LU 1x1 convolution, affine channel coupling with a conv3x3-conv1x1-conv3x3
  net of 64 channels), half of the channels factored out under a learned conditional prior;
* normflows ``MultiscaleFlow`` with ``L = 2`` levels of ``K = 4`` ``GlowBlock(channels, 64)``
  (the same coupling net, LU 1x1 convolution and ActNorm) and a ``DiagGaussian`` base per level,
  built as in normflows' Glow example;
* pyroflows ``RealNVP(shape=(1, 8, 8), levels=2, steps_per_level=3, hidden_channels=64)``: checkerboard
  and channel couplings with ActNorm (Dinh et al.'s multi-scale architecture).

Every model is trained by the same loop (Adam, lr 1e-3 with a cosine schedule, batches of 64,
``--steps`` steps, seed 0) on the bits/dim bound, then scored with
``pyroflows.bits_per_dim`` on the test split (4 dequantisation draws per image, same noise
for every model). Speeds are medians of one interleaved run with torch pinned to one thread,
on the process's CPU clock (the machine is shared; single-threaded CPU time does not count the
time spent waiting for a core):

* train: images/s of one Adam step (dequantise, log-likelihood, backward, step) on 64 images;
* sample: images/s drawing 256 images (no gradients);
* peak memory: extra peak resident memory of one training step on 512 images, each model in a
  fresh process (CPU: ~1 MiB resolution).

Usage::

    .venv/bin/python benchmarks/images.py               # the full run (~10-15 min on 2 cores)
    .venv/bin/python benchmarks/images.py --steps 200   # a smoke run
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyroflows as pf
from benchmarks.common import (
    environment,
    format_bytes,
    markdown_table,
    peak_memory,
    set_threads,
    time_interleaved,
)
from pyroflows.datasets import DIGITS_LEVELS, digits

SHAPE = (1, 8, 8)
HIDDEN, LEVELS, STEPS_PER_LEVEL = 64, 2, 4


class NormflowsGlow(nn.Module):
    """normflows' multi-scale Glow behind the two calls the benchmark needs."""

    event_shape = torch.Size(SHAPE)

    def __init__(self, hidden: int = HIDDEN, levels: int = LEVELS, k: int = STEPS_PER_LEVEL):
        super().__init__()
        import normflows as nf

        c, h, _ = SHAPE
        q0, merges, flows = [], [], []
        for i in range(levels):
            blocks = [
                nf.flows.GlowBlock(c * 2 ** (levels + 1 - i), hidden, split_mode="channel")
                for _ in range(k)
            ]
            flows.append([*blocks, nf.flows.Squeeze()])
            if i > 0:
                merges.append(nf.flows.Merge())
                side = h // 2 ** (levels - i)
                latent = (c * 2 ** (levels - i), side, side)
            else:
                side = h // 2**levels
                latent = (c * 2 ** (levels + 1), side, side)
            q0.append(nf.distributions.DiagGaussian(latent))
        self.model = nf.MultiscaleFlow(
            q0, flows, merges, transform=nf.transforms.Logit(alpha=0.05), class_cond=False
        )

    def log_prob(self, y: Tensor) -> Tensor:
        return self.model.log_prob(y, None)

    def sample(self, n: int) -> Tensor:
        return self.model.sample(n)[0]


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "pyroflows Glow":
        return pf.Glow(
            shape=SHAPE, levels=LEVELS, steps_per_level=STEPS_PER_LEVEL, hidden_channels=HIDDEN
        )
    if name == "pyroflows RealNVP":
        return pf.RealNVP(shape=SHAPE, levels=LEVELS, steps_per_level=3, hidden_channels=HIDDEN)
    if name == "normflows Glow":
        return NormflowsGlow()
    raise ValueError(name)


def sampler(name: str, model: nn.Module, n: int) -> Callable[[], Tensor]:
    if name.startswith("pyroflows"):
        return lambda: model.sample((n,))
    return lambda: model.sample(n)


def bits_loss(model: nn.Module, images: Tensor) -> Tensor:
    """Mean bits/dim bound of a batch with fresh dequantisation noise (same for every model)."""
    y = pf.dequantize(images, levels=DIGITS_LEVELS)
    d = y[0].numel()
    return ((d * math.log(DIGITS_LEVELS) - model.log_prob(y)) / (d * math.log(2))).mean()


def trainer(model: nn.Module, total: int) -> tuple[Callable[[Tensor], float], object]:
    """An Adam step on a batch of integer images, and its cosine learning-rate schedule."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)

    def step_on(x: Tensor) -> float:
        opt.zero_grad()
        loss = bits_loss(model, x)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step_on, sched


def train(model: nn.Module, train_x: Tensor, steps: int) -> float:
    """Train for ``steps`` steps (a fresh permutation per epoch); returns the CPU seconds."""
    step_on, sched = trainer(model, steps)
    g = torch.Generator().manual_seed(0)
    model.train()
    start = time.process_time()
    for i in range(steps):
        if i % (len(train_x) // 64) == 0:
            perm = torch.randperm(len(train_x), generator=g)
        j = i % (len(train_x) // 64)
        step_on(train_x[perm[64 * j : 64 * (j + 1)]])
        sched.step()
    return time.process_time() - start


def training_peak_memory(name: str, batch: int = 512) -> int:
    """Extra peak memory of one training step on ``batch`` images, measured in a fresh process
    (the resident-set peak only rises, so models measured in one process would hide each other).
    """
    set_threads(1)
    model = build(name)
    step, _ = trainer(model.train(), 10)
    x = digits("train").float()
    step(x[:64])  # lazy initialisation (ActNorm, optimiser state) is not counted
    return peak_memory(lambda: step(x[:batch]))


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1500, help="training steps per model")
    p.add_argument("--repeats", type=int, default=7, help="timing repetitions")
    args = p.parse_args(argv)
    set_threads(1)
    names = ["pyroflows Glow", "pyroflows RealNVP", "normflows Glow"]
    train_x, test_x = digits("train").float(), digits("test")
    models = {n: build(n) for n in names}
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}

    bpd, cpu = {}, {}
    for n, m in models.items():
        cpu[n] = train(m, train_x, args.steps)
        m.eval()
        g = torch.Generator().manual_seed(123)
        bpd[n] = pf.bits_per_dim(m, test_x, levels=DIGITS_LEVELS, samples=4, generator=g)
        print(
            f"{n}: {params[n]} parameters, test bits/dim {bpd[n]:.3f}, "
            f"{cpu[n]:.0f} s CPU for {args.steps} steps",
            flush=True,
        )

    # speed, on the trained models (ActNorm initialised), with fresh optimisers
    batch = train_x[:64]
    steps = {n: trainer(m.train(), 10**6)[0] for n, m in models.items()}
    with torch.no_grad():
        sample_fns = {n: sampler(n, m.eval(), 256) for n, m in models.items()}
        for f in sample_fns.values():
            f()
    t_train = time_interleaved(
        {n: (lambda s=s: s(batch)) for n, s in steps.items()},
        repeats=args.repeats,
        items=64,
        min_time=0.3,
        clock="cpu",
    )
    with torch.no_grad():
        t_sample = time_interleaved(
            sample_fns, repeats=args.repeats, items=256, min_time=0.3, clock="cpu"
        )
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:  # a fresh process per model
        mem = {n: pool.apply(training_peak_memory, (n,)) for n in names}

    rows = [
        [
            n,
            f"{params[n]:,}",
            f"{bpd[n]:.3f}",
            f"{t_train[n].rate:.0f}",
            f"{t_sample[n].rate:.0f}",
            format_bytes(mem[n]),
        ]
        for n in names
    ]
    table = markdown_table(
        [
            "model",
            "parameters",
            "test bits/dim",
            "train images/s",
            "sample images/s",
            "peak memory",
        ],
        rows,
    )
    out = f"{environment(['pyro-ppl', 'normflows'])}\n\n{table}"
    print(out)
    return out


if __name__ == "__main__":
    main()
