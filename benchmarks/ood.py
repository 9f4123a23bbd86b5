r"""Out-of-distribution detection: AUROC, AUPR and TPR at 5 % FPR of every OODDetector method.

Image case: scikit-learn's 8x8 digits (17 levels). A multi-scale Glow
(``Glow(shape=(1, 8, 8), levels=2, steps_per_level=3, hidden_channels=32)``) is trained on classes 0-4
(70 % of their images; 10 % are the detector's reference set, the last 20 % the in-distribution
test set) with the bits/dim objective. OOD sets:

* ``classes 5-9``: every image of the other five classes (the semantic shift);
* ``blank``: all-zero images; ``constant``: each image one random level 1..16;
* ``noise``: independent uniform levels; ``inverted``: ``16 - x`` of the test digits;
* ``shifted``: test digits translated by 2 pixels in a random direction (zero fill).

The ratio method's background is a Glow of the same configuration trained on the training
images with each pixel replaced by a uniform random level with probability ``--mutation-rate``
(Ren et al. 2019), by ``OODDetector(..., background="perturbed")``.

Likelihood estimates (digits and table): the plain detector scores each input with one flow
and, for images, one dequantisation draw. Two more detectors score with ``--draws`` draws
(importance-weighted estimate of :math:`-\log P(x)`; ``dequantization_samples=``) and with an
ensemble of ``1 + --ensemble`` flows of the same configuration trained with seeds ``seed``,
``seed + 1``, ... (``ensemble=``; Choi et al. 2018's WAIC is reported with it). Their rows are
named ``<method>[, <n> flows][, <n> draws]``. A non-flow baseline, the Euclidean distance
to the nearest training image (``1-NN distance (not a flow)``), is reported for scale.

Table case: an 8-D mixture of four Gaussians (MAF, 5 layers of 64 x 64) against the same
mixture shifted by ``--table-shift`` standard deviations along every axis; the background is a
MAF trained on the table with ``--mutation-rate`` of its entries redrawn from their column's marginal.

``--classes`` (with ``--flow nsf`` or ``maf``) adds rows named ``classes mixture, <method>``:
the same flow trained with the one-hot class of each training image as its context and scored
as :class:`pyroflows.ContextMixture` over the five classes (their training frequencies), a
density of the image alone built from its labels (no background or ensemble rows for it).

``--flow nsf`` or ``--flow maf`` replace the Glow (the default) by a dense flow on the 64
flattened pixels: ``NSF(64, fast="density")`` (an autoregressive rational-quadratic spline
flow) or ``MAF(64)``, 5 layers of 128 x 128 each, trained the same way; the background and the
ensemble members are then of that class too. Every set is flattened to ``(N, 64)`` for them
(the compressed lengths and the 1-NN distances do not change).

Every method's row is printed, including where it loses. Runs on one thread.

Usage::

    .venv/bin/python benchmarks/ood.py                # the full run (~15 min on one thread)
    .venv/bin/python benchmarks/ood.py --steps 50     # a smoke run
    .venv/bin/python benchmarks/ood.py --flow nsf --ensemble 0 --skip-table
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import Tensor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyroflows as pf
from benchmarks.common import set_threads
from pyroflows._optional import require
from pyroflows.datasets import DIGITS_LEVELS
from pyroflows.diagnostics import ood_metrics

K = DIGITS_LEVELS


def labelled_digits() -> tuple[Tensor, Tensor]:
    """All 1797 digits as ``(N, 1, 8, 8)`` int64 levels and their labels (scikit-learn)."""
    load_digits = require("sklearn.datasets", "benchmarks/ood.py").load_digits
    x, y = load_digits(return_X_y=True)
    return torch.from_numpy(x).long().reshape(-1, 1, 8, 8), torch.from_numpy(y).long()


def digit_sets(seed: int) -> dict[str, Tensor]:
    """Train / reference / test images of classes 0-4 and the OOD sets."""
    g = torch.Generator().manual_seed(seed)
    x, y = labelled_digits()
    inside, labels = x[y < 5], y[y < 5]
    order = torch.randperm(inside.shape[0], generator=g)
    inside, labels = inside[order], labels[order]
    n = inside.shape[0]
    n_train, n_ref = int(0.7 * n), int(0.1 * n)
    train, ref, test = (
        inside[:n_train],
        inside[n_train : n_train + n_ref],
        inside[n_train + n_ref :],
    )
    m = test.shape[0]
    shifts = torch.randint(0, 4, (m,), generator=g)
    shifted = torch.stack([_translate(img, int(s), 2) for img, s in zip(test, shifts, strict=True)])
    return {
        "train": train,
        "train labels": labels[:n_train],
        "reference": ref,
        "test": test,
        "classes 5-9": x[y >= 5],
        "blank": torch.zeros(m, 1, 8, 8, dtype=torch.long),
        "constant": torch.randint(1, K, (m, 1, 1, 1), generator=g).expand(m, 1, 8, 8).clone(),
        "noise": torch.randint(0, K, (m, 1, 8, 8), generator=g),
        "inverted": (K - 1) - test,
        "shifted": shifted,
    }


def _translate(img: Tensor, direction: int, k: int) -> Tensor:
    """Move an image by ``k`` pixels right/left/down/up, filling with zeros."""
    out = torch.zeros_like(img)
    if direction == 0:
        out[..., :, k:] = img[..., :, :-k]
    elif direction == 1:
        out[..., :, :-k] = img[..., :, k:]
    elif direction == 2:
        out[..., k:, :] = img[..., :-k, :]
    else:
        out[..., :-k, :] = img[..., k:, :]
    return out


def gaussian_mixture(n: int, shift: float, generator: torch.Generator) -> Tensor:
    """An 8-D mixture of four Gaussians with fixed means and scales, shifted by ``shift``."""
    fixed = torch.Generator().manual_seed(1234)
    means = 3.0 * torch.randn(4, 8, generator=fixed)
    scales = 0.5 + torch.rand(4, 8, generator=fixed)
    comp = torch.randint(0, 4, (n,), generator=generator)
    x = means[comp] + scales[comp] * torch.randn(n, 8, generator=generator)
    return x + shift


def better_estimates(
    flow, test: Tensor, ood: dict[str, Tensor], args, fit_options: dict, **options
) -> list[dict]:
    """Rows of the likelihood-based methods with ``--draws`` dequantisation draws (images) and
    with an ensemble of ``1 + --ensemble`` flows, renamed ``<method>[, <n> flows][, <n> draws]``."""
    draws = args.draws if "levels" in options else 1
    rows = []
    for extra in sorted({0, args.ensemble}):
        if extra == 0 and draws == 1:
            continue  # the plain detector's rows
        methods = ["likelihood", "combined"] + (["waic"] if extra else [])
        report = pf.ood_benchmark(
            flow,
            test,
            ood,
            methods=methods,
            ensemble=extra,
            ensemble_fit=fit_options,
            dequantization_samples=draws,
            **options,
        )
        for r in report.rows:
            label = r["method"] + (f", {1 + extra} flows" if extra else "")
            rows.append({**r, "method": label + (f", {draws} draws" if draws > 1 else "")})
    return rows


def nearest_neighbour_rows(train: Tensor, test: Tensor, ood: dict[str, Tensor]) -> list[dict]:
    """The non-flow baseline: Euclidean distance to the nearest training input."""

    def distance(x: Tensor) -> Tensor:
        return torch.cdist(x.flatten(1).double(), train.flatten(1).double()).min(1).values

    d_in = distance(test)
    return [
        {"dataset": k, "method": "1-NN distance (not a flow)", **ood_metrics(d_in, distance(v))}
        for k, v in ood.items()
    ]


#: ``--flow`` choices: the digits flow of each (vector flows see the 64 flattened pixels;
#: ``context_dim`` > 0 only with ``--classes``).
DIGIT_FLOWS = {
    "glow": lambda context_dim=0: pf.Glow(
        shape=(1, 8, 8), levels=2, steps_per_level=3, hidden_channels=32
    ),
    "nsf": lambda context_dim=0: pf.NSF(
        64, num_layers=5, hidden_dims=(128, 128), fast="density", context_dim=context_dim
    ),
    "maf": lambda context_dim=0: pf.MAF(
        64, num_layers=5, hidden_dims=(128, 128), context_dim=context_dim
    ),
}

CLASSES = 5  #: classes 0-4 are in-distribution
#: the entries of :func:`digit_sets` that are not OOD sets
NOT_OOD = ("train", "train labels", "reference", "test")


def _digits_fit(args, context_dim: int = 0):
    """The digit sets (flattened for vector flows), the ``--flow`` flow trained on the training
    images (on their one-hot classes too when ``context_dim`` > 0), its OOD sets and the fit
    options shared by the digits runs."""
    sets = digit_sets(args.seed)
    if args.flow != "glow":
        sets = {k: v.flatten(1) if v.dim() > 1 else v for k, v in sets.items()}
    flow = DIGIT_FLOWS[args.flow](context_dim=context_dim)
    common = dict(batch_size=64, lr=1e-3, lr_schedule="cosine", progress=False, seed=args.seed)
    if context_dim:
        labels = sets["train labels"]
        common["context"] = torch.nn.functional.one_hot(labels, context_dim).to(
            torch.get_default_dtype()
        )
    pf.fit(
        flow, sets["train"], steps=args.steps, objective=pf.bits_per_dim_loss(levels=K), **common
    )
    common.pop("context", None)
    ood = {k: v for k, v in sets.items() if k not in NOT_OOD}
    return sets, flow.eval(), ood, common


def run_digits_classes(args) -> tuple[pf.diagnostics.OODReport, float]:
    """``--classes``: the flow conditioned on the one-hot class of each training image, scored
    as :class:`pyroflows.ContextMixture` over the five classes (training frequencies). No
    background or ensemble rows: those train copies of an unconditional flow."""
    t0 = time.perf_counter()
    sets, flow, ood, _ = _digits_fit(args, context_dim=CLASSES)
    mixture = pf.ContextMixture.from_labels(flow, sets["train labels"], num_classes=CLASSES)
    options = dict(reference=sets["reference"], levels=K, seed=args.seed)
    methods = ["likelihood", "typicality", "complexity", "combined"]
    report = pf.ood_benchmark(mixture, sets["test"], ood, methods=methods, **options)
    no_ensemble = argparse.Namespace(**{**vars(args), "ensemble": 0})
    report.rows += better_estimates(mixture, sets["test"], ood, no_ensemble, {}, **options)
    for r in report.rows:
        r["method"] = "classes mixture, " + r["method"]
    return report, time.perf_counter() - t0


def run_digits(args) -> tuple[pf.diagnostics.OODReport, float]:
    t0 = time.perf_counter()
    sets, flow, ood, common = _digits_fit(args)
    options = dict(reference=sets["reference"], levels=K, train_data=sets["train"], seed=args.seed)
    fit_options = dict(steps=args.steps, **common)
    report = pf.ood_benchmark(
        flow,
        sets["test"],
        ood,
        background="perturbed",
        mutation_rate=args.mutation_rate,
        background_fit=fit_options,
        **options,
    )
    report.rows += better_estimates(flow, sets["test"], ood, args, fit_options, **options)
    report.rows += nearest_neighbour_rows(sets["train"], sets["test"], ood)
    return report, time.perf_counter() - t0


def run_table(args) -> tuple[pf.diagnostics.OODReport, float]:
    g = torch.Generator().manual_seed(args.seed)
    train, ref, test = (gaussian_mixture(n, 0.0, g) for n in (4000, 1000, 1000))
    ood = gaussian_mixture(1000, args.table_shift, g)
    flow = pf.MAF(8, num_layers=5, hidden_dims=(64, 64))
    common = dict(batch_size=256, lr=1e-3, lr_schedule="cosine", progress=False, seed=args.seed)
    t0 = time.perf_counter()
    pf.fit(flow, train, steps=args.table_steps, **common)
    flow.eval()
    sets = {f"mixture shifted by {args.table_shift:g}": ood}
    options = dict(reference=ref, train_data=train, precision=0.01, seed=args.seed)
    fit_options = dict(steps=args.table_steps, **common)
    report = pf.ood_benchmark(
        flow,
        test,
        sets,
        background="perturbed",
        mutation_rate=args.mutation_rate,
        background_fit=fit_options,
        **options,
    )
    report.rows += better_estimates(flow, test, sets, args, fit_options, **options)
    report.rows += nearest_neighbour_rows(train, test, sets)
    return report, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per digits flow")
    parser.add_argument("--table-steps", type=int, default=1000, help="steps per table flow")
    parser.add_argument("--mutation-rate", type=float, default=0.3)
    parser.add_argument("--table-shift", type=float, default=1.0)
    parser.add_argument(
        "--ensemble", type=int, default=4, help="extra flows of the ensemble rows (0: none)"
    )
    parser.add_argument(
        "--draws", type=int, default=8, help="dequantisation draws per image of those rows"
    )
    parser.add_argument(
        "--flow",
        choices=tuple(DIGIT_FLOWS),
        default="glow",
        help="the digits flow (and its copies)",
    )
    parser.add_argument("--skip-table", action="store_true", help="run the digits case only")
    parser.add_argument(
        "--classes",
        action="store_true",
        help="also train the flow on the training labels and score its ContextMixture (nsf, maf)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.classes and args.flow == "glow":
        parser.error("--classes needs a vector flow: --flow nsf or --flow maf")
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    digits_report, t_digits = run_digits(args)
    name = {"glow": "Glow", "nsf": "NSF", "maf": "MAF"}[args.flow]
    print(f"## digits 0-4 ({name}, {args.steps} steps + background; {t_digits:.0f} s)\n")
    print(digits_report)
    reports = [digits_report]
    if args.classes:
        classes_report, t_classes = run_digits_classes(args)
        print(
            f"\n## digits 0-4, class-conditional {name} mixed over the classes "
            f"({args.steps} steps; {t_classes:.0f} s)\n"
        )
        print(classes_report)
        reports.append(classes_report)
    if not args.skip_table:
        table_report, t_table = run_table(args)
        print(
            f"\n## Gaussian-mixture table (MAF, {args.table_steps} steps + background; "
            f"{t_table:.0f} s)\n"
        )
        print(table_report)
        reports.append(table_report)
    print("\n## AUROC (rows: methods; columns: OOD sets)\n")
    print(auroc_matrix(reports))


def auroc_matrix(reports: list[pf.diagnostics.OODReport]) -> str:
    """One markdown row per method, one column per OOD set ("-" where a method was not run on
    it), and the smallest AUROC over the synthetic digit shifts (every set but ``classes 5-9``)."""
    rows = [r for rep in reports for r in rep.rows]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    sets = list(dict.fromkeys(r["dataset"] for r in rows))
    value = {(r["dataset"], r["method"]): r["auroc"] for r in rows}
    synthetic = [
        s for s in dict.fromkeys(r["dataset"] for r in reports[0].rows) if s != "classes 5-9"
    ]
    head = ["method", *sets, "min synthetic"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m in methods:
        cells = [f"{value[s, m]:.3f}" if (s, m) in value else "-" for s in sets]
        syn = [value[s, m] for s in synthetic if (s, m) in value]
        cells.append(f"{min(syn):.3f}" if syn else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
