"""Optional dependencies: matplotlib (extra ``plot``) and scikit-learn (extra ``data``).

``import pyroflows`` needs neither; a function that does imports it through :func:`require`, which
raises an :class:`ImportError` that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "require"]

#: top-level module -> (distribution to install, pyroflows extra that installs it)
EXTRAS = {"matplotlib": ("matplotlib", "plot"), "sklearn": ("scikit-learn", "data")}


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.figure"``) for ``what``, or say how to install it.

    Raises:
        ImportError: when the module is missing, with the ``pip install "pyroflows[extra]"``
            line that installs it.

    Example:
        >>> require("matplotlib.figure", "plotting").Figure.__name__
        'Figure'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        dist, extra = EXTRAS.get(top, (top, "all"))
        raise ImportError(
            f'{what} needs {dist}, which is not installed: pip install "pyroflows[{extra}]" '
            f"(or pip install {dist})."
        ) from exc
