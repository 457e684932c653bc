"""Training objectives (strategies of the training engine) and the bounds they share.

Each objective returns named loss terms, means per sample in nats, with the
total to minimise under ``"loss"`` (see :mod:`sklearn_vae.neural._engine`).

The importance weights of a VAE, for noise ``eps_k ~ N(0, I)`` and
``z_k = mean(x) + exp(log_var(x) / 2) * eps_k``, are::

    log w_k(x) = log p(x|z_k) + log p(z_k) - log q(z_k|x)

Their mean over ``k`` estimates the ELBO; their log-mean-exp is the
importance-weighted bound (IWAE, Burda et al. 2016), which tends to
``log p(x)`` as the number of samples grows and is never below the ELBO
estimate computed from the same draws (Jensen's inequality).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._backend import iter_row_chunks
from .._distributed import all_reduce_sum
from ._engine import Batch, Callback, Objective, StepContext, TrainingEngine
from ._modules import GaussianDecoder, VariationalAutoencoder, diagonal_gaussian_log_prob
from ._mutual_information import encoder_mutual_information

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "ELBO",
    "SharedVarianceWarmup",
    "active_units",
    "elbo_from_log_weights",
    "importance_weighted_bound",
    "log_importance_weights",
    "mutual_information_diagnostics",
    "reparameterize",
    "sample_posterior",
]


#: Rows per forward pass of :class:`SharedVarianceWarmup`'s residual pass.
_RESIDUAL_CHUNK_ROWS = 4096

#: A latent unit is active when the variance of its posterior mean over the
#: data exceeds this (Burda, Grosse and Salakhutdinov 2016), a hundredth of the
#: standard normal prior's variance.
ACTIVE_UNIT_THRESHOLD = 1e-2


def active_units(posterior_mean: torch.Tensor) -> torch.Tensor:
    """Number of active latent units, ``#{j : Cov_x(E_q[z_j | x]) > 0.01}``.

    An inactive unit's posterior mean is (nearly) the same for every row: the
    code carries no information about ``x`` there and the posterior has
    collapsed onto the prior in that direction.

    Parameters
    ----------
    posterior_mean : torch.Tensor of shape (n_samples, n_components)
        ``E_q[z | x]`` of some rows (at least two).

    Returns
    -------
    torch.Tensor
        A scalar, in the dtype of ``posterior_mean``.

    Examples
    --------
    >>> import torch
    >>> mean = torch.stack([torch.linspace(-1, 1, 50), torch.full((50,), 0.3)], dim=1)
    >>> float(active_units(mean))
    1.0
    """
    variance = posterior_mean.var(dim=0, correction=0)
    return (variance > ACTIVE_UNIT_THRESHOLD).sum().to(posterior_mean.dtype)


def reparameterize(
    mean: torch.Tensor, log_var: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Return ``mean + exp(log_var / 2) * noise`` (differentiable in both).

    Parameters
    ----------
    mean, log_var : torch.Tensor of shape (n_samples, n_components)
    noise : torch.Tensor broadcastable to them, e.g. (n_draws, 1, n_components)

    Returns
    -------
    torch.Tensor
    """
    return mean + torch.exp(0.5 * log_var) * noise


