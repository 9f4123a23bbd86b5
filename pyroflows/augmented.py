r"""Augmented flows (Dupont et al. 2019): a flow on :math:`(x, a) \in \mathbb{R}^{d+k}`, a
distribution over :math:`x \in \mathbb{R}^d`.

A flow over the joint :math:`p(x, a)` leaves the marginal :math:`p(x) = \int p(x, a)\, da`
intractable. With a learnable Gaussian :math:`q(a \mid x)` (:class:`GaussianAuxiliary`),

* ``log_prob(x)`` returns the importance-weighted lower bound [2] with :math:`S` samples
  :math:`a_s \sim q(a \mid x)`,

  .. math:: \log p(x) \ge \mathcal{L}_S(x) = \mathbb{E}\Big[\log \frac1S \sum_{s=1}^S
            \frac{p(x, a_s)}{q(a_s \mid x)}\Big],

  which is the variational bound :math:`\mathbb{E}_q[\log p(x, a) - \log q(a \mid x)]` for
  :math:`S = 1` and tightens as :math:`S` grows. It is a BOUND (and a random estimate of it),
  not the density; maximising it trains the flow and :math:`q` together [1].
* ``sample`` draws :math:`(x, a)` from the flow and drops :math:`a`.
* ``rsample_and_log_prob`` draws :math:`(x, a)` jointly and returns
  :math:`\log p(x, a) - \log q(a \mid x)`, whose expectation *exceeds* :math:`\mathbb{E}\log p(x)`
  by :math:`\mathbb{E}_x \mathrm{KL}(p(a \mid x) \,\|\, q(a \mid x))`. In an ELBO
  :math:`\mathbb{E}[\log \pi(x) - \log p(x)]` it therefore keeps the ELBO a lower bound
  (auxiliary-variable variational inference [3]), so an augmented flow is a valid guide.

The distribution's ``event_shape`` is :math:`(d,)`, the data side, as Pyro expects.

References:
    [1] E. Dupont, A. Doucet, Y. W. Teh. Augmented Neural ODEs. NeurIPS 2019.
    [2] Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    [3] R. Ranganath, D. Tran, D. Blei. Hierarchical Variational Models. ICML 2016.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor, nn
from torch.distributions import constraints

from .nn.mlp import MLP
from .transforms.elementwise import soft_clamp

__all__ = ["AugmentedFlowDistribution", "GaussianAuxiliary"]


class GaussianAuxiliary(nn.Module):
    r""":math:`q(a \mid x, c) = \mathcal{N}(\mu(x, c), \operatorname{diag} \sigma(x, c)^2)`, an
    MLP with soft-bounded log-scales; it starts as :math:`\mathcal{N}(0, I)`.

    Args:
        data_dim: dimension :math:`d` of :math:`x`.
        augment_dim: dimension :math:`k` of :math:`a`.
        hidden_dims: hidden sizes of the MLP.
        context_dim: context size (0: none).
        log_scale_bound: soft bound on the log-scales.

    Example:
        >>> q = GaussianAuxiliary(2, 3, hidden_dims=(8,))
        >>> d = q(torch.randn(5, 2))
        >>> d.batch_shape, d.event_shape, bool((d.mean == 0).all())
        (torch.Size([5]), torch.Size([3]), True)
    """

    def __init__(
        self,
        data_dim: int,
        augment_dim: int,
        hidden_dims: Sequence[int] = (32, 32),
        *,
        context_dim: int = 0,
        log_scale_bound: float = 3.0,
    ) -> None:
        super().__init__()
        self.net = MLP(data_dim, 2 * augment_dim, hidden_dims, context_dim=context_dim)
        self.log_scale_bound = log_scale_bound

    def forward(self, x: Tensor, context: Tensor | None = None) -> dist.TorchDistribution:
        """The Gaussian :math:`q(a \\mid x, c)` (batch shape: ``x``'s and the context's)."""
        loc, raw = self.net(x, context).chunk(2, dim=-1)
        scale = soft_clamp(raw, self.log_scale_bound).exp()
        return dist.Normal(loc, scale).to_event(1)


class AugmentedFlowDistribution(TorchDistribution):
    r"""Distribution over :math:`x` of a flow on :math:`(x, a)`; ``log_prob`` is a lower bound.

    Args:
        joint: the flow's distribution over :math:`(x, a)` (event shape :math:`(d + k,)`,
            :math:`x` first), e.g. a :class:`~pyroflows.FlowDistribution`.
        auxiliary: :math:`q(a \mid x, c)`, a module ``(x, context) -> distribution``.
        context: the context (``None`` for unconditional flows).
        data_dim: :math:`d`.
        num_samples: :math:`S`, the importance samples of ``log_prob`` (more: tighter, dearer).

    Example:
        >>> import pyroflows as pf
        >>> flow = pf.CNF(2, hidden_dims=(8,), augment_dim=1)
        >>> d = flow()
        >>> d.event_shape, d.sample((4,)).shape
        (torch.Size([2]), torch.Size([4, 2]))
        >>> x = torch.zeros(3, 2)   # identity flow, q = N(0, I): the bound is exact
        >>> d.log_prob(x)
        tensor([-1.8379, -1.8379, -1.8379], grad_fn=<SubBackward0>)
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        joint: dist.TorchDistribution,
        auxiliary: nn.Module,
        context: Tensor | None = None,
        *,
        data_dim: int,
        num_samples: int = 1,
        validate_args: bool | None = None,
    ) -> None:
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}.")
        if not 0 < data_dim < joint.event_shape[-1]:
            raise ValueError(
                f"data_dim must lie between 1 and the joint dimension - 1 "
                f"({joint.event_shape[-1] - 1}); got {data_dim}."
            )
        self.joint, self.auxiliary, self.context = joint, auxiliary, context
        self.data_dim, self.num_samples = int(data_dim), int(num_samples)
        super().__init__(joint.batch_shape, torch.Size([data_dim]), validate_args=False)

    def _split(self, xa: Tensor) -> tuple[Tensor, Tensor]:
        return xa[..., : self.data_dim], xa[..., self.data_dim :]

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        """Reparameterised samples of :math:`x` (the flow's :math:`a` is dropped)."""
        return self._split(self.joint.rsample(torch.Size(sample_shape)))[0]

    def sample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        """Samples of :math:`x` without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_and_log_prob(self, sample_shape: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
        r"""Samples :math:`x` and :math:`\log p(x, a) - \log q(a \mid x)` with :math:`(x, a)`
        drawn jointly in one pass (an upper bound of :math:`\log p(x)` in expectation)."""
        xa, lp = self.joint.rsample_and_log_prob(torch.Size(sample_shape))
        x, a = self._split(xa)
        return x, lp - self.auxiliary(x, self.context).log_prob(a)

    def log_prob(self, value: Tensor) -> Tensor:
        """Importance-weighted lower bound on :math:`\\log p(x)` with ``num_samples`` samples."""
        if not isinstance(value, Tensor):
            raise TypeError(f"Expected a torch.Tensor; got {type(value).__name__}.")
        if value.shape[-1:] != (self.data_dim,):
            raise ValueError(
                f"Expected data shape (..., {self.data_dim}); got {tuple(value.shape)}."
            )
        q = self.auxiliary(value, self.context)
        a = q.rsample((self.num_samples,))
        x = value.expand(*a.shape[:-1], self.data_dim)
        log_w = self.joint.log_prob(torch.cat((x, a), dim=-1)) - q.log_prob(a)
        return torch.logsumexp(log_w, dim=0) - math.log(self.num_samples)
