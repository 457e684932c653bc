"""How VariationalGMMPrior trains: its two objectives and its collapse guard.

Training has two phases, both run by the shared
:class:`~sklearn_vae.neural._engine.TrainingEngine`:

1. :class:`NeighborEmbeddingPretraining` trains the encoder and decoder as an
   autoencoder (codes = posterior means), plus parametric UMAP's neighbour
   term when a neighbour graph is given. A mixture fitted on these codes
   initialises the prior.
2. :class:`MixturePriorELBO` trains the encoder and decoder on VaDE's
   negative ELBO, plus SCAN's neighbour-consistency and batch-entropy terms,
   and summarises the epoch's responsibilities; at the end of each epoch
   :class:`MixtureMaximization` sets the mixture prior in closed form from
   that summary (the MAP weights under the Dirichlet prior, and the means and
   covariances), as EM's M-step would, and :class:`AssignmentConvergence`
   stops training once the clusters no longer change.

:class:`CollapseGuard` is an epoch-end callback of phase 2 that re-seeds
components whose weight collapsed and records it in the history.

The neighbour graph travels as the per-row array ``"neighbors"`` of the
:class:`~sklearn_vae.neural._engine.TrainingData`; each step pairs every item
with one of its neighbours drawn at random.
"""

from __future__ import annotations

from typing import Any

import torch

from ._clustering_losses import (
    batch_entropy,
    neighbor_consistency_loss,
    neighbor_embedding_loss,
    sample_negatives,
)
from .._distributed import all_reduce_sum
from ._engine import Batch, Callback, Objective, StepContext, TrainingEngine
from ._mixture_prior import MixturePriorVAE, MixtureStatistics, split_collapsed_components
from ._modules import GaussianDecoder
from ._objectives import mutual_information_diagnostics, reparameterize

__all__ = [
    "AssignmentConvergence",
    "CollapseGuard",
    "MixtureMaximization",
    "MixturePriorELBO",
    "NeighborEmbeddingPretraining",
]

#: In-batch negatives per item for the neighbour-embedding term (UMAP's
#: ``negative_sample_rate`` default).
N_NEGATIVES = 5


