"""MINE: mutual information neural estimation, and the InfoMax objective built on it.

Belghazi et al., "Mutual Information Neural Estimation", ICML 2018: a critic
``T(x, z)`` is trained to maximise the Donsker-Varadhan lower bound on
I(x; z) (:func:`~sklearn_vae.neural._mutual_information.donsker_varadhan_bound`);
the maximised bound estimates I(x; z).

* :class:`MutualInformationNeuralEstimation` estimates I(x; z) between the rows
  of ``X`` and a per-row array ``"z"`` of the training data: the model is the
  critic alone.
* :class:`InfoMax` adds ``mi_weight`` times that bound, for pairs
  ``(x, z ~ q(z|x))`` of the encoder, to any Gaussian-encoder objective (an
  InfoMax VAE): the encoder is rewarded for codes that carry information
  about ``x``, which counters posterior collapse. The critic
  (``model.critic``) has its own optimiser step.

The paper corrects the bias of the mini-batch gradient of ``log E[exp T]``
with a moving average of its denominator; here every one of the ``n (n - 1)``
off-diagonal pairs of a batch samples the marginals, which already makes that
denominator a mean over many pairs.
"""

from __future__ import annotations

import torch
from torch import nn

from ._engine import Batch, Objective, StepContext, UpdateStep
from ._modules import VariationalAutoencoder
from ._mutual_information import PairCritic, donsker_varadhan_bound, with_critic_step
from ._objectives import sample_posterior

__all__ = ["InfoMax", "MutualInformationNeuralEstimation"]


class MutualInformationNeuralEstimation(Objective):
    """Train a :class:`PairCritic` to maximise MINE's bound on I(x; z).

    The training data's rows are ``x``; its per-row array ``"z"`` holds the
    paired ``z``. Terms: ``loss`` (the negative bound) and
    ``mutual_information`` (the bound, in nats).

    Examples
    --------
    >>> import torch
    >>> from sklearn_vae.neural._engine import TrainingData
    >>> from sklearn_vae.neural._engine import StepContext
    >>> x = torch.randn(8, 2, dtype=torch.float64)
    >>> data = TrainingData(x, z=x.clone())
    >>> critic = PairCritic(2, 2, (4,), "relu").double()
    >>> context = StepContext(0, torch.Generator(), True, "model")
    >>> terms = MutualInformationNeuralEstimation().loss_terms(
    ...     critic, data.batch(torch.arange(8)), context)
    >>> sorted(terms)
    ['loss', 'mutual_information']
    """

    def loss_terms(
        self, model: PairCritic, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        bound = donsker_varadhan_bound(model.pairwise(batch.X, batch.take("z")))
        return {"loss": -bound, "mutual_information": bound}


class InfoMax(Objective):
    """A Gaussian-encoder objective minus ``mi_weight`` times MINE's bound.

    ``loss = objective.loss - mi_weight * I_DV(x; z)``, where ``I_DV`` is the
    Donsker-Varadhan bound of ``model.critic`` on a fresh draw
    ``z ~ q(z|x)`` per row (reparameterised, so its gradient reaches the
    encoder). The critic's own step minimises ``critic_loss = -I_DV`` on
    detached draws. Every term of the wrapped objective is kept; the bound is
    logged as ``mine_bound``, and the wrapped objective's diagnostics (its
    ``mutual_information`` estimate, comparable across objectives) are kept.

    Parameters
    ----------
    objective : Objective
        The objective to add the bound to; its model has a Gaussian encoder.
    mi_weight : float
        Weight of the bound (0 trains the critic as a pure estimator).
    """

    def __init__(self, objective: Objective, mi_weight: float) -> None:
        self.objective = objective
        self.mi_weight = mi_weight

    def update_steps(self, model: nn.Module) -> list[UpdateStep]:
        return with_critic_step(model, self.objective.update_steps(model))

    def loss_terms(
        self, model: VariationalAutoencoder, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        if context.step == "critic":
            with torch.no_grad():
                z, _, _ = sample_posterior(model, batch.X, context.generator)
            return {"critic_loss": -donsker_varadhan_bound(model.critic.pairwise(batch.X, z))}
        terms = self.objective.loss_terms(model, batch, context)
        z, _, _ = sample_posterior(model, batch.X, context.generator)
        bound = donsker_varadhan_bound(model.critic.pairwise(batch.X, z))
        terms["loss"] = terms["loss"] - self.mi_weight * bound
        terms["mine_bound"] = bound
        if not context.training:
            terms["critic_loss"] = -bound
        return terms


    def diagnostics(
        self, model: VariationalAutoencoder, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        return self.objective.diagnostics(model, batch, context)