def log_importance_weights(
    model: VariationalAutoencoder,
    x: torch.Tensor,
    noise: torch.Tensor,
    posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Return ``log w_k(x)`` for every row of ``x`` and every draw in ``noise``.

    Parameters
    ----------
    model : VariationalAutoencoder
    x : torch.Tensor of shape (n_samples, n_features)
    noise : torch.Tensor of shape (n_draws, n_components) or (n_draws, n_samples, n_components)
        Standard normal draws. Passing the same draws for every row (common
        random numbers) makes the result of a row independent of the others;
        training draws them per row.
    posterior : tuple of torch.Tensor, default=None
        ``model.encoder(x)`` if the caller already computed it.

    Returns
    -------
    torch.Tensor of shape (n_draws, n_samples)
        In nats.
    """
    mean, log_var = model.encoder(x) if posterior is None else posterior
    z = reparameterize(mean, log_var, noise.reshape(noise.shape[0], -1, noise.shape[-1]))
    return (
        model.decoder.log_prob(x, z)
        + model.prior_log_prob(z)
        - diagonal_gaussian_log_prob(z, mean, log_var)
    )


def importance_weighted_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """Return ``log mean_k exp(log w_k)`` over the first axis, stably.

    Parameters
    ----------
    log_weights : torch.Tensor of shape (n_draws, n_samples)

    Returns
    -------
    torch.Tensor of shape (n_samples,)
    """
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def elbo_from_log_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """Return the Monte Carlo ELBO ``mean_k log w_k`` over the first axis.

    Parameters
    ----------
    log_weights : torch.Tensor of shape (n_draws, n_samples)

    Returns
    -------
    torch.Tensor of shape (n_samples,)
    """
    return log_weights.mean(dim=0)


def sample_posterior(
    model: VariationalAutoencoder, x: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw one reparameterised ``z ~ q(z|x)`` per row of ``x``.

    Returns
    -------
    z, mean, log_var : torch.Tensor of shape (n_samples, n_components)
        The draws and the encoder's outputs.
    """
    mean, log_var = model.encoder(x)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return reparameterize(mean, log_var, noise), mean, log_var


def mutual_information_diagnostics(
    model: VariationalAutoencoder, batch: Batch, context: StepContext
) -> dict[str, torch.Tensor]:
    """The per-epoch diagnostics of a Gaussian-encoder objective.

    ``mutual_information``: I(x; z) of the encoding distribution on the batch,
    estimated by
    :func:`~sklearn_vae.neural._mutual_information.encoder_mutual_information`
    (a lower bound, in nats, at most ``log(len(batch))``); ``active_units``:
    :func:`active_units` of the batch's posterior means.
    """
    z, mean, log_var = sample_posterior(model, batch.X, context.generator)
    return {
        "mutual_information": encoder_mutual_information(z, mean, log_var),
        "active_units": active_units(mean),
    }


class ELBO(Objective):
    """The negative evidence lower bound, with a beta weight and KL warm-up.

    ``loss = reconstruction + kl_weight(epoch) * beta * kl`` where
    ``reconstruction = -E_q(z|x)[log p(x|z)]`` (one reparameterised draw) and
    ``kl = KL(q(z|x) || p(z))`` (analytic). During validation the warm-up
    weight is 1, so validation losses compare across epochs. Once per epoch
    :func:`mutual_information_diagnostics` logs ``mutual_information``.

    Parameters
    ----------
    beta : float, default=1.0
        Weight of the KL term (beta-VAE; 1 is the ELBO).
    kl_warmup : int, default=0
        Epochs over which the KL weight rises linearly from ``1 / kl_warmup``
        to 1.

    Examples
    --------
    >>> ELBO(beta=1.0, kl_warmup=10).kl_weight(epoch=4)
    0.5
    """

    def __init__(self, beta: float = 1.0, kl_warmup: int = 0) -> None:
        self.beta = beta
        self.kl_warmup = kl_warmup

    def kl_weight(self, epoch: int) -> float:
        """Return the annealing weight of the KL term at zero-based ``epoch``."""
        if self.kl_warmup <= 0:
            return 1.0
        return min(1.0, (epoch + 1) / self.kl_warmup)

    def loss_terms(
        self, model: VariationalAutoencoder, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        mean, log_var = model.encoder(batch.X)
        noise = torch.randn(
            mean.shape, generator=context.generator, device=mean.device, dtype=mean.dtype
        )
        z = reparameterize(mean, log_var, noise)
        reconstruction = -model.decoder.log_prob(batch.X, z).mean()
        kl = model.kl_divergence(mean, log_var).mean()
        weight = self.kl_weight(context.epoch) if context.training else 1.0
        return {
            "loss": reconstruction + (weight * self.beta) * kl,
            "reconstruction": reconstruction,
            "kl": kl,
        }

    def diagnostics(
        self, model: VariationalAutoencoder, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        return mutual_information_diagnostics(model, batch, context)


class SharedVarianceWarmup(Callback):
    """Form the codes under one fixed decoder variance, then fit the density.

    For the first ``n_epochs`` epochs the Gaussian decoder's variance is held
    at the value it starts with, one for every feature, and the networks
    train under it. At the start of epoch ``n_epochs`` each feature gets its
    own variance, set to its maximum-likelihood value given the networks, the
    mean squared residual ``E_x E_q(z|x) (x_j - f_j(z))^2`` over the training
    rows (validation rows excluded; one posterior draw per row; summed over
    ranks under a process group); from there the variances and the decoder
    learn while the encoder is held, so the codes of the first epochs are
    kept.

    Why: with per-feature variances from the start, features that are almost
    constant (the blank border of an image) get tiny variances, and the few
    rows where they are not constant then dominate the gradients: the codes
    spend their capacity on those rows instead of on the structure shared by
    all features. A fixed shared variance weighs every feature's squared
    error alike, as PCA does, and, unlike a learned one, cannot grow until
    the KL term wins and the posterior collapses. Training the encoder on
    against the per-feature variances brings that fault back (measured on the
    digits: the codes lost accuracy), so only the decoder completes the
    density.

    Parameters
    ----------
    n_epochs : int
        Epochs with the fixed shared variance (global epoch indices, so that
        ``warm_start`` and ``partial_fit`` continue the schedule).
    """

    def __init__(self, n_epochs: int) -> None:
        self.n_epochs = n_epochs

    @staticmethod
    def _decoder(engine: TrainingEngine) -> GaussianDecoder | None:
        decoder = engine.model.decoder
        return decoder if isinstance(decoder, GaussianDecoder) else None

    def on_train_begin(self, engine: TrainingEngine) -> None:
        decoder = self._decoder(engine)
        if decoder is None:
            return
        if engine.epoch < self.n_epochs:
            decoder.log_variance.requires_grad_(False)
        else:
            engine.model.encoder.requires_grad_(False)

    def on_epoch_begin(self, engine: TrainingEngine, epoch: int) -> None:
        decoder = self._decoder(engine)
        if decoder is None or epoch != self.n_epochs:
            return
        decoder.set_variance(_mean_squared_residuals(engine))
        decoder.log_variance.requires_grad_(True)
        engine.model.encoder.requires_grad_(False)

    def on_train_end(self, engine: TrainingEngine, result: Any) -> None:
        # The fitted networks keep ordinary trainable parameters: a later
        # call with other parameters, or a user's own torch loop, expects them.
        decoder = self._decoder(engine)
        if decoder is not None:
            decoder.log_variance.requires_grad_(True)
            engine.model.encoder.requires_grad_(True)


def _mean_squared_residuals(engine: TrainingEngine) -> torch.Tensor:
    """``E_x E_q(z|x) (x - f(z))^2`` per feature over the engine's training rows."""
    model, X, indices = engine.model, engine.data.X, engine.train_indices
    model.eval()
    with torch.no_grad():
        total = torch.zeros(X.shape[1] + 1, dtype=torch.float64, device=X.device)
        for rows in iter_row_chunks(len(indices), _RESIDUAL_CHUNK_ROWS):
            x = X[indices[rows]]
            z, _, _ = sample_posterior(model, x, engine.generator)
            total[:-1] += (x - model.decoder.mean(z)).square().sum(dim=0).to(torch.float64)
            total[-1] += len(x)
        total = all_reduce_sum(total)
    model.train()
    return (total[:-1] / total[-1]).to(X.dtype)
