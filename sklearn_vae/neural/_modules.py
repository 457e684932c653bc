"""Network builders and the probability densities a VAE is made of.

An encoder maps ``x`` to the parameters of a diagonal Gaussian ``q(z|x)``; a
decoder maps ``z`` to the parameters of a likelihood ``p(x|z)`` and evaluates
its log-density. Every density is computed in log space, summed over features
or latent dimensions, in nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "ACTIVATIONS",
    "BernoulliDecoder",
    "GaussianDecoder",
    "GaussianEncoder",
    "LikelihoodDecoder",
    "VariationalAutoencoder",
    "diagonal_gaussian_log_prob",
    "gaussian_kl_to_standard_normal",
    "make_mlp",
    "standard_normal_log_prob",
]

#: scikit-learn's MLP activation names and the torch modules they stand for.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "identity": nn.Identity,
    "logistic": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
}

_LOG_2PI = math.log(2.0 * math.pi)

# Smallest variance of the Gaussian likelihood. A feature the decoder predicts
# exactly (a constant pixel) would otherwise drive its learned variance to zero
# and the log-likelihood to infinity; GaussianMixture's reg_covar plays the same
# role and has the same default.
_GAUSSIAN_VARIANCE_FLOOR = 1e-6

# Means of a Bernoulli output layer are clipped to [eps, 1 - eps] before taking
# the logit of a constant feature, so its initial bias stays finite (about 7).
_BERNOULLI_MEAN_CLIP = 1e-3


def make_mlp(
    n_inputs: int,
    hidden_layer_sizes: Sequence[int],
    n_outputs: int,
    activation: str,
) -> nn.Sequential:
    """Build a multilayer perceptron with a linear output layer.

    Parameters
    ----------
    n_inputs : int
        Width of the input.
    hidden_layer_sizes : sequence of int
        Width of each hidden layer, input side first. May be empty.
    n_outputs : int
        Width of the output.
    activation : {'identity', 'logistic', 'tanh', 'relu'}
        Non-linearity after every hidden layer (none after the output).

    Returns
    -------
    torch.nn.Sequential

    Examples
    --------
    >>> make_mlp(4, (8,), 2, "relu")
    Sequential(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=2, bias=True)
    )
    """
    widths = [n_inputs, *hidden_layer_sizes]
    layers: list[nn.Module] = []
    for fan_in, fan_out in pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(widths[-1], n_outputs))
    return nn.Sequential(*layers)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Log-density of ``N(0, I)`` summed over the last axis, in nats.

    Parameters
    ----------
    z : torch.Tensor of shape (..., n_components)

    Returns
    -------
    torch.Tensor of shape (...)
    """
    return -0.5 * (z.square() + _LOG_2PI).sum(dim=-1)


