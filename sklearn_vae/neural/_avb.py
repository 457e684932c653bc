"""Adversarial Variational Bayes: an implicit encoder and its discriminator.

Mescheder, Nowozin and Geiger, "Adversarial Variational Bayes: Unifying
Variational Autoencoders and Generative Adversarial Networks", ICML 2017.

The encoder is implicit, ``z = f(x, eps)`` with ``eps ~ N(0, I)``: its
posterior ``q(z|x)`` can take any shape (several modes, say) but has no
density to evaluate, so the ELBO's ``KL(q(z|x) || p(z))`` is estimated by a
discriminator ``T(x, z)`` trained with the logistic loss to tell ``(x, z ~
q(z|x))`` from ``(x, z ~ p(z))``; at its optimum ``T(x, z) = log q(z|x) -
log p(z)``, whose mean over posterior draws is the KL. The encoder and
decoder then maximise ``E_q[log p(x|z) - T(x, z)]`` with ``T`` held fixed.

Adaptive contrast (section 4 of the paper) compares ``q(z|x)`` with the
Gaussian ``r(z|x) = N(mu(x), diag sigma^2(x))`` of its own moments instead of
with the prior: the discriminator sees standardised draws ``(z - mu) / sigma``
against ``N(0, I)``, a much easier problem, and::

    KL(q || p) = KL(q~ || N(0, I)) + KL(r || p)

where ``q~`` is the law of the standardised draws (estimated by ``T``) and the
second term is analytic (both ``log r`` and ``log p`` are quadratic in ``z``,
so only the first two moments of ``q`` matter).

The encoder has the paper's moment-tractable form (its section 4)::

    z = a_0(x) + sum_i a_i(x) * v_i(eps_i),    eps_i ~ N(0, 1) independent

with ``a`` an MLP of ``x`` and each ``v_i`` a small MLP of one scalar noise.
The law of ``z`` given ``x`` can be far from Gaussian (a ``v_i`` may be
bimodal), yet its mean and variance follow from the moments of the ``v_i``,
which do not depend on ``x``: ``E[z|x] = a_0 + sum_i a_i E[v_i]`` and
``Var[z|x] = sum_i a_i^2 Var[v_i]``. One Monte Carlo estimate of the
``v_i``'s moments serves every row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ._engine import Batch, StepContext, UpdateStep
from ._modules import ACTIVATIONS, VariationalAutoencoder, make_mlp
from ._mutual_information import (
    gaussian_encoder_scores,
    info_nce_bound,
    with_critic_step,
)
from ._objectives import ELBO, active_units

__all__ = ["AdversarialVariationalBayes", "ImplicitEncoder"]

#: Noise draws, fixed at construction, behind the basis moments that
#: :meth:`ImplicitEncoder.forward` uses (Monte Carlo error ~ 1/sqrt(2048)).
N_MOMENT_DRAWS = 2048

#: Hidden width of each noise basis function v_i.
_BASIS_WIDTH = 16

# Floor of the posterior variance: an encoder that learned to ignore its
# noise has zero spread, and its log-variance must stay finite.
_VARIANCE_FLOOR = 1e-6


class ImplicitEncoder(nn.Module):
    """An implicit posterior ``z = a_0(x) + sum_i a_i(x) * v_i(eps_i)``.

    :meth:`sample` draws from ``q(z|x)``. Called as a module, it returns the
    posterior's exact mean and log-variance (up to the Monte Carlo error of
    the basis moments, estimated on ``N_MOMENT_DRAWS`` noise draws fixed at
    construction), like
    :class:`~sklearn_vae.neural._modules.GaussianEncoder` returns its
    Gaussian's parameters: the mean is a deterministic, row-independent code
    (the mean of those posterior draws), and the Gaussian of these moments
    serves as the proposal of importance sampling.

    Parameters
    ----------
    n_features : int
        Width of ``x``.
    n_components : int
        Latent dimension.
    hidden_layer_sizes : sequence of int
        Hidden widths of ``a``, input side first.
    activation : str
        One of :data:`~sklearn_vae.neural._modules.ACTIVATIONS`.
    n_noise : int or None, default=None
        Number of noise basis functions ``v_i``; None uses ``n_components``.

    Attributes
    ----------
    coefficients : torch.nn.Sequential
        Maps ``x`` to ``a_0, ..., a_n_noise`` concatenated.
    basis_weight1, basis_bias1, basis_weight2, basis_bias2 : torch.nn.Parameter
        The ``v_i``, one hidden layer each, evaluated side by side.
    moment_noise : torch.Tensor of shape (N_MOMENT_DRAWS, n_noise)
        The fixed noise behind :meth:`forward` (a buffer: saved, moved and cast
        with the weights).
    n_components, n_noise : int

    Examples
    --------
    >>> import torch
    >>> encoder = ImplicitEncoder(4, 2, (8,), "relu")
    >>> mean, log_var = encoder(torch.zeros(3, 4))
    >>> mean.shape, encoder.sample(torch.zeros(3, 4), torch.randn(5, 3, 2)).shape
    (torch.Size([3, 2]), torch.Size([5, 3, 2]))
    """

    def __init__(
        self,
        n_features: int,
        n_components: int,
        hidden_layer_sizes: Sequence[int],
        activation: str,
        n_noise: int | None = None,
    ) -> None:
        super().__init__()
        self.n_components = n_components
        self.n_noise = n_components if n_noise is None else n_noise
        self.coefficients = make_mlp(
            n_features, hidden_layer_sizes, (self.n_noise + 1) * n_components, activation
        )
        self.activation = ACTIVATIONS[activation]()
        # One 1 -> _BASIS_WIDTH -> n_components MLP per noise input, stored
        # stacked so all of them run in one batched product; initialised like
        # nn.Linear (uniform in +-1/sqrt(fan_in)).
        bound2 = _BASIS_WIDTH**-0.5
        self.basis_weight1 = nn.Parameter(torch.empty(self.n_noise, _BASIS_WIDTH).uniform_(-1, 1))
        self.basis_bias1 = nn.Parameter(torch.empty(self.n_noise, _BASIS_WIDTH).uniform_(-1, 1))
        self.basis_weight2 = nn.Parameter(
            torch.empty(self.n_noise, _BASIS_WIDTH, n_components).uniform_(-bound2, bound2)
        )
        self.basis_bias2 = nn.Parameter(
            torch.empty(self.n_noise, n_components).uniform_(-bound2, bound2)
        )
        # Drawn from torch's generator like the weights, so it is seeded with
        # them (the estimators build models under seeded_module_init).
        self.register_buffer("moment_noise", torch.randn(N_MOMENT_DRAWS, self.n_noise))

    def basis(self, noise: torch.Tensor) -> torch.Tensor:
        """Return ``v_i(eps_i)`` for noise of shape (..., n_noise): (..., n_noise, n_components)."""
        hidden = self.activation(noise[..., None] * self.basis_weight1 + self.basis_bias1)
        return torch.einsum("...ih,ihd->...id", hidden, self.basis_weight2) + self.basis_bias2

    def _coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.coefficients(x).unflatten(-1, (self.n_noise + 1, self.n_components))
        return out[..., 0, :], out[..., 1:, :]

    def sample(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Return ``z = f(x, noise)``.

        Parameters
        ----------
        x : torch.Tensor of shape (n_samples, n_features)
        noise : torch.Tensor of shape (n_draws, n_samples, n_noise) or (n_draws, n_noise)
            Standard normal; a 2-D ``noise`` is shared by every row.

        Returns
        -------
        torch.Tensor of shape (n_draws, n_samples, n_components)
        """
        offset, scales = self._coefficients(x)
        basis = self.basis(noise.reshape(noise.shape[0], -1, self.n_noise))
        return offset + (scales * basis).sum(dim=-2)

    def moments(
        self, x: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of ``q(z|x)``, basis moments estimated on ``noise``.

        Parameters
        ----------
        x : torch.Tensor of shape (n_samples, n_features)
        noise : torch.Tensor of shape (..., n_noise)
            Any number of standard normal draws (pooled).

        Returns
        -------
        mean, log_var : torch.Tensor of shape (n_samples, n_components)
        """
        basis = self.basis(noise.reshape(-1, self.n_noise))
        basis_mean = basis.mean(dim=0)
        basis_variance = (basis - basis_mean).square().mean(dim=0)
        offset, scales = self._coefficients(x)
        mean = offset + (scales * basis_mean).sum(dim=-2)
        variance = (scales.square() * basis_variance).sum(dim=-2) + _VARIANCE_FLOOR
        return mean, torch.log(variance)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of ``q(z|x)`` from the fixed :attr:`moment_noise`.

        Returns
        -------
        mean, log_var : torch.Tensor of shape (n_samples, n_components)
        """
        return self.moments(x, self.moment_noise)


class AdversarialVariationalBayes(ELBO):
    """AVB's two-player objective for an :class:`ImplicitEncoder` model.

    The ELBO (with its ``beta`` and KL warm-up) whose KL term a discriminator
    estimates.

    The model is a :class:`~sklearn_vae.neural._modules.VariationalAutoencoder`
    with a standard normal prior, an implicit encoder and a ``critic`` (a
    :class:`~sklearn_vae.neural._mutual_information.PairCritic`, the
    discriminator). Each training step first updates the discriminator on
    ``critic_loss`` (the logistic loss), then the encoder and decoder on::

        loss = reconstruction + kl_weight(epoch) * beta * kl
        reconstruction = -mean_k log p(x | z_k)
        kl = mean_k T(x, z_k)                     (+ KL(r || p) with adaptive contrast)

    ``kl`` is the discriminator's estimate, not an exact KL: it can be
    negative while the discriminator is poor. Once per epoch,
    ``mutual_information`` logs the InfoNCE bound on I(x; z) with the
    discriminator as critic (without adaptive contrast: ``T(x, z) = log
    q(z|x) - log p(z)`` at its optimum, the best InfoNCE critic) or with the
    density of the Gaussian fitted to the posterior's draws (with adaptive
    contrast, where ``T`` sees standardised draws). Either is a lower bound.
    ``active_units`` counts the units whose posterior mean varies over the
    batch (:func:`~sklearn_vae.neural._objectives.active_units`).

    Parameters
    ----------
    beta : float
        Weight of the KL term.
    kl_warmup : int
        Epochs of linear KL annealing.
    n_train_samples : int
        Posterior draws per row and step.
    adaptive_contrast : bool
        Use the paper's adaptive contrast.
    """

    def __init__(
        self,
        beta: float,
        kl_warmup: int,
        n_train_samples: int,
        adaptive_contrast: bool,
    ) -> None:
        super().__init__(beta, kl_warmup)
        self.n_train_samples = n_train_samples
        self.adaptive_contrast = adaptive_contrast

    def update_steps(self, model: nn.Module) -> list[UpdateStep]:
        return with_critic_step(model, super().update_steps(model))

    def loss_terms(
        self, model: VariationalAutoencoder, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        x = batch.X
        # The discriminator's step needs the draws only as data.
        with torch.set_grad_enabled(torch.is_grad_enabled() and context.step != "critic"):
            noise = _encoder_noise(model.encoder, x, self.n_train_samples, context.generator)
            z = model.encoder.sample(x, noise)
            if self.adaptive_contrast:
                # Every draw of the batch samples the x-independent basis
                # moments: fresh ones each step, so training cannot tune the
                # encoder to a fixed set of noise.
                mean, log_var = model.encoder.moments(x, noise)
                contrast = (z - mean) * torch.exp(-0.5 * log_var)
                reference_kl = model.kl_divergence(mean, log_var)
            else:
                contrast, reference_kl = z, 0.0
        if context.step == "critic":
            return {"critic_loss": self._discriminator_loss(model, x, contrast, context)}
        kl = (model.critic(x, contrast).mean(dim=0) + reference_kl).mean()
        reconstruction = -model.decoder.log_prob(x, z).mean()
        weight = self.kl_weight(context.epoch) if context.training else 1.0
        terms = {
            "loss": reconstruction + (weight * self.beta) * kl,
            "reconstruction": reconstruction,
            "kl": kl,
        }
        if not context.training:
            terms["critic_loss"] = self._discriminator_loss(model, x, contrast, context)
        return terms

    def diagnostics(
        self, model: VariationalAutoencoder, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        x = batch.X
        z = model.encoder.sample(x, _encoder_noise(model.encoder, x, 1, context.generator))[0]
        mean, log_var = model.encoder(x)
        if self.adaptive_contrast:
            scores = gaussian_encoder_scores(z, mean, log_var)
        else:
            scores = model.critic.pairwise(x, z)
        return {"mutual_information": info_nce_bound(scores), "active_units": active_units(mean)}

    @staticmethod
    def _discriminator_loss(
        model: VariationalAutoencoder,
        x: torch.Tensor,
        contrast: torch.Tensor,
        context: StepContext,
    ) -> torch.Tensor:
        """Logistic loss of ``T``: posterior draws are 1, prior draws are 0.

        ``-log sigmoid(T) = softplus(-T)`` and ``-log(1 - sigmoid(T)) =
        softplus(T)``, computed without forming probabilities.
        """
        reference = torch.randn(
            contrast.shape, generator=context.generator, device=x.device, dtype=x.dtype
        )
        return F.softplus(-model.critic(x, contrast)).mean() + F.softplus(
            model.critic(x, reference)
        ).mean()


def _encoder_noise(
    encoder: ImplicitEncoder, x: torch.Tensor, n_draws: int, generator: torch.Generator
) -> torch.Tensor:
    """Standard normal ``eps`` of shape (n_draws, n_samples, n_noise), per row."""
    return torch.randn(
        (n_draws, x.shape[0], encoder.n_noise),
        generator=generator,
        device=x.device,
        dtype=x.dtype,
    )
