"""Lower bounds on the mutual information I(x; z) and the critic network T(x, z).

Every bound is computed from a matrix of critic scores over a mini-batch of
``n`` matched pairs ``(x_i, z_i)`` drawn from the joint distribution::

    scores[i, j] = T(x_i, z_j)        diagonal: joint pairs; off-diagonal:
                                      pairs from the product of the marginals

Two bounds, both valid for *any* critic and tight for the optimal one
(``T(x, z) = log p(z|x) - log p(z)`` up to a function of ``z`` for InfoNCE, up
to a constant for Donsker-Varadhan):

* :func:`info_nce_bound` (van den Oord et al. 2018; Poole et al. 2019):
  ``mean_i [T(x_i, z_i) - log mean_j exp T(x_j, z_i)]``. Low variance, but
  never above ``log n`` nats.
* :func:`donsker_varadhan_bound`, the bound MINE maximises (Belghazi et al.,
  ICML 2018): ``mean_i T(x_i, z_i) - log mean_{i != j} exp T(x_i, z_j)``, with
  the ``n (n - 1)`` off-diagonal pairs as samples of the marginals. Not capped,
  higher variance.

A Gaussian encoder knows its own density ``q(z|x)``, which is the optimal
InfoNCE critic for the pairs it generates: :func:`gaussian_encoder_scores`
gives its score matrix, so estimating I(x; z) of a VAE's encoding
distribution costs one ``n x n x n_components`` tensor and no training.

:class:`PairCritic` is separable, ``T(x, z) = <f(x), g(z)>``, so the whole
score matrix is one matrix product instead of ``n^2`` network evaluations
(Poole et al. show separable critics estimate as well as concatenating ones).
Its bias units make ``c(x) + d(z)`` terms representable, so it can express
``log q(z|x) - log p(z)`` for any exponential-family posterior whose
sufficient statistics ``g`` learns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ._engine import UpdateStep
from ._modules import diagonal_gaussian_log_prob, make_mlp

__all__ = [
    "PairCritic",
    "donsker_varadhan_bound",
    "encoder_mutual_information",
    "gaussian_encoder_scores",
    "info_nce_bound",
    "with_critic_step",
]

#: Width of the critic's feature maps f(x) and g(z).
_EMBEDDING_DIM = 32


class PairCritic(nn.Module):
    """A separable critic ``T(x, z) = <f(x), g(z)>`` of two MLPs.

    Serves as MINE's statistics network and as AVB's discriminator.

    Parameters
    ----------
    n_features : int
        Width of ``x``.
    n_components : int
        Width of ``z``.
    hidden_layer_sizes : sequence of int
        Hidden widths of ``f`` (input side first); ``g`` uses them reversed,
        like a decoder.
    activation : str
        One of :data:`~sklearn_vae.neural._modules.ACTIVATIONS`.
    embedding_dim : int, default=32
        Width of ``f(x)`` and ``g(z)``.

    Attributes
    ----------
    data_features : torch.nn.Sequential
        ``f``.
    latent_features : torch.nn.Sequential
        ``g``.

    Examples
    --------
    >>> import torch
    >>> critic = PairCritic(5, 2, (8,), "relu")
    >>> critic(torch.zeros(3, 5), torch.zeros(3, 2)).shape
    torch.Size([3])
    >>> critic.pairwise(torch.zeros(3, 5), torch.zeros(4, 2)).shape
    torch.Size([3, 4])
    """

    def __init__(
        self,
        n_features: int,
        n_components: int,
        hidden_layer_sizes: Sequence[int],
        activation: str,
        embedding_dim: int = _EMBEDDING_DIM,
    ) -> None:
        super().__init__()
        self.data_features = make_mlp(
            n_features, hidden_layer_sizes, embedding_dim, activation
        )
        self.latent_features = make_mlp(
            n_components, tuple(reversed(hidden_layer_sizes)), embedding_dim, activation
        )

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Return ``T(x, z)`` of matched pairs.

        Parameters
        ----------
        x : torch.Tensor of shape (n_samples, n_features)
        z : torch.Tensor of shape (..., n_samples, n_components)
            Leading axes (several draws per row) broadcast against ``x``.

        Returns
        -------
        torch.Tensor of shape (..., n_samples)
        """
        return (self.data_features(x) * self.latent_features(z)).sum(dim=-1)

    def pairwise(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Return the score matrix ``T(x_i, z_j)`` of every pair.

        Parameters
        ----------
        x : torch.Tensor of shape (n_x, n_features)
        z : torch.Tensor of shape (n_z, n_components)

        Returns
        -------
        torch.Tensor of shape (n_x, n_z)
        """
        return self.data_features(x) @ self.latent_features(z).T


def gaussian_encoder_scores(
    z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """Return ``log q(z_j | x_i)`` for every pair, from a Gaussian encoder.

    Parameters
    ----------
    z : torch.Tensor of shape (n_samples, n_components)
        One draw from ``q(z | x_i)`` per row.
    mean, log_var : torch.Tensor of shape (n_samples, n_components)
        The encoder's outputs for the same rows.

    Returns
    -------
    torch.Tensor of shape (n_samples, n_samples)
        ``scores[i, j] = log q(z_j | x_i)``, in nats.
    """
    return diagonal_gaussian_log_prob(z[None, :, :], mean[:, None, :], log_var[:, None, :])


def encoder_mutual_information(
    z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """Estimate I(x; z) of a Gaussian encoder from one mini-batch.

    The InfoNCE bound with the encoder's own density as critic:
    ``mean_i [log q(z_i|x_i) - log mean_j q(z_i|x_j)]``, i.e. the
    mini-batch's aggregate posterior stands in for ``q(z)``. A lower bound, in
    nats, at most ``log(n_samples)``; what every Gaussian-encoder objective
    records as ``"mutual_information"`` once per epoch.

    Parameters
    ----------
    z : torch.Tensor of shape (n_samples, n_components)
        One draw from ``q(z|x_i)`` per row.
    mean, log_var : torch.Tensor of shape (n_samples, n_components)

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    return info_nce_bound(gaussian_encoder_scores(z, mean, log_var))


def info_nce_bound(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE lower bound on I(x; z), in nats, at most ``log n``.

    Parameters
    ----------
    scores : torch.Tensor of shape (n, n)
        ``T(x_i, z_j)``; the diagonal holds the joint pairs.

    Returns
    -------
    torch.Tensor
        A scalar.

    Examples
    --------
    >>> import torch
    >>> float(info_nce_bound(torch.zeros(4, 4)))  # an uninformative critic
    0.0
    """
    n = scores.shape[0]
    log_marginal = torch.logsumexp(scores, dim=0) - math.log(n)
    return (torch.diagonal(scores) - log_marginal).mean()


def donsker_varadhan_bound(scores: torch.Tensor) -> torch.Tensor:
    """MINE's Donsker-Varadhan lower bound on I(x; z), in nats.

    Parameters
    ----------
    scores : torch.Tensor of shape (n, n), n >= 2
        ``T(x_i, z_j)``; the diagonal holds the joint pairs, the off-diagonal
        entries serve as samples of the product of the marginals.

    Returns
    -------
    torch.Tensor
        A scalar.

    Examples
    --------
    >>> import torch
    >>> float(donsker_varadhan_bound(torch.zeros(4, 4)))
    0.0
    """
    n = scores.shape[0]
    diagonal = torch.eye(n, dtype=torch.bool, device=scores.device)
    # Row-wise then over rows: a single logsumexp over the flattened matrix is
    # several times slower on CPU, forward and backward.
    log_row_sums = torch.logsumexp(scores.masked_fill(diagonal, -math.inf), dim=1)
    log_mean_marginal = torch.logsumexp(log_row_sums, dim=0) - math.log(n * (n - 1))
    return torch.diagonal(scores).mean() - log_mean_marginal


def with_critic_step(model: nn.Module, steps: Sequence[UpdateStep]) -> list[UpdateStep]:
    """Give ``model.critic`` its own optimiser step, first in every training step.

    The critic step minimises the ``"critic_loss"`` term; the critic's
    parameters are removed from the other steps, so an objective that uses the
    critic's scores in its ``"loss"`` cannot move the critic.

    Parameters
    ----------
    model : torch.nn.Module
        Has a ``critic`` submodule.
    steps : sequence of UpdateStep
        The steps of the objective without a critic.

    Returns
    -------
    list of UpdateStep

    Raises
    ------
    ValueError
        If ``model`` has no critic, e.g. a warm start of networks fitted
        under an objective without one.
    """
    if not hasattr(model, "critic"):
        raise ValueError(
            "This objective trains a critic network, which the model does not "
            "have: it was fitted with another objective. Refit with "
            "warm_start=False to build the networks the objective needs."
        )
    critic_parameters = tuple(model.critic.parameters())
    critic_ids = {id(parameter) for parameter in critic_parameters}
    return [
        UpdateStep("critic", "critic_loss", critic_parameters),
        *(
            UpdateStep(
                step.name,
                step.loss,
                tuple(p for p in step.parameters if id(p) not in critic_ids),
            )
            for step in steps
        ),
    ]