def diagonal_gaussian_log_prob(
    z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """Log-density of ``N(mean, diag exp(log_var))`` summed over the last axis.

    Parameters
    ----------
    z, mean, log_var : torch.Tensor
        Broadcastable, the last axis is the latent dimension.

    Returns
    -------
    torch.Tensor
        In nats, with the last axis summed out.
    """
    return -0.5 * (
        (z - mean).square() * torch.exp(-log_var) + log_var + _LOG_2PI
    ).sum(dim=-1)


def gaussian_kl_to_standard_normal(
    mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """``KL(N(mean, diag exp(log_var)) || N(0, I))`` summed over the last axis.

    Parameters
    ----------
    mean, log_var : torch.Tensor of shape (..., n_components)

    Returns
    -------
    torch.Tensor of shape (...)
        In nats, never negative.
    """
    return 0.5 * (mean.square() + torch.exp(log_var) - 1.0 - log_var).sum(dim=-1)


class GaussianEncoder(nn.Module):
    """The amortised posterior ``q(z|x) = N(mean(x), diag exp(log_var(x)))``.

    No activation limits the latent outputs: the network returns the mean and
    the log-variance directly.

    Parameters
    ----------
    n_features : int
        Width of ``x``.
    n_components : int
        Latent dimension.
    hidden_layer_sizes : sequence of int
        Hidden widths, input side first.
    activation : str
        One of :data:`ACTIVATIONS`.

    Attributes
    ----------
    network : torch.nn.Sequential
        Maps ``x`` to ``[mean, log_var]`` concatenated.
    n_components : int
    """

    def __init__(
        self,
        n_features: int,
        n_components: int,
        hidden_layer_sizes: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        self.n_components = n_components
        self.network = make_mlp(
            n_features, hidden_layer_sizes, 2 * n_components, activation
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the posterior mean and log-variance, each ``(..., n_components)``."""
        mean, log_var = self.network(x).chunk(2, dim=-1)
        return mean, log_var


class LikelihoodDecoder(nn.Module):
    """Base class of the likelihood heads ``p(x|z)``.

    The network mirrors the encoder (hidden widths reversed) and outputs one
    natural parameter per feature; subclasses say what it means.

    Parameters
    ----------
    n_components : int
        Latent dimension.
    n_features : int
        Width of ``x``.
    hidden_layer_sizes : sequence of int
        Hidden widths of the *encoder*, input side first; the decoder uses them
        in reverse order.
    activation : str
        One of :data:`ACTIVATIONS`.

    Attributes
    ----------
    network : torch.nn.Sequential
    """

    def __init__(
        self,
        n_components: int,
        n_features: int,
        hidden_layer_sizes: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        self.network = make_mlp(
            n_components, tuple(reversed(hidden_layer_sizes)), n_features, activation
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Return the natural parameter of ``p(x|z)``, shape ``(..., n_features)``."""
        return self.network(z)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Return ``log p(x|z)`` summed over features, in nats.

        ``z`` may carry extra leading axes (importance samples); ``x``
        broadcasts against them.
        """
        raise NotImplementedError

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """Return ``E[x|z]``, shape ``(..., n_features)``."""
        raise NotImplementedError

    @torch.no_grad()
    def initialize_marginal(self, X: torch.Tensor) -> None:
        """Start from the best factorised fit of ``X``, whatever ``z`` is.

        Sets the output bias (and, for a Gaussian, the variance) to the
        per-feature maximum-likelihood values, so training starts at the
        independent-features baseline instead of at unit-scale outputs that
        may be far off the data's scale.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, n_features)
        """
        self.network[-1].bias.copy_(self._natural_parameter(X.mean(dim=0)))

    def _natural_parameter(self, mean: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GaussianDecoder(LikelihoodDecoder):
    """``p(x|z) = N(mean(z), diag(variance))`` with a learned per-feature variance.

    The variance is ``exp(log_variance) + 1e-6``: the floor keeps the density
    finite on features the decoder reconstructs exactly.

    Attributes
    ----------
    log_variance : torch.nn.Parameter of shape (n_features,)
        Learned, shared by every sample; initialised to 0 (unit variance).
    """

    def __init__(
        self,
        n_components: int,
        n_features: int,
        hidden_layer_sizes: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__(n_components, n_features, hidden_layer_sizes, activation)
        self.log_variance = nn.Parameter(torch.zeros(n_features))

    @torch.no_grad()
    def initialize_marginal(self, X: torch.Tensor) -> None:
        super().initialize_marginal(X)
        variance = X.var(dim=0, correction=0) if len(X) > 1 else torch.ones_like(X[0])
        self.log_variance.copy_(torch.log(variance + _GAUSSIAN_VARIANCE_FLOOR))

    def _natural_parameter(self, mean: torch.Tensor) -> torch.Tensor:
        return mean

    def variance(self) -> torch.Tensor:
        """Return the per-feature variance, floored away from zero."""
        return torch.exp(self.log_variance) + _GAUSSIAN_VARIANCE_FLOOR

    @torch.no_grad()
    def set_variance(self, variance: torch.Tensor | float) -> None:
        """Make :meth:`variance` return ``variance`` (at least the floor).

        Parameters
        ----------
        variance : torch.Tensor of shape (n_features,) or float
            One value per feature, or one for all.
        """
        variance = torch.as_tensor(variance, dtype=self.log_variance.dtype).to(
            self.log_variance.device
        )
        above_floor = (variance - _GAUSSIAN_VARIANCE_FLOOR).clamp_min(_GAUSSIAN_VARIANCE_FLOOR)
        self.log_variance.copy_(above_floor.log().expand_as(self.log_variance))

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        variance = self.variance()
        squared_error = (x - self.network(z)).square()
        return -0.5 * (
            squared_error / variance + torch.log(variance) + _LOG_2PI
        ).sum(dim=-1)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.network(z)


class BernoulliDecoder(LikelihoodDecoder):
    """``p(x|z) = Bernoulli(sigmoid(logits(z)))`` for data in [0, 1].

    Non-binary values in [0, 1] are scored by the same cross-entropy (the usual
    continuous relaxation for grey-level images).
    """

    def _natural_parameter(self, mean: torch.Tensor) -> torch.Tensor:
        # Logit of the mean, kept finite for features that are always 0 or 1.
        return torch.logit(mean, eps=_BERNOULLI_MEAN_CLIP)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        logits = self.network(z)
        return -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(dim=-1)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(z))


class VariationalAutoencoder(nn.Module):
    """An encoder, a decoder and the standard normal prior ``p(z)``.

    This is the model object the training engine optimises; objectives read
    ``encoder``, ``decoder`` and the prior through it. A model with another
    prior overrides :meth:`prior_log_prob` and :meth:`kl_divergence`.

    Parameters
    ----------
    encoder : GaussianEncoder
    decoder : LikelihoodDecoder

    Attributes
    ----------
    encoder : GaussianEncoder
    decoder : LikelihoodDecoder
    """

    def __init__(self, encoder: GaussianEncoder, decoder: LikelihoodDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    @property
    def n_components(self) -> int:
        """Latent dimension."""
        return self.encoder.n_components

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Return ``log p(z)`` summed over latent dimensions, in nats."""
        return standard_normal_log_prob(z)

    def kl_divergence(self, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """Return ``KL(q(z|x) || p(z))`` per row, in nats."""
        return gaussian_kl_to_standard_normal(mean, log_var)
