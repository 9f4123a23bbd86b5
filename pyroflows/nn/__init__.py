"""Conditioner networks shared by every flow family."""

from .made import MADE, MaskedLinear
from .mlp import MLP, with_context

__all__ = ["MADE", "MLP", "MaskedLinear", "with_context"]