def _encode_with_neighbor(
    model: MixturePriorVAE, batch: Batch, generator: torch.Generator, with_neighbor: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Encode the batch and, if asked, one random graph neighbour of each item.

    Returns the posterior means and log-variances of the batch, and the
    neighbours' posterior means (None without a neighbour). Items and
    neighbours go through the encoder in one call: on small batches one larger
    matrix product is markedly cheaper than two.
    """
    if not with_neighbor:
        mean, log_var = model.encoder(batch.X)
        return mean, log_var, None
    neighbors = batch.take("neighbors")
    column = torch.randint(
        neighbors.shape[1], (len(batch),), generator=generator, device=neighbors.device
    )
    rows = neighbors[torch.arange(len(batch), device=neighbors.device), column]
    mean, log_var = model.encoder(torch.cat([batch.X, batch.data.X[rows]]))
    return mean[: len(batch)], log_var[: len(batch)], mean[len(batch) :]


def _uses_neighbors(batch: Batch) -> bool:
    return "neighbors" in batch.data.arrays


def _neighbor_embedding_term(
    mean: torch.Tensor, neighbor_mean: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Batch mean of the UMAP term, with in-batch negatives drawn from ``generator``."""
    negatives = sample_negatives(len(mean), N_NEGATIVES, generator, mean.device)
    return neighbor_embedding_loss(mean, neighbor_mean, mean[negatives]).mean()


class NeighborEmbeddingPretraining(Objective):
    """Autoencoder reconstruction plus parametric UMAP's neighbour term.

    ``loss = reconstruction + neighbor_weight * neighbor_embedding`` where the
    reconstruction decodes the posterior mean (no sampling: this phase shapes
    the codes a mixture is then fitted to). For a Gaussian likelihood the
    reconstruction is the squared error (the unit-variance Gaussian negative
    log-likelihood up to a constant): a learned variance would shrink as the
    fit improves and drown the neighbour term, which decides how well the codes
    cluster.

    Parameters
    ----------
    neighbor_weight : float
        Weight of the neighbour term; ignored without a ``"neighbors"`` array.
    """

    def __init__(self, neighbor_weight: float) -> None:
        self.neighbor_weight = neighbor_weight

    def loss_terms(
        self, model: MixturePriorVAE, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        with_neighbor = _uses_neighbors(batch) and self.neighbor_weight > 0
        mean, _, neighbor_mean = _encode_with_neighbor(
            model, batch, context.generator, with_neighbor
        )
        if isinstance(model.decoder, GaussianDecoder):
            reconstruction = 0.5 * (batch.X - model.decoder.mean(mean)).square().sum(1).mean()
        else:
            reconstruction = -model.decoder.log_prob(batch.X, mean).mean()
        terms = {"reconstruction": reconstruction}
        loss = reconstruction
        if with_neighbor:
            terms["neighbor_embedding"] = _neighbor_embedding_term(mean, neighbor_mean, context.generator)
            loss = loss + self.neighbor_weight * terms["neighbor_embedding"]
        terms["loss"] = loss
        return terms


class MixturePriorELBO(Objective):
    """VaDE's negative ELBO with optional Dirichlet and neighbour-consistency terms.

    Per sample, with one reparameterised draw ``z ~ q(z|x)`` and
    ``gamma = p(c|z)``::

        loss = -log p(x|z) + kl_latent + kl_cluster
               - log Dir(pi | alpha) / n_samples
               + consistency_weight * (consistency - batch_entropy)
               + neighbor_weight * neighbor_embedding

    ``kl_latent`` and ``kl_cluster`` are
    :meth:`~sklearn_vae.neural._mixture_prior.GaussianMixturePrior.kl_terms`.
    The Dirichlet term is the whole data set's log prior spread over its rows,
    so the objective is the MAP objective of the weights (``n_samples`` is the
    number of rows of the training data). The consistency term
    compares ``q(c|x)`` at the posterior means of an item and of one of its
    graph neighbours (SCAN); the batch entropy keeps it from merging clusters.
    Only the ELBO terms enter the validation loss's meaning; the others are
    logged under their names.

    Every training step also adds its rows' posterior moments and
    responsibilities to :attr:`statistics`, the summary of the epoch so far
    that :class:`MixtureMaximization` turns into the prior's parameters.
    Once per epoch
    :func:`~sklearn_vae.neural._objectives.mutual_information_diagnostics`
    logs ``mutual_information``.

    Parameters
    ----------
    weight_concentration_prior : float or None
        ``alpha`` of the symmetric Dirichlet; None for no prior (maximum
        likelihood weights).
    consistency_weight : float
        Weight of the SCAN terms; ignored without a ``"neighbors"`` array.
    neighbor_weight : float, default=0.0
        Weight of the neighbour-preserving term of the pretraining, kept
        during joint training so the codes do not drift from the input's
        neighbourhoods; ignored without a ``"neighbors"`` array.

    Attributes
    ----------
    statistics : MixtureStatistics or None
        Sufficient statistics of the training rows seen since the last
        :meth:`reset_statistics` (None before the first step).
    assignments : torch.Tensor of shape (n_samples,) or None
        Cluster of each training row (the most probable at its posterior
        mean) when it was last trained on; -1 for rows not seen yet.
    """

    def __init__(
        self,
        weight_concentration_prior: float | None,
        consistency_weight: float,
        neighbor_weight: float = 0.0,
    ) -> None:
        self.weight_concentration_prior = weight_concentration_prior
        self.consistency_weight = consistency_weight
        self.neighbor_weight = neighbor_weight
        self.statistics: MixtureStatistics | None = None
        self.assignments: torch.Tensor | None = None

    def reset_statistics(self) -> None:
        """Start a new summary of responsibilities (at each epoch's start)."""
        self.statistics = None

    def _record(self, model: MixturePriorVAE, batch: Batch, mean, log_var, log_gamma) -> None:
        batch_statistics = model.prior.sufficient_statistics(mean, log_var, log_gamma)
        self.statistics = (
            batch_statistics if self.statistics is None else self.statistics.merge(batch_statistics)
        )
        if self.assignments is None:
            self.assignments = torch.full(
                (len(batch.data),), -1, dtype=torch.int64, device=mean.device
            )
        with torch.no_grad():
            self.assignments[batch.indices] = model.prior.log_responsibilities(mean).argmax(dim=1)

    def loss_terms(
        self, model: MixturePriorVAE, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        # One sampled neighbour per item serves both neighbour terms.
        with_neighbor = _uses_neighbors(batch) and (
            self.neighbor_weight > 0 or self.consistency_weight > 0
        )
        mean, log_var, neighbor_mean = _encode_with_neighbor(
            model, batch, context.generator, with_neighbor
        )
        noise = torch.randn(
            mean.shape, generator=context.generator, device=mean.device, dtype=mean.dtype
        )
        z = reparameterize(mean, log_var, noise)
        log_gamma = model.prior.log_responsibilities(z)
        if context.training and context.step == "model":
            self._record(model, batch, mean, log_var, log_gamma)
        kl = {name: value.mean() for name, value in model.prior.kl_terms(mean, log_var, log_gamma).items()}
        reconstruction = -model.decoder.log_prob(batch.X, z).mean()
        terms = {"reconstruction": reconstruction, **kl}
        loss = reconstruction + kl["kl_latent"] + kl["kl_cluster"]
        if self.weight_concentration_prior is not None:
            log_prior = model.prior.log_dirichlet_prior(self.weight_concentration_prior)
            terms["log_weight_prior"] = log_prior / len(batch.data)
            loss = loss - terms["log_weight_prior"]
        if with_neighbor:
            if self.neighbor_weight > 0:
                terms["neighbor_embedding"] = _neighbor_embedding_term(
                    mean, neighbor_mean, context.generator
                )
                loss = loss + self.neighbor_weight * terms["neighbor_embedding"]
            if self.consistency_weight > 0:
                terms["consistency"] = neighbor_consistency_loss(
                    model.prior.log_responsibilities(mean),
                    model.prior.log_responsibilities(neighbor_mean),
                ).mean()
                terms["batch_entropy"] = batch_entropy(log_gamma)
                loss = loss + self.consistency_weight * (
                    terms["consistency"] - terms["batch_entropy"]
                )
        terms["loss"] = loss
        return terms

    def diagnostics(
        self, model: MixturePriorVAE, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        return mutual_information_diagnostics(model, batch, context)


def _mixture_elbo(engine: TrainingEngine) -> MixturePriorELBO:
    """The MixturePriorELBO the engine trains with (InfoMax wraps one)."""
    objective = engine.objective
    while not isinstance(objective, MixturePriorELBO):
        objective = objective.objective
    return objective


class MixtureMaximization(Callback):
    """Set the mixture prior in closed form from each epoch's responsibilities.

    At the start of every epoch the summary of :class:`MixturePriorELBO` is
    reset; at its end
    :meth:`~sklearn_vae.neural._mixture_prior.GaussianMixturePrior.maximization_step`
    sets the weights to their MAP estimate under the Dirichlet prior (the
    maximum-likelihood ``N_c / N`` without one) and the means and covariances
    to the maximisers of the ELBO, for the ``N`` rows the epoch trained on. A
    weight prior that acted through gradient steps would move the weights by
    about the learning rate per step; the closed form applies it fully every
    epoch.

    Parameters
    ----------
    weight_concentration_prior : float or None
        ``alpha`` of the symmetric Dirichlet prior on the weights.
    """

    def __init__(self, weight_concentration_prior: float | None) -> None:
        self.weight_concentration_prior = weight_concentration_prior

    def on_epoch_begin(self, engine: TrainingEngine, epoch: int) -> None:
        _mixture_elbo(engine).reset_statistics()

    def on_epoch_end(self, engine: TrainingEngine, record: dict[str, Any]) -> None:
        statistics = _mixture_elbo(engine).statistics
        if statistics is not None:
            # Under a process group: every rank's shard, so the ranks' priors
            # stay identical.
            engine.model.prior.maximization_step(
                statistics.all_reduce(),
                weight_concentration_prior=self.weight_concentration_prior,
            )


class AssignmentConvergence(Callback):
    """Stop joint training once the cluster assignments have settled.

    After each epoch, ``assignment_change`` in the history is the share of
    training rows whose cluster (at their posterior mean, when last trained
    on) differs from the epoch before. Training has converged, and stops, when
    that share, averaged over the last ``patience`` epochs, is at most
    ``tol``: a clustering is done when its clusters no longer change, however
    slowly the networks still improve their reconstructions (DEC and IDEC
    stop on the same quantity). The average, not every epoch, must stay
    below ``tol``, because a settled clustering still has rows on its
    boundaries that flip back and forth: on the digits with tanh networks
    about 10 of 1797 rows do each epoch, with single epochs above 1 %, so
    that asking every epoch of a window to stay under 1 % ran out of epochs
    on 4 of 20 seeds with the accuracy long settled.

    Parameters
    ----------
    tol : float
        Largest mean share of rows that may change cluster per epoch over
        the window for the clustering to count as settled (with 0, every
        epoch of the window must change none).
    patience : int
        Epochs in the window; training stops once ``patience`` changes have
        been measured and their mean is at most ``tol``.
    """

    def __init__(self, tol: float, patience: int) -> None:
        self.tol = tol
        self.patience = patience

    def on_train_begin(self, engine: TrainingEngine) -> None:
        self._previous: torch.Tensor | None = None
        self._changes: list[float] = []

    def on_epoch_end(self, engine: TrainingEngine, record: dict[str, Any]) -> None:
        assignments = _mixture_elbo(engine).assignments
        if assignments is None:
            return
        assignments = assignments.clone()
        if self._previous is not None:
            seen = (assignments >= 0) & (self._previous >= 0)
            changed = ((assignments != self._previous) & seen).sum()
            # Counted over every rank's shard, so the ranks stop together.
            changed, n_seen = all_reduce_sum(torch.stack([changed, seen.sum()])).tolist()
            record["assignment_change"] = changed / max(1, n_seen)
            window = max(1, self.patience)
            self._changes = (self._changes + [record["assignment_change"]])[-window:]
            if len(self._changes) == window and sum(self._changes) / window <= self.tol:
                engine.stop_training = True
        self._previous = assignments


class CollapseGuard(Callback):
    """Re-seed collapsed mixture components at the end of every epoch.

    Calls :func:`~sklearn_vae.neural._mixture_prior.split_collapsed_components`
    on the model's prior, after the epoch's M-step
    (:class:`MixtureMaximization`), which cannot revive a component that no
    row chose. Every event is stored in the epoch's history record under
    ``"collapse_events"``.

    Parameters
    ----------
    weight_threshold : float
        Components with a smaller weight are re-seeded.
    """

    def __init__(self, weight_threshold: float) -> None:
        self.weight_threshold = weight_threshold

    def on_epoch_end(self, engine: TrainingEngine, record: dict[str, Any]) -> None:
        events = split_collapsed_components(engine.model.prior, self.weight_threshold)
        if not events:
            return
        record["collapse_events"] = events
