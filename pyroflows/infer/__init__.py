"""Training and inference: maximum likelihood (:func:`fit`) and variational inference
(:func:`fit_svi`), sharing one training loop (:mod:`pyroflows.infer.engine`) whose options are
declared once (:class:`LoopConfig`); flow guides (:class:`AutoFlow`); the flow-matching objective
(:func:`flow_matching_loss`); tables in their own units (:func:`fit_table`)."""

from .autoguide import AutoFlow
from .config import LoopConfig
from .engine import History
from .fit import fit
from .flow_matching import flow_matching_loss, ot_pair
from .svi import TraceSTL_ELBO, anneal_beta, fit_svi
from .table import fit_table

__all__ = [
    "AutoFlow",
    "History",
    "LoopConfig",
    "TraceSTL_ELBO",
    "anneal_beta",
    "fit",
    "fit_svi",
    "fit_table",
    "flow_matching_loss",
    "ot_pair",
]
