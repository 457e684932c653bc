"""Loss terms that make a latent space cluster well, as pure torch functions.

* :func:`neighbor_embedding_loss`: parametric UMAP's cross-entropy between the
  input's neighbour graph and a heavy-tailed similarity of the codes (McInnes
  et al. 2018; Sainburg et al. 2021). Used while pretraining the autoencoder so
  that the codes keep the input's neighbourhoods; a mixture fitted on such codes
  separates classes far better than on plain autoencoder codes.
* :func:`neighbor_consistency_loss` and :func:`batch_entropy`: SCAN's terms
  (Van Gansbeke et al., ECCV 2020): neighbours should share their cluster
  posterior, and the batch as a whole should use every cluster.

Every function takes tensors and returns a tensor; randomness (the choice of
negatives) enters only through an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "UMAP_A",
    "UMAP_B",
    "batch_entropy",
    "neighbor_consistency_loss",
    "neighbor_embedding_loss",
    "sample_negatives",
]

#: UMAP's curve ``1 / (1 + a d^(2b))`` fitted for ``min_dist=0, spread=1``
#: (``umap.umap_.find_ab_params(1.0, 0.0)``).
UMAP_A = 1.929
UMAP_B = 0.7915

#: Distances are clamped below at this squared value before the power: the
#: gradient of ``d^(2b)`` with ``b < 1`` is infinite at ``d = 0``.
_MIN_SQUARED_DISTANCE = 1e-8


def _log_similarity_logit(squared_distance: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """``s = log(a d^(2b))``, so that UMAP's similarity is ``q = sigmoid(-s)``."""
    return math.log(a) + b * squared_distance.clamp_min(_MIN_SQUARED_DISTANCE).log()


def sample_negatives(
    batch_size: int, n_negatives: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """In-batch indices of random negatives for each item.

    Parameters
    ----------
    batch_size : int
    n_negatives : int
    generator : torch.Generator
    device : torch.device or str, default='cpu'

    Returns
    -------
    torch.Tensor of shape (batch_size, n_negatives), int64
        Entry ``[i, m]`` is a batch row other than ``i`` (when
        ``batch_size > 1``).
    """
    # A shift in 1..batch_size-1 modulo the batch size never maps a row onto
    # itself, unlike a plain permutation.
    span = max(batch_size - 1, 1)
    shifts = 1 + torch.randint(
        span, (batch_size, n_negatives), generator=generator, device=device
    )
    rows = torch.arange(batch_size, device=device)[:, None]
    return (rows + shifts) % max(batch_size, 1)


def neighbor_embedding_loss(
    z: torch.Tensor,
    z_neighbor: torch.Tensor,
    z_negative: torch.Tensor,
    a: float = UMAP_A,
    b: float = UMAP_B,
) -> torch.Tensor:
    """Parametric UMAP's fuzzy cross-entropy for one positive and some negatives.

    With ``q(d) = 1 / (1 + a d^(2b))`` the loss of an item is
    ``-log q(d_pos) - sum_m log(1 - q(d_neg_m))``, computed in log space as
    ``softplus(s_pos) + sum_m softplus(-s_neg_m)`` with ``s = log(a d^(2b))``.

    Parameters
    ----------
    z : torch.Tensor of shape (n_samples, latent_dim)
        Codes of the items.
    z_neighbor : torch.Tensor of shape (n_samples, latent_dim)
        Codes of one input-space neighbour of each item (the positive).
    z_negative : torch.Tensor of shape (n_samples, n_negatives, latent_dim)
        Codes of items taken as non-neighbours.
    a, b : float
        UMAP's curve parameters; the defaults are ``min_dist=0``.

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        In nats; >= 0.
    """
    positive = _log_similarity_logit(((z - z_neighbor) ** 2).sum(dim=-1), a, b)
    negative = _log_similarity_logit(((z[:, None, :] - z_negative) ** 2).sum(dim=-1), a, b)
    return F.softplus(positive) + F.softplus(-negative).sum(dim=1)


def neighbor_consistency_loss(
    log_gamma: torch.Tensor, log_gamma_neighbor: torch.Tensor
) -> torch.Tensor:
    """SCAN's consistency: ``-log sum_c gamma_ic gamma_jc`` for neighbours i, j.

    Parameters
    ----------
    log_gamma, log_gamma_neighbor : torch.Tensor of shape (n_samples, n_components)
        Log cluster posteriors of the items and of one neighbour each.

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        In nats; >= 0, and 0 only when both put all mass on one shared cluster.
    """
    return -torch.logsumexp(log_gamma + log_gamma_neighbor, dim=1)


def batch_entropy(log_gamma: torch.Tensor) -> torch.Tensor:
    """Entropy of the batch's mean cluster posterior, ``H(mean_i gamma_i)``.

    Maximising it (subtracting it from a loss) keeps a batch from putting every
    item in one cluster.

    Parameters
    ----------
    log_gamma : torch.Tensor of shape (n_samples, n_components)

    Returns
    -------
    torch.Tensor
        A scalar in nats, between 0 and ``log(n_components)``.
    """
    log_mean = torch.logsumexp(log_gamma, dim=0) - math.log(log_gamma.shape[0])
    return -(log_mean.exp() * log_mean).sum()
