"""The one default size rule for conditioner networks."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["default_hidden_dims"]

_DEFAULT = (64, 64)


def default_hidden_dims(hidden_dims: Sequence[int] | None = None) -> tuple[int, ...]:
    """Hidden layer sizes of a conditioner network: ``hidden_dims`` as given, or the library's
    default, two layers of 64 units, when it is ``None``.

    Every place that sizes a dense conditioner or vector field without being told uses this rule:
    the flow presets and transform classes (``hidden_dims=None``), the lowercase Pyro-style
    helpers (``maf``, ``affine_coupling``, ... where Pyro uses :math:`10 D`) and the command
    line's ``--hidden``.

    Example:
        >>> default_hidden_dims(), default_hidden_dims([16])
        ((64, 64), (16,))
    """
    return _DEFAULT if hidden_dims is None else tuple(int(h) for h in hidden_dims)
