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
Gaussian ``r(z|x) = N(mu(x), diag sigma^2(x))`` of its own moments (estimated
from the draws of each row) instead of with the prior: the discriminator sees
standardised draws ``(z - mu) / sigma`` against ``N(0, I)``, a much easier
problem, and::

    KL(q || p) = KL(q~ || N(0, I)) + KL(r || p)

where ``q~`` is the law of the standardised draws (estimated by ``T``) and the
second term is analytic (both ``log r`` and ``log p`` are quadratic in ``z``,
so only the first two moments of ``q`` matter).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ._engine import Batch, StepContext, UpdateStep
from ._modules import VariationalAutoencoder, make_mlp
from ._mutual_information import (
    gaussian_encoder_scores,
    info_nce_bound,
    with_critic_step,
)
from ._objectives import ELBO

__all__ = ["AdversarialVariationalBayes", "ImplicitEncoder", "draw_moments", "encoder_draws"]

#: Fixed noise draws per row behind :meth:`ImplicitEncoder.forward`.
N_MOMENT_DRAWS = 32

# Floor of the moment-matched variance: an encoder that learned to ignore its
# noise has zero spread, and its log-variance must stay finite.
_VARIANCE_FLOOR = 1e-6


class ImplicitEncoder(nn.Module):
    """An implicit posterior ``z = f(x, eps)``, ``eps ~ N(0, I_n_noise)``.

    :meth:`sample` draws from ``q(z|x)``. Called as a module, it returns the
    mean and log-variance of ``N_MOMENT_DRAWS`` draws made from a fixed set of
    noise vectors shared by every row (common random numbers, a buffer drawn
    at construction), like :class:`~sklearn_vae.neural._modules.GaussianEncoder`
    returns its Gaussian's parameters: a deterministic, row-independent code
    and a Gaussian fitted to the implicit posterior, for ``transform`` and as
    the proposal of importance sampling.

    Parameters
    ----------
    n_features : int
        Width of ``x``.
    n_components : int
        Latent dimension.
    hidden_layer_sizes : sequence of int
        Hidden widths, input side first.
    activation : str
        One of :data:`~sklearn_vae.neural._modules.ACTIVATIONS`.
    n_noise : int or None, default=None
        Width of ``eps``; None uses ``n_components``.

    Attributes
    ----------
    network : torch.nn.Sequential
        Maps ``[x, eps]`` to ``z``.
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
        self.network = make_mlp(
            n_features + self.n_noise, hidden_layer_sizes, n_components, activation
        )
        # Drawn from torch's generator like the weights, so it is seeded with
        # them (the estimators build models under seeded_module_init).
        self.register_buffer("moment_noise", torch.randn(N_MOMENT_DRAWS, self.n_noise))

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
        n_draws, n_samples = noise.shape[0], x.shape[0]
        noise = noise.reshape(n_draws, -1, self.n_noise).expand(n_draws, n_samples, -1)
        return self.network(torch.cat([x.expand(n_draws, -1, -1), noise], dim=-1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the draws made with :attr:`moment_noise`.

        Returns
        -------
        mean, log_var : torch.Tensor of shape (n_samples, n_components)
        """
        return draw_moments(self.sample(x, self.moment_noise))


def encoder_draws(encoder: nn.Module) -> int:
    """Posterior draws per row behind one call of ``encoder`` (for memory budgets)."""
    return N_MOMENT_DRAWS if isinstance(encoder, ImplicitEncoder) else 1


def draw_moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean and log-variance of draws ``z`` of shape (n_draws, n_samples, d)."""
    mean = z.mean(dim=0)
    variance = (z - mean).square().mean(dim=0) + _VARIANCE_FLOOR
    return mean, torch.log(variance)


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

    Parameters
    ----------
    beta : float
        Weight of the KL term.
    kl_warmup : int
        Epochs of linear KL annealing.
    n_train_samples : int
        Posterior draws per row and step; at least 2 with adaptive contrast
        (the moments are estimated from them).
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
        if adaptive_contrast and n_train_samples < 2:
            raise ValueError(
                "Adaptive contrast estimates each row's posterior mean and "
                "variance from its draws, so it needs n_train_samples >= 2, got "
                f"n_train_samples={n_train_samples}."
            )
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
            z = model.encoder.sample(
                x, _encoder_noise(model.encoder, x, self.n_train_samples, context.generator)
            )
            if self.adaptive_contrast:
                mean, log_var = draw_moments(z)
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
        if self.adaptive_contrast:
            scores = gaussian_encoder_scores(z, *model.encoder(x))
        else:
            scores = model.critic.pairwise(x, z)
        return {"mutual_information": info_nce_bound(scores)}

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
