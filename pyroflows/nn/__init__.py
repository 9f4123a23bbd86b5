"""Conditioner networks shared by every flow family."""

from .conv import ConvNet, with_context_channels
from .defaults import default_hidden_dims
from .made import MADE, MaskedLinear
from .mlp import MLP, with_context
from .vector_field import ConcatSquashLinear, VectorField

__all__ = [
    "MADE",
    "MLP",
    "ConcatSquashLinear",
    "ConvNet",
    "MaskedLinear",
    "VectorField",
    "default_hidden_dims",
    "with_context",
    "with_context_channels",
]
