r"""Fitting a flow to a table of numbers in its own units: :func:`fit_table`.

What the ``pyroflows fit`` command and the demo run: standardise the columns
(:math:`z = (x - \mu) / \sigma`), fit the flow to :math:`z` with :func:`~pyroflows.fit` (its
validation split, one rule), and report per-row negative log-likelihoods in the original units,
:math:`-\log p(x) = -\log p(z) + \sum_j \log \sigma_j`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .fit import fit, validation_split

__all__ = ["exact_divergence", "fit_table"]


def exact_divergence(flow: nn.Module) -> None:
    """Switch every continuous flow inside ``flow`` to the exact divergence, so that scores carry
    no Hutchinson noise (other flows are untouched).

    Example:
        >>> import pyroflows as pf
        >>> cnf = pf.CNF(2, divergence="hutchinson")
        >>> exact_divergence(cnf)
        >>> cnf.transform.divergence
        'exact'
    """
    from ..transforms import ContinuousFlow

    for module in flow.modules():
        if isinstance(module, ContinuousFlow):
            module.set_divergence("exact")


def fit_table(
    flow: nn.Module, x: np.ndarray, *, val_fraction: float = 0.1, seed: int = 0, **kw: Any
) -> dict[str, Any]:
    """Standardise a finite table, fit ``flow`` with :func:`~pyroflows.fit` (``kw`` go there;
    ``progress`` is off unless given; ``fit`` holds out ``val_fraction`` of the rows by its own
    rule, ``pyroflows.infer.fit.validation_split``), and measure NLLs in the table's units.

    ``flow`` is fitted to the standardised rows z and models z on return; attach the
    standardiser with ``flow.standardize_(mean=st.mean, std=st.std)`` (what ``pyroflows fit``
    does before saving) to make it model the original units.

    Returns:
        ``standardizer``, ``history``, ``n_train``/``n_val``, and ``train_nll``/``val_nll``
        (mean NLL per row in the original units, on the training and held-out rows; ``val_nll``
        is None without held-out rows).

    Raises:
        ValueError: a constant column (it has no density).

    Example:
        >>> import math, pyroflows as pf
        >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(2000, 2))
        >>> flow = pf.MAF(2, num_layers=2, hidden_dims=(8,))
        >>> out = fit_table(flow, x, steps=50, lr=1e-2, seed=0)
        >>> entropy = math.log(2 * math.pi * math.e * 2.0**2)   # of N(3, 2^2 I): 4.22 nats
        >>> sorted(out), out["n_val"], abs(out["val_nll"] - entropy) < 0.15
        (['history', 'n_train', 'n_val', 'standardizer', 'train_nll', 'val_nll'], 200, True)
    """
    from ..datasets import Standardizer

    st = Standardizer.fit(x)
    if st.constant:
        raise ValueError(
            f"column(s) {', '.join(str(j + 1) for j in st.constant)} are constant; a density "
            "over a constant column does not exist, so drop those columns"
        )
    z = torch.as_tensor(st.transform(x), dtype=next(flow.parameters()).dtype)
    kw.setdefault("progress", False)
    history = fit(flow, z, val_fraction=val_fraction, seed=seed, **kw)
    train_idx, val_idx = validation_split(len(z), val_fraction, seed)
    flow.eval()
    exact_divergence(flow)

    def nll(rows: torch.Tensor) -> float | None:
        if not len(rows):
            return None
        with torch.no_grad():
            lp = torch.cat([flow.log_prob(b).double() for b in rows.split(4096)])
        return float(-lp.mean()) + st.log_det

    out = dict(train_nll=nll(z[train_idx]), val_nll=nll(z[val_idx]))
    out |= dict(n_train=len(train_idx), n_val=len(val_idx))
    return {"standardizer": st, "history": history, **out}
