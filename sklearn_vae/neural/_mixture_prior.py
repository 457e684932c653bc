"""The learned Gaussian-mixture prior over a latent space (VaDE's p(c) p(z|c)).

Generative model (Jiang et al., IJCAI 2017)::

    c ~ Cat(pi),   z | c ~ N(mu_c, Sigma_c),   x | z ~ p(x|z)

with ``Sigma_c`` diagonal (VaDE's choice), spherical, or full. The module owns
the mixture's parameters in unconstrained form -- mixture weights as softmax
logits; each component's precision ``Sigma_c^-1 = A_c^T A_c`` through its
lower-triangular Cholesky factor ``A_c``, whose diagonal is
``exp(-log_variances / 2)`` and whose strictly lower entries (``'full'`` only)
are free -- so no value it can hold is an invalid covariance or a set of
weights that does not sum to one. The parameters are set in closed form from
the codes' statistics (below), not by gradient steps. Every density is computed from the whitened
difference ``A_c (z - mu_c)`` (no matrix inverse), and every logarithm of a
probability is taken as a ``log_softmax`` or a ``logsumexp``, never as ``log``
of a computed probability. For diagonal covariances ``log_variances`` are the
log-variances; for full ones they are the conditional log-variances of the
Cholesky order.

With the encoder's q(z|x) = N(mu~, diag sigma~^2) and q(c|x) = gamma, the
negative ELBO splits into the reconstruction term and the two Kullback-Leibler
terms returned by :meth:`GaussianMixturePrior.kl_terms`::

    KL(q(z,c|x) || p(z,c))
      = sum_c gamma_c KL(N(mu~, sigma~^2) || N(mu_c, Sigma_c))        'kl_latent'
      + sum_c gamma_c log(gamma_c / pi_c)                             'kl_cluster'

which is exactly the expression of the VaDE paper for diagonal ``Sigma_c``
(the 2 pi constants of the two Gaussian terms cancel). See
``/shared/seed/NOTES.md``.

Given the responsibilities, the mixture parameters that maximise that ELBO
have a closed form (an M-step, as in EM):
:meth:`GaussianMixturePrior.sufficient_statistics` summarises the codes and
:meth:`GaussianMixturePrior.maximization_step` sets the parameters from the
summary. :class:`MixtureStatistics` blends summaries of successive batches
(stepwise EM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._distributed import all_reduce_sum, current_process_group
from ._modules import GaussianEncoder, LikelihoodDecoder, VariationalAutoencoder

__all__ = [
    "COVARIANCE_TYPES",
    "GaussianMixturePrior",
    "MixturePriorVAE",
    "MixtureStatistics",
    "map_weights",
    "split_collapsed_components",
]

_LOG_2PI = math.log(2.0 * math.pi)

#: The latent mixture's covariance types, in GaussianMixture's vocabulary.
COVARIANCE_TYPES = ("full", "diag", "spherical")

#: Floor on variances handed to :meth:`GaussianMixturePrior.initialize` and
#: added to the covariances of the M-step (GaussianMixture's ``reg_covar``), so
#: that a degenerate component (e.g. all its codes identical) keeps a finite,
#: invertible covariance.
_MIN_VARIANCE = 1e-6

#: A component whose responsibilities sum to fewer rows than this keeps its
#: parameters in an M-step: its means and covariances are not defined by the
#: data.
_MIN_COMPONENT_ROWS = 1e-6


@dataclass
class MixtureStatistics:
    """Responsibility-weighted sufficient statistics of latent codes, per row.

    Means over rows (not sums), so that summaries of batches of any size blend
    as stepwise EM's running averages.

    Attributes
    ----------
    n_samples : float
        Rows summarised (or seen, after :meth:`blend`).
    counts : torch.Tensor of shape (n_components,)
        ``mean_i gamma_ic``.
    first : torch.Tensor of shape (n_components, latent_dim)
        ``mean_i gamma_ic mu~_i``.
    second : torch.Tensor of shape (n_components, latent_dim) or (n_components, latent_dim, latent_dim)
        ``mean_i gamma_ic E_q[z z^T]`` with ``E_q[z z^T] = mu~ mu~^T + diag
        sigma~^2``: its diagonal for ``'diag'`` and ``'spherical'``, the whole
        matrix for ``'full'``.
    """

    n_samples: float
    counts: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor

    def merge(self, other: MixtureStatistics) -> MixtureStatistics:
        """Return the statistics of both sets of rows pooled (exact)."""
        total = self.n_samples + other.n_samples
        share = other.n_samples / total
        return self.blend(other, share, n_samples=total)

    def all_reduce(self) -> MixtureStatistics:
        """Return the statistics of every rank's rows pooled (exact).

        Under a process group each rank summarises its own shard; the pooled
        summary, identical on every rank, keeps the ranks' priors identical.
        One collective for all fields; the statistics themselves outside a
        multi-process run.

        Returns
        -------
        MixtureStatistics
        """
        if current_process_group() is None:
            return self
        tensors = [self.counts, self.first, self.second]
        n_rows = torch.tensor([self.n_samples], dtype=self.counts.dtype, device=self.counts.device)
        # Per-row means become sums, which add over ranks.
        flat = torch.cat([n_rows, *(self.n_samples * tensor.reshape(-1) for tensor in tensors)])
        reduced = all_reduce_sum(flat)
        total = float(reduced[0])
        pieces = (reduced[1:] / total).split([tensor.numel() for tensor in tensors])
        return MixtureStatistics(
            total, *(piece.view(tensor.shape) for piece, tensor in zip(pieces, tensors))
        )

    def blend(
        self, other: MixtureStatistics, step: float, *, n_samples: float | None = None
    ) -> MixtureStatistics:
        """Return ``(1 - step) * self + step * other`` (stepwise EM's update).

        Parameters
        ----------
        other : MixtureStatistics
            The new batch's statistics.
        step : float
            ``eta_t`` in [0, 1].
        n_samples : float, default=None
            Rows the result stands for; default ``self.n_samples +
            other.n_samples`` (the rows seen).

        Returns
        -------
        MixtureStatistics
        """
        def mix(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            return torch.lerp(old, new.to(old.dtype), step)

        return MixtureStatistics(
            self.n_samples + other.n_samples if n_samples is None else n_samples,
            mix(self.counts, other.counts),
            mix(self.first, other.first),
            mix(self.second, other.second),
        )


def map_weights(
    counts: torch.Tensor, n_samples: float, concentration: float | None
) -> torch.Tensor:
    """Mixture weights that maximise the likelihood times a Dirichlet prior.

    ``pi_c = max(N_c + alpha - 1, 0) / sum_c' max(N_c' + alpha - 1, 0)`` with
    ``N_c = n_samples * counts_c`` (the rows of component ``c``): the MAP
    estimate under a symmetric ``Dir(alpha)``, the maximum-likelihood
    ``N_c / N`` without a prior. Components that ``alpha < 1`` empties get the
    smallest positive weight of the dtype, so their log-weight stays finite.

    Parameters
    ----------
    counts : torch.Tensor of shape (n_components,)
        Mean responsibility of each component (:attr:`MixtureStatistics.counts`).
    n_samples : float
        Rows the counts summarise.
    concentration : float or None
        ``alpha``; None for no prior.

    Returns
    -------
    torch.Tensor of shape (n_components,)
        Sums to one.

    Examples
    --------
    >>> import torch
    >>> map_weights(torch.tensor([0.75, 0.25]), 100, None).tolist()
    [0.75, 0.25]
    >>> map_weights(torch.tensor([0.75, 0.25]), 100, 51.0).tolist()
    [0.625, 0.375]
    """
    rows = counts * n_samples
    if concentration is not None:
        rows = (rows + (concentration - 1.0)).clamp_min(0.0)
    total = rows.sum()
    if not total > 0:  # alpha < 1 and (almost) no data: no information
        rows, total = torch.ones_like(rows), float(len(rows))
    return (rows / total).clamp_min(torch.finfo(rows.dtype).tiny)


class GaussianMixturePrior(nn.Module):
    """A Gaussian mixture with full, diagonal or spherical covariances, as a module.

    Parameters
    ----------
    n_components : int
        Number of mixture components (clusters).
    latent_dim : int
        Dimension of the latent space.
    covariance_type : {'full', 'diag', 'spherical'}, default='diag'
        ``'full'``: each component has its own covariance matrix;
        ``'diag'``: its own per-dimension variances; ``'spherical'``: one
        variance shared by all dimensions.

    Attributes
    ----------
    weight_logits : torch.nn.Parameter of shape (n_components,)
        Mixture weights are ``softmax(weight_logits)``.
    means : torch.nn.Parameter of shape (n_components, latent_dim)
    log_variances : torch.nn.Parameter of shape (n_components, latent_dim) or (n_components, 1)
        Minus twice the log-diagonal of each precision Cholesky factor: the
        log-variances for ``'diag'``, one per component for ``'spherical'``
        (shape ``(n_components, 1)``), the conditional log-variances in the
        Cholesky order for ``'full'``.
    precision_cholesky_lower : torch.nn.Parameter of shape (n_components, latent_dim * (latent_dim - 1) // 2)
        Only for ``'full'``: the strictly lower entries of each precision
        Cholesky factor, row by row.

    Examples
    --------
    >>> import torch
    >>> prior = GaussianMixturePrior(3, 2)
    >>> prior.log_prob(torch.zeros(5, 2)).shape
    torch.Size([5])
    """

    def __init__(
        self, n_components: int, latent_dim: int, covariance_type: str = "diag"
    ) -> None:
        super().__init__()
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got "
                f"{covariance_type!r}."
            )
        self.n_components = int(n_components)
        self.latent_dim = int(latent_dim)
        self.covariance_type = covariance_type
        variance_columns = 1 if covariance_type == "spherical" else latent_dim
        self.weight_logits = nn.Parameter(torch.zeros(n_components))
        self.means = nn.Parameter(torch.zeros(n_components, latent_dim))
        self.log_variances = nn.Parameter(torch.zeros(n_components, variance_columns))
        if covariance_type == "full":
            n_lower = latent_dim * (latent_dim - 1) // 2
            self.precision_cholesky_lower = nn.Parameter(torch.zeros(n_components, n_lower))

    # -- the mixture's parameters in natural form ---------------------------------
    @property
    def log_weights(self) -> torch.Tensor:
        """Log mixture weights, shape ``(n_components,)``."""
        return torch.log_softmax(self.weight_logits, dim=0)

    @property
    def weights(self) -> torch.Tensor:
        """Mixture weights, shape ``(n_components,)``; they sum to one."""
        return torch.softmax(self.weight_logits, dim=0)

    def precision_cholesky(self) -> torch.Tensor:
        """Lower-triangular ``A_c`` with ``Sigma_c^-1 = A_c^T A_c``, ``(n_components, J, J)``."""
        scale = torch.exp(-0.5 * self._log_variances())
        factor = torch.diag_embed(scale)
        if self.covariance_type == "full":
            factor = factor + self._strictly_lower_factor()
        return factor

    def covariance_matrices(self) -> torch.Tensor:
        """``Sigma_c``, shape ``(n_components, latent_dim, latent_dim)``."""
        identity = torch.eye(self.latent_dim, device=self.means.device, dtype=self.means.dtype)
        inverse = torch.linalg.solve_triangular(
            self.precision_cholesky(), identity.expand(self.n_components, -1, -1), upper=False
        )
        return inverse @ inverse.transpose(1, 2)

    @property
    def variances(self) -> torch.Tensor:
        """Marginal variances ``diag Sigma_c``, shape ``(n_components, latent_dim)``."""
        if self.covariance_type == "full":
            return torch.diagonal(self.covariance_matrices(), dim1=1, dim2=2)
        return self._log_variances().exp()

    def covariances(self) -> torch.Tensor:
        """The covariances in GaussianMixture's ``covariances_`` layout.

        Returns
        -------
        torch.Tensor
            ``(n_components, J, J)`` for ``'full'``, ``(n_components, J)`` for
            ``'diag'``, ``(n_components,)`` for ``'spherical'``.
        """
        if self.covariance_type == "full":
            return self.covariance_matrices()
        if self.covariance_type == "spherical":
            return self.log_variances[:, 0].exp()
        return self.log_variances.exp()

    def _log_variances(self) -> torch.Tensor:
        return self.log_variances.expand(self.n_components, self.latent_dim)

    def _lower_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        indices = torch.tril_indices(
            self.latent_dim, self.latent_dim, offset=-1, device=self.means.device
        )
        return indices[0], indices[1]

    def _strictly_lower_factor(self) -> torch.Tensor:
        """The strictly lower part of ``A_c`` as matrices (``'full'`` only)."""
        rows, columns = self._lower_indices()
        components = torch.arange(self.n_components, device=rows.device)[:, None]
        values = self.precision_cholesky_lower
        matrices = values.new_zeros(self.n_components, self.latent_dim, self.latent_dim)
        return matrices.index_put((components, rows[None], columns[None]), values)

    def _component_parameters(self) -> list[nn.Parameter]:
        """The parameters that hold one component's covariance, row by row."""
        parameters = [self.log_variances]
        if self.covariance_type == "full":
            parameters.append(self.precision_cholesky_lower)
        return parameters

    def _whiten(self, difference: torch.Tensor) -> torch.Tensor:
        """``A_c (z - mu_c)`` for differences of shape ``(..., n_components, J)``."""
        whitened = difference * torch.exp(-0.5 * self._log_variances())
        if self.covariance_type == "full":
            whitened = whitened + torch.einsum(
                "kij,...kj->...ki", self._strictly_lower_factor(), difference
            )
        return whitened

    def _precision_diagonal(self) -> torch.Tensor:
        """``diag Sigma_c^-1 = diag A_c^T A_c``, shape ``(n_components, J)``."""
        diagonal = torch.exp(-self._log_variances())
        if self.covariance_type == "full":
            _, columns = self._lower_indices()
            squares = self.precision_cholesky_lower.square()
            diagonal = diagonal.index_add(1, columns, squares)
        return diagonal

    def _set_weights(self, weights: torch.Tensor) -> None:
        log_weights = weights.clamp_min(torch.finfo(weights.dtype).tiny).log()
        self.weight_logits.copy_(log_weights - log_weights.mean())

    def _set_covariances(self, covariances: torch.Tensor) -> None:
        """Set the covariance parameters from ``covariances()``-shaped values."""
        if self.covariance_type == "full":
            identity = torch.eye(self.latent_dim, device=covariances.device, dtype=covariances.dtype)
            cholesky = torch.linalg.cholesky(covariances)
            factor = torch.linalg.solve_triangular(
                cholesky, identity.expand(self.n_components, -1, -1), upper=False
            )
            rows, columns = self._lower_indices()
            self.log_variances.copy_(-2.0 * torch.diagonal(factor, dim1=1, dim2=2).log())
            self.precision_cholesky_lower.copy_(factor[:, rows, columns])
        else:
            variances = covariances.clamp_min(_MIN_VARIANCE)
            self.log_variances.copy_(variances.log().reshape(self.log_variances.shape))

    def initialize(
        self,
        weights: np.ndarray | torch.Tensor,
        means: np.ndarray | torch.Tensor,
        covariances: np.ndarray | torch.Tensor,
    ) -> None:
        """Set the mixture from natural parameters (e.g. a fitted GMM).

        Parameters
        ----------
        weights : array-like of shape (n_components,)
            Mixture weights; normalised here.
        means : array-like of shape (n_components, latent_dim)
        covariances : array-like
            In GaussianMixture's ``covariances_`` layout for this
            ``covariance_type``: ``(n_components, J, J)`` for ``'full'``,
            ``(n_components, J)`` for ``'diag'``, ``(n_components,)`` for
            ``'spherical'``. Per-dimension variances ``(n_components, J)`` are
            also accepted for every type (averaged for ``'spherical'``, the
            diagonal matrix for ``'full'``).
        """
        reference = self.means

        def as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
            if isinstance(array, torch.Tensor):
                array = array.detach().cpu().numpy()
            return torch.tensor(np.asarray(array, dtype=np.float64)).to(
                device=reference.device, dtype=reference.dtype
            )

        covariances_t = as_tensor(covariances)
        if self.covariance_type == "full":
            if covariances_t.ndim == 2:
                covariances_t = torch.diag_embed(covariances_t.clamp_min(_MIN_VARIANCE))
        elif self.covariance_type == "spherical":
            if covariances_t.ndim == 2:
                covariances_t = covariances_t.mean(dim=1)
        elif covariances_t.ndim == 1:
            covariances_t = covariances_t[:, None].expand(self.n_components, self.latent_dim)
        with torch.no_grad():
            weights_t = as_tensor(weights).clamp_min(0.0)
            self._set_weights(weights_t / weights_t.sum())
            self.means.copy_(as_tensor(means))
            self._set_covariances(covariances_t)

    # -- densities ----------------------------------------------------------------
    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of every component at every point, ``log N(z | mu_c, Sigma_c)``.

        Parameters
        ----------
        z : torch.Tensor of shape (n_samples, latent_dim)

        Returns
        -------
        torch.Tensor of shape (n_samples, n_components)
            In nats.
        """
        whitened = self._whiten(z[:, None, :] - self.means[None])
        mahalanobis = whitened.square().sum(dim=2)
        log_det = self._log_variances().sum(dim=1)
        return -0.5 * (self.latent_dim * _LOG_2PI + log_det + mahalanobis)

    def joint_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log pi_c + log N(z | mu_c, Sigma_c)``, shape ``(n_samples, n_components)``."""
        return self.log_weights[None] + self.component_log_prob(z)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the mixture, ``log p(z)``, shape ``(n_samples,)``."""
        return torch.logsumexp(self.joint_log_prob(z), dim=1)

    def log_responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(c | z)`` (VaDE's ``log gamma``), shape ``(n_samples, n_components)``."""
        return torch.log_softmax(self.joint_log_prob(z), dim=1)

    # -- the ELBO -----------------------------------------------------------------
    def kl_terms(
        self,
        posterior_mean: torch.Tensor,
        posterior_log_variance: torch.Tensor,
        log_gamma: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The two KL terms of VaDE's negative ELBO, per sample.

        With ``d = mu~ - mu_c``::

            KL(N(mu~, diag sigma~^2) || N(mu_c, Sigma_c)) = 1/2 [
                sum_j sigma~_j^2 (Sigma_c^-1)_jj + |A_c d|^2 - J
                + log det Sigma_c - sum_j log sigma~_j^2 ]

        Parameters
        ----------
        posterior_mean : torch.Tensor of shape (n_samples, latent_dim)
            The encoder's ``mu~``.
        posterior_log_variance : torch.Tensor of shape (n_samples, latent_dim)
            The encoder's ``log sigma~^2``.
        log_gamma : torch.Tensor of shape (n_samples, n_components)
            ``log q(c | x)``, usually :meth:`log_responsibilities` of a latent
            sample.

        Returns
        -------
        dict of str to torch.Tensor of shape (n_samples,)
            ``'kl_latent'``: ``sum_c gamma_c KL(N(mu~, sigma~^2) || N(mu_c, Sigma_c))``;
            ``'kl_cluster'``: ``KL(gamma || pi)``. Both in nats; both >= 0.
        """
        whitened = self._whiten(posterior_mean[:, None, :] - self.means[None])
        trace = posterior_log_variance.exp() @ self._precision_diagonal().T
        gaussian_kl = 0.5 * (
            trace
            + whitened.square().sum(dim=2)
            - self.latent_dim
            + self._log_variances().sum(dim=1)[None]
            - posterior_log_variance.sum(dim=1, keepdim=True)
        )
        gamma = log_gamma.exp()
        return {
            "kl_latent": (gamma * gaussian_kl).sum(dim=1),
            "kl_cluster": (gamma * (log_gamma - self.log_weights[None])).sum(dim=1),
        }

    def log_dirichlet_prior(self, concentration: float) -> torch.Tensor:
        """Log-density of the weights under a symmetric Dirichlet, up to a constant.

        ``log Dir(pi | alpha) = (alpha - 1) sum_c log pi_c + const``; adding it
        to the log-likelihood gives the MAP objective of BayesianGaussianMixture's
        ``'dirichlet_distribution'`` prior: ``alpha < 1`` pushes unneeded
        components toward zero weight, a large ``alpha`` holds the weights
        near uniform.

        Parameters
        ----------
        concentration : float
            ``alpha > 0``.

        Returns
        -------
        torch.Tensor
            A scalar, in nats (for the whole data set, not per sample).
        """
        return (concentration - 1.0) * self.log_weights.sum()

    # -- the closed-form M-step ---------------------------------------------------
    def sufficient_statistics(
        self,
        posterior_mean: torch.Tensor,
        posterior_log_variance: torch.Tensor,
        log_gamma: torch.Tensor,
    ) -> MixtureStatistics:
        """Summarise rows of ``q(z|x)`` and ``q(c|x)`` for :meth:`maximization_step`.

        Parameters
        ----------
        posterior_mean, posterior_log_variance : torch.Tensor of shape (n_samples, latent_dim)
        log_gamma : torch.Tensor of shape (n_samples, n_components)

        Returns
        -------
        MixtureStatistics
            Detached, in the dtype of the inputs.
        """
        with torch.no_grad():
            n_samples = posterior_mean.shape[0]
            gamma = log_gamma.exp() / n_samples
            variance = posterior_log_variance.exp()
            if self.covariance_type == "full":
                second = torch.einsum("nk,ni,nj->kij", gamma, posterior_mean, posterior_mean)
                second = second + torch.diag_embed(gamma.T @ variance)
            else:
                second = gamma.T @ (posterior_mean.square() + variance)
            return MixtureStatistics(
                float(n_samples), gamma.sum(dim=0), gamma.T @ posterior_mean, second
            )

    def maximization_step(
        self,
        statistics: MixtureStatistics,
        *,
        weight_concentration_prior: float | None = None,
        components: bool = True,
    ) -> None:
        """Set the parameters that maximise the ELBO given the responsibilities.

        The weights become :func:`map_weights` of the counts; with
        ``components``, ``mu_c = first_c / counts_c`` and ``Sigma_c =
        second_c / counts_c - mu_c mu_c^T`` plus ``1e-6`` on the diagonal
        (averaged over dimensions for ``'spherical'``). These are the maxima of
        ``sum_i E_q[log p(z_i, c_i)]`` over ``pi, mu, Sigma``, so the
        posterior variances of the codes enter the covariances. A component
        whose responsibilities sum to almost no row keeps its mean and
        covariance.

        Parameters
        ----------
        statistics : MixtureStatistics
        weight_concentration_prior : float or None, default=None
            ``alpha`` of a symmetric Dirichlet prior on the weights.
        components : bool, default=True
            Also update the means and covariances (otherwise only the weights).
        """
        dtype = self.means.dtype
        counts = statistics.counts.to(dtype)
        with torch.no_grad():
            self._set_weights(
                map_weights(counts, statistics.n_samples, weight_concentration_prior)
            )
            if not components:
                return
            kept = counts * statistics.n_samples >= _MIN_COMPONENT_ROWS
            safe_counts = torch.where(kept, counts, torch.ones_like(counts))
            means = statistics.first.to(dtype) / safe_counts[:, None]
            second = statistics.second.to(dtype)
            if self.covariance_type == "full":
                covariances = second / safe_counts[:, None, None] - means[:, :, None] * means[:, None, :]
                covariances = 0.5 * (covariances + covariances.transpose(1, 2))
                covariances = covariances + _MIN_VARIANCE * torch.eye(
                    self.latent_dim, device=covariances.device, dtype=dtype
                )
                previous = self.covariance_matrices()
                keep = kept[:, None, None]
            else:
                covariances = second / safe_counts[:, None] - means.square()
                if self.covariance_type == "spherical":
                    covariances = covariances.mean(dim=1)
                covariances = covariances + _MIN_VARIANCE
                previous = self.covariances()
                keep = kept[:, None] if covariances.ndim == 2 else kept
            self.means.copy_(torch.where(kept[:, None], means, self.means))
            self._set_covariances(torch.where(keep, covariances, previous))

    # -- generation ---------------------------------------------------------------
    def sample(
        self,
        n_samples: int,
        generator: torch.Generator,
        component: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw latent points and their components from the mixture.

        Parameters
        ----------
        n_samples : int
        generator : torch.Generator
            The only source of randomness.
        component : int, default=None
            Draw every point from this component instead of from the mixture.

        Returns
        -------
        z : torch.Tensor of shape (n_samples, latent_dim)
        labels : torch.Tensor of shape (n_samples,), int64
        """
        device, dtype = self.means.device, self.means.dtype
        if component is None:
            labels = torch.multinomial(
                self.weights.detach(), n_samples, replacement=True, generator=generator
            )
        else:
            labels = torch.full((n_samples,), int(component), device=device)
        noise = torch.randn(
            n_samples, self.latent_dim, generator=generator, device=device, dtype=dtype
        )
        # z = mu_c + A_c^-1 eps has covariance A_c^-1 A_c^-T = Sigma_c.
        offsets = torch.linalg.solve_triangular(
            self.precision_cholesky().detach()[labels], noise[:, :, None], upper=False
        )[:, :, 0]
        return self.means.detach()[labels] + offsets, labels


def split_collapsed_components(
    prior: GaussianMixturePrior, weight_threshold: float
) -> list[dict[str, int | float]]:
    """Re-seed every component whose weight fell below a threshold.

    Each collapsed component is moved onto the currently largest component,
    which is split in two: both halves keep its covariance, take half its
    weight, and their means move apart by one standard deviation along the
    largest component's widest latent dimension. This is the classic remedy for
    an empty cluster (as in k-means' empty-cluster relocation), applied to a
    mixture that lives in a learned latent space.

    Parameters
    ----------
    prior : GaussianMixturePrior
        Modified in place.
    weight_threshold : float
        Components with weight below it are re-seeded. Keep it below
        ``1 / (2 * n_components)`` so a freshly split half is never below it.

    Returns
    -------
    list of dict
        One record per re-seeded component: ``{'component': k, 'split': j,
        'weight': w}`` with ``w`` the collapsed weight before re-seeding.
    """
    events: list[dict[str, int | float]] = []
    with torch.no_grad():
        for _ in range(prior.n_components):
            weights = prior.weights
            collapsed = int(torch.argmin(weights))
            weight = float(weights[collapsed])
            if weight >= weight_threshold:
                break
            largest = int(torch.argmax(weights))
            stddev = prior.variances[largest].sqrt()
            widest = int(torch.argmax(stddev))
            offset = torch.zeros_like(stddev)
            offset[widest] = 0.5 * stddev[widest]
            center = prior.means[largest].clone()
            prior.means[largest] = center + offset
            prior.means[collapsed] = center - offset
            for parameter in prior._component_parameters():
                parameter[collapsed] = parameter[largest]
            # Half the largest weight to each: logits are log-weights up to a
            # shared constant, so subtracting log 2 halves a weight relative to
            # the others without touching them.
            half_logit = prior.weight_logits[largest] - math.log(2.0)
            prior.weight_logits[largest] = half_logit
            prior.weight_logits[collapsed] = half_logit
            events.append({"component": collapsed, "split": largest, "weight": weight})
    return events


class MixturePriorVAE(VariationalAutoencoder):
    """A variational autoencoder whose prior is a learned Gaussian mixture.

    The model object the training engine optimises for VariationalGMMPrior:
    encoder, decoder and :class:`GaussianMixturePrior` in one module, so one
    optimiser, one ``state_dict`` and one device move cover all three.

    Parameters
    ----------
    encoder : GaussianEncoder
    decoder : LikelihoodDecoder
    prior : GaussianMixturePrior

    Attributes
    ----------
    encoder, decoder, prior
    """

    def __init__(
        self,
        encoder: GaussianEncoder,
        decoder: LikelihoodDecoder,
        prior: GaussianMixturePrior,
    ) -> None:
        super().__init__(encoder, decoder)
        self.prior = prior

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Return the mixture's ``log p(z)``, in nats."""
        return self.prior.log_prob(z)

    def kl_divergence(self, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """Return ``KL(q(z,c|x) || p(z,c))`` per row, with ``q(c|x)`` at the mean.

        The VaDE training objective evaluates ``q(c|x)`` at a latent sample
        instead; this deterministic version serves inference.
        """
        log_gamma = self.prior.log_responsibilities(mean)
        return sum(self.prior.kl_terms(mean, log_var, log_gamma).values())
