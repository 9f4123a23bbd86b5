"""Flows: :class:`Flow` (a base distribution and transforms -> a Pyro distribution), model files
(:func:`save`, :func:`load`) and the presets, a module per family.

Every ``Flow`` subclass registers itself in :data:`FLOWS` by class name, which is how
:func:`load` finds a preset named in a model file; the CLI builds its ``--flow`` choices from it.
"""

from .autoregressive import IAF, MAF
from .base import FLOWS, Flow, FlowDistribution
from .continuous import CNF
from .coupling import NICE, NSF, Glow, RealNVP
from .io import _FORMAT as _FORMAT
from .io import _LEGACY_FORMAT as _LEGACY_FORMAT
from .io import _checksum as _checksum
from .io import _decode as _decode
from .io import _encode as _encode
from .io import load, save
from .mixture import ContextMixture
from .planar import Planar

__all__ = [
    "CNF",
    "FLOWS",
    "IAF",
    "MAF",
    "NICE",
    "NSF",
    "ContextMixture",
    "Flow",
    "FlowDistribution",
    "Glow",
    "Planar",
    "RealNVP",
    "load",
    "save",
]
