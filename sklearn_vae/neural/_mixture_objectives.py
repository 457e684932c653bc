"""How VariationalGMMPrior trains: its two objectives and its collapse guard.

Training has two phases, both run by the shared
:class:`~sklearn_vae.neural._engine.TrainingEngine`:

1. :class:`NeighborEmbeddingPretraining` trains the encoder and decoder as an
   autoencoder (codes = posterior means), plus parametric UMAP's neighbour
   term when a neighbour graph is given. A mixture fitted on these codes
   initialises the prior.
2. :class:`MixturePriorELBO` trains encoder, decoder and prior jointly on
   VaDE's negative ELBO, plus an optional Dirichlet MAP term on the weights and
   SCAN's neighbour-consistency and batch-entropy terms.

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
from ._engine import Batch, Callback, Objective, StepContext, TrainingEngine
from ._mixture_prior import MixturePriorVAE, split_collapsed_components
from ._modules import GaussianDecoder
from ._objectives import mutual_information_diagnostics, reparameterize

__all__ = ["CollapseGuard", "MixturePriorELBO", "NeighborEmbeddingPretraining"]

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


class CollapseGuard(Callback):
    """Re-seed collapsed mixture components at the end of every epoch.

    Calls :func:`~sklearn_vae.neural._mixture_prior.split_collapsed_components`
    on the model's prior. Re-seeding changes the prior's parameters under the
    optimiser, so Adam's running moments of those parameters are reset. Every
    event is stored in the epoch's history record under ``"collapse_events"``.

    Parameters
    ----------
    weight_threshold : float
        Components with a smaller weight are re-seeded.
    """

    def __init__(self, weight_threshold: float) -> None:
        self.weight_threshold = weight_threshold

    def on_epoch_end(self, engine: TrainingEngine, record: dict[str, Any]) -> None:
        prior = engine.model.prior
        events = split_collapsed_components(prior, self.weight_threshold)
        if not events:
            return
        record["collapse_events"] = events
        for optimizer in engine.optimizers.values():
            for parameter in prior.parameters():
                optimizer.state.pop(parameter, None)
