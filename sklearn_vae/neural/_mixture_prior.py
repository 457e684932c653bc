"""The learned Gaussian-mixture prior over a latent space (VaDE's p(c) p(z|c)).

Generative model (Jiang et al., IJCAI 2017)::

    c ~ Cat(pi),   z | c ~ N(mu_c, diag sigma_c^2),   x | z ~ p(x|z)

The module owns the mixture's parameters in unconstrained form -- mixture
weights as softmax logits, variances as log-variances -- so gradient steps can
never produce a negative variance or weights that do not sum to one, and every
logarithm of a probability is taken as a ``log_softmax`` or a ``logsumexp``,
never as ``log`` of a computed probability.

With the encoder's q(z|x) = N(mu~, diag sigma~^2) and q(c|x) = gamma, the
negative ELBO splits into the reconstruction term and the two Kullback-Leibler
terms returned by :meth:`GaussianMixturePrior.kl_terms`::

    KL(q(z,c|x) || p(z,c))
      = sum_c gamma_c KL(N(mu~, sigma~^2) || N(mu_c, sigma_c^2))      'kl_latent'
      + sum_c gamma_c log(gamma_c / pi_c)                             'kl_cluster'

which is exactly the expression of the VaDE paper (the 2 pi constants of the
two Gaussian terms cancel). See ``/shared/seed/NOTES.md``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._modules import GaussianEncoder, LikelihoodDecoder, VariationalAutoencoder

__all__ = ["GaussianMixturePrior", "MixturePriorVAE", "split_collapsed_components"]

_LOG_2PI = math.log(2.0 * math.pi)

#: Floor on variances handed to :meth:`GaussianMixturePrior.initialize`, so that
#: a degenerate initial component (e.g. all its codes identical) still has a
#: finite log-variance.
_MIN_VARIANCE = 1e-6


class GaussianMixturePrior(nn.Module):
    """A Gaussian mixture with diagonal or spherical covariances, as a module.

    Parameters
    ----------
    n_components : int
        Number of mixture components (clusters).
    latent_dim : int
        Dimension of the latent space.
    covariance_type : {'diag', 'spherical'}, default='diag'
        ``'diag'``: each component has its own per-dimension variances;
        ``'spherical'``: each component has one variance shared by all
        dimensions.

    Attributes
    ----------
    weight_logits : torch.nn.Parameter of shape (n_components,)
        Mixture weights are ``softmax(weight_logits)``.
    means : torch.nn.Parameter of shape (n_components, latent_dim)
    log_variances : torch.nn.Parameter of shape (n_components, latent_dim) or (n_components, 1)
        Natural logarithm of the component variances; ``(n_components, 1)``
        for ``'spherical'``.

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
        if covariance_type not in ("diag", "spherical"):
            raise ValueError(
                "covariance_type must be 'diag' or 'spherical', got "
                f"{covariance_type!r}."
            )
        self.n_components = int(n_components)
        self.latent_dim = int(latent_dim)
        self.covariance_type = covariance_type
        variance_columns = latent_dim if covariance_type == "diag" else 1
        self.weight_logits = nn.Parameter(torch.zeros(n_components))
        self.means = nn.Parameter(torch.zeros(n_components, latent_dim))
        self.log_variances = nn.Parameter(torch.zeros(n_components, variance_columns))

    # -- the mixture's parameters in natural form ---------------------------------
    @property
    def log_weights(self) -> torch.Tensor:
        """Log mixture weights, shape ``(n_components,)``."""
        return torch.log_softmax(self.weight_logits, dim=0)

    @property
    def weights(self) -> torch.Tensor:
        """Mixture weights, shape ``(n_components,)``; they sum to one."""
        return torch.softmax(self.weight_logits, dim=0)

    @property
    def variances(self) -> torch.Tensor:
        """Component variances broadcast to ``(n_components, latent_dim)``."""
        return self.log_variances.exp().expand(self.n_components, self.latent_dim)

    def initialize(
        self,
        weights: np.ndarray | torch.Tensor,
        means: np.ndarray | torch.Tensor,
        variances: np.ndarray | torch.Tensor,
    ) -> None:
        """Set the mixture from natural parameters (e.g. a fitted GMM).

        Parameters
        ----------
        weights : array-like of shape (n_components,)
            Mixture weights; normalised here.
        means : array-like of shape (n_components, latent_dim)
        variances : array-like of shape (n_components, latent_dim) or (n_components,)
            Per-dimension variances (``'diag'``) or one variance per component
            (``'spherical'``; a ``'diag'`` array is averaged over dimensions).
        """
        reference = self.means

        def as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
            if isinstance(array, torch.Tensor):
                array = array.detach().cpu().numpy()
            return torch.as_tensor(np.asarray(array, dtype=np.float64)).to(
                device=reference.device, dtype=reference.dtype
            )

        weights_t = as_tensor(weights).clamp_min(torch.finfo(reference.dtype).tiny)
        variances_t = as_tensor(variances).clamp_min(_MIN_VARIANCE)
        if variances_t.ndim == 1:
            variances_t = variances_t[:, None]
        if self.covariance_type == "spherical":
            variances_t = variances_t.mean(dim=1, keepdim=True)
        else:
            variances_t = variances_t.expand(self.n_components, self.latent_dim)
        with torch.no_grad():
            log_weights = weights_t.log()
            self.weight_logits.copy_(log_weights - log_weights.mean())
            self.means.copy_(as_tensor(means))
            self.log_variances.copy_(variances_t.log())

    # -- densities ----------------------------------------------------------------
    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of every component at every point, ``log N(z | mu_c, sigma_c^2)``.

        Parameters
        ----------
        z : torch.Tensor of shape (n_samples, latent_dim)

        Returns
        -------
        torch.Tensor of shape (n_samples, n_components)
            In nats.
        """
        log_var = self.log_variances.expand(self.n_components, self.latent_dim)
        precision = torch.exp(-log_var)
        squared = (z[:, None, :] - self.means[None]) ** 2
        mahalanobis = (squared * precision[None]).sum(dim=2)
        return -0.5 * (self.latent_dim * _LOG_2PI + log_var.sum(dim=1) + mahalanobis)

    def joint_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log pi_c + log N(z | mu_c, sigma_c^2)``, shape ``(n_samples, n_components)``."""
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
            ``'kl_latent'``: ``sum_c gamma_c KL(N(mu~, sigma~^2) || N(mu_c, sigma_c^2))``;
            ``'kl_cluster'``: ``KL(gamma || pi)``. Both in nats; both >= 0.
        """
        log_var_c = self.log_variances.expand(self.n_components, self.latent_dim)
        precision_c = torch.exp(-log_var_c)[None]
        log_var = posterior_log_variance[:, None, :]
        gaussian_kl = 0.5 * (
            log_var_c[None]
            - log_var
            + (log_var.exp() + (posterior_mean[:, None, :] - self.means[None]) ** 2)
            * precision_c
            - 1.0
        ).sum(dim=2)
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
        stddev = self.variances.detach().sqrt()
        return self.means.detach()[labels] + noise * stddev[labels], labels


def split_collapsed_components(
    prior: GaussianMixturePrior, weight_threshold: float
) -> list[dict[str, int | float]]:
    """Re-seed every component whose weight fell below a threshold.

    Each collapsed component is moved onto the currently largest component,
    which is split in two: both halves keep its variances, take half its
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
            log_var = prior.log_variances[largest].clone()
            stddev = prior.variances[largest].sqrt()
            widest = int(torch.argmax(stddev))
            offset = torch.zeros_like(stddev)
            offset[widest] = 0.5 * stddev[widest]
            center = prior.means[largest].clone()
            prior.means[largest] = center + offset
            prior.means[collapsed] = center - offset
            prior.log_variances[collapsed] = log_var
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
