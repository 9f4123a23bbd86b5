"""``pyroflows demo``: fits flows on bundled data, writes plots and prints test log-likelihoods.

Two moons (MAF and RealNVP, 2-D, standardised by the command line's table pipeline) and
scikit-learn's bundled 8x8 digits (MAF on the logit of dequantised pixels, scored in bits/dim).
``quick=True`` shrinks everything for tests. Needs the extras ``plot`` and ``data``
(``pip install "pyroflows[all]"``).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch

from ._optional import require
from .infer.table import fit_table

# The command's implementation, not a library API: ``run_demo`` is imported by name (cli.py).
__all__: list[str] = []

# ---- demo --------------------------------------------------------------------------------------

#: part -> (train rows, steps, layers, hidden); ``--quick`` is for tests.
_DEMO = {
    False: {"moons": (10_000, 2500, 10, (128, 128)), "digits": (None, 1500, 5, (128, 128))},
    True: {"moons": (600, 30, 2, (16,)), "digits": (300, 20, 1, (32,))},
}


def _demo_moons(out: Path, quick: bool) -> list[dict[str, Any]]:
    import pyroflows as pf
    from pyroflows.datasets import OPTIMAL_NLL, two_moons
    from pyroflows.plotting import plot_fit_2d

    n, steps, layers, hidden = _DEMO[quick]["moons"]
    train, test = two_moons(n, seed=0).double().numpy(), two_moons(n // 2, seed=1)
    rows = []
    for name in ("MAF", "RealNVP"):
        print(f"fitting {name} to two moons ({n} rows, {steps} steps)", flush=True)
        torch.manual_seed(0)
        flow = getattr(pf, name)(2, num_layers=layers, hidden_dims=hidden)
        start = time.perf_counter()
        fit = fit_table(flow, train, steps=steps, lr=1e-3, seed=0, lr_schedule="cosine",
                        progress=not quick)  # fmt: skip
        seconds, st = time.perf_counter() - start, fit["standardizer"]
        with torch.no_grad():
            test_ll = float(st.log_prob(flow, test).double().mean())
            samples = st.inverse(flow.sample((len(test),)))
        fig = plot_fit_2d(train, lambda z, f=flow, s=st: s.log_prob(f, z), samples, name=name)
        fig.savefig(out / f"moons_{name.lower()}.png", dpi=80)
        ref = -OPTIMAL_NLL["moons"]
        rows.append(dict(data="two moons (2-D)", flow=name, n_train=fit["n_train"],
                         test_ll=test_ll, reference=ref, seconds=seconds))  # fmt: skip
    return rows


def _demo_digits(out: Path, quick: bool) -> dict[str, Any]:
    import math

    import pyroflows as pf
    from pyroflows.datasets import DIGITS_LEVELS as K
    from pyroflows.datasets import digits
    from pyroflows.transforms.dequantize import Logit

    n, steps, layers, hidden = _DEMO[quick]["digits"]
    train = digits("train", seed=0).reshape(-1, 64).float()[:n]
    test = digits("test", seed=0).reshape(-1, 64).float()
    print(f"fitting MAF to digits ({len(train)} images, {steps} steps)", flush=True)
    torch.manual_seed(0)
    # MAF on the logit of the dequantised pixels y = (level + u) / 17 in [0, 1)
    flow = pf.Flow(
        [*pf.MAF(64, num_layers=layers, hidden_dims=hidden).transforms, Logit((64,))],
        event_shape=(64,),
    )
    start = time.perf_counter()
    loss = pf.bits_per_dim_loss(levels=K)
    pf.fit(flow, train, steps=steps, batch_size=128, lr=1e-3, seed=0, progress=not quick,
           objective=loss, lr_schedule="cosine")  # fmt: skip
    seconds = time.perf_counter() - start
    flow.eval()
    bpd = pf.bits_per_dim(
        flow, test, levels=K, samples=4, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        levels = torch.floor(flow.sample((36,)).clamp(0.0, 1.0 - 1e-6) * K).reshape(-1, 1, 8, 8)
    grid = dict(nrow=6, scale=4, value_range=(0, K - 1))
    pf.save_image_grid(levels, out / "digits_maf_samples.png", **grid)
    pf.save_image_grid(test[:36].reshape(-1, 1, 8, 8), out / "digits_data.png", **grid)
    # -bpd * D * log 2 is a lower bound on the mean log P(image) of the discrete digits
    ll, ref = -bpd * 64 * math.log(2), -64 * math.log(K)
    return dict(data="digits (64-D)", flow="MAF", n_train=len(train), bits_per_dim=bpd,
                test_ll=ll, reference=ref, seconds=seconds)  # fmt: skip


def run_demo(out: Path, *, quick: bool = False) -> int:
    """Run the demo, write plots and ``results.csv`` into ``out``, print the table; returns 0.

    Raises:
        ImportError: before any work when matplotlib or scikit-learn is missing (the extras
            ``plot`` and ``data``: ``pip install "pyroflows[all]"``).
    """
    require("matplotlib", "pyroflows demo (its plots)")
    require("sklearn", "pyroflows demo (the bundled digits)")
    out.mkdir(parents=True, exist_ok=True)
    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)  # these small networks run fastest (and share a machine best) on one
    try:
        rows = [*_demo_moons(out, quick), _demo_digits(out, quick)]
    finally:
        torch.set_num_threads(threads)
    cols = ["data", "flow", "n_train", "test_ll", "reference", "seconds"]
    head = f"{'data':<17}{'flow':<9}{'train rows':>11}{'test log-lik':>14}{'reference':>11}"
    head += f"{'fit (s)':>9}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['data']:<17}{r['flow']:<9}{r['n_train']:>11}{r['test_ll']:>14.3f}"
              f"{r['reference']:>11.3f}{r['seconds']:>9.1f}")  # fmt: skip
    print(
        "\ntest log-lik: mean log-density of held-out data (nats per example).\n"
        "reference: two moons, the best possible (minus the entropy of the generator);\n"
        "           digits, the uniform distribution over the 17 grey levels.\n"
        f"digits: {rows[-1]['bits_per_dim']:.3f} bits/dim (dequantised bound).\n"
        f"plots and results.csv in {out}/ ({time.perf_counter() - start:.0f} s in all)"
    )
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return 0
