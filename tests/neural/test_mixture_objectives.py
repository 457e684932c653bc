"""Tests for VariationalGMMPrior's training objectives."""

import math

import pytest
import torch

from sklearn_vae.neural._engine import StepContext, TrainingData
from sklearn_vae.neural._mixture_objectives import (
    MixturePriorELBO,
    NeighborEmbeddingPretraining,
)
from sklearn_vae.neural._mixture_prior import GaussianMixturePrior, MixturePriorVAE
from sklearn_vae.neural._modules import (
    BernoulliDecoder,
    GaussianDecoder,
    GaussianEncoder,
)


def _model(decoder_class=GaussianDecoder, n_features=6, latent_dim=2, n_components=3):
    torch.manual_seed(0)
    encoder = GaussianEncoder(n_features, latent_dim, (8,), "relu")
    decoder = decoder_class(latent_dim, n_features, (8,), "relu")
    return MixturePriorVAE(encoder, decoder, GaussianMixturePrior(n_components, latent_dim)).double()


def _batch(with_neighbors, n_samples=20, n_features=6):
    X = torch.rand(n_samples, n_features, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    arrays = {}
    if with_neighbors:
        arrays["neighbors"] = torch.stack([(torch.arange(n_samples) + s) % n_samples for s in (1, 2)], dim=1)
    return TrainingData(X, **arrays).batch(torch.arange(12))


def _context(seed=0, training=True):
    return StepContext(epoch=0, generator=torch.Generator().manual_seed(seed), training=training, step="model")


@pytest.mark.parametrize("decoder_class", [GaussianDecoder, BernoulliDecoder])
def test_pretraining_terms(decoder_class):
    model = _model(decoder_class)
    batch = _batch(with_neighbors=True)
    terms = NeighborEmbeddingPretraining(neighbor_weight=2.0).loss_terms(model, batch, _context())
    torch.testing.assert_close(terms["loss"], terms["reconstruction"] + 2.0 * terms["neighbor_embedding"])
    mean, _ = model.encoder(batch.X)
    if decoder_class is GaussianDecoder:
        expected = 0.5 * (batch.X - model.decoder.mean(mean)).square().sum(1).mean()
    else:
        expected = -model.decoder.log_prob(batch.X, mean).mean()
    torch.testing.assert_close(terms["reconstruction"], expected)
    plain = NeighborEmbeddingPretraining(2.0).loss_terms(model, _batch(with_neighbors=False), _context())
    assert set(plain) == {"loss", "reconstruction"}


def test_pretraining_does_not_train_the_prior_or_the_decoder_variance():
    model = _model()
    NeighborEmbeddingPretraining(1.0).loss_terms(model, _batch(True), _context())["loss"].backward()
    assert all(p.grad is None for p in model.prior.parameters())
    assert model.decoder.log_variance.grad is None
    assert model.encoder.network[0].weight.grad is not None


def test_mixture_elbo_terms_add_up_and_train_everything():
    model = _model()
    batch = _batch(with_neighbors=True)
    terms = MixturePriorELBO(
        weight_concentration_prior=5.0, consistency_weight=0.5, neighbor_weight=2.0
    ).loss_terms(model, batch, _context())
    expected = (
        terms["reconstruction"] + terms["kl_latent"] + terms["kl_cluster"]
        - terms["log_weight_prior"]
        + 0.5 * (terms["consistency"] - terms["batch_entropy"])
        + 2.0 * terms["neighbor_embedding"]
    )
    torch.testing.assert_close(terms["loss"], expected)
    # The Dirichlet log prior of the whole data set, spread over its 20 rows.
    torch.testing.assert_close(
        terms["log_weight_prior"], torch.tensor(4.0 * 3 * math.log(1 / 3) / 20, dtype=torch.float64)
    )
    terms["loss"].backward()
    assert all(p.grad is not None and torch.all(torch.isfinite(p.grad)) for p in model.parameters())


def test_mixture_elbo_without_options_is_plain_vade():
    model = _model()
    terms = MixturePriorELBO(None, consistency_weight=1.0).loss_terms(model, _batch(False), _context())
    assert set(terms) == {"loss", "reconstruction", "kl_latent", "kl_cluster"}
    torch.testing.assert_close(terms["loss"], terms["reconstruction"] + terms["kl_latent"] + terms["kl_cluster"])
    no_consistency = MixturePriorELBO(None, 0.0).loss_terms(model, _batch(True), _context())
    assert set(no_consistency) == set(terms)


def test_mixture_elbo_noise_comes_from_the_context_generator():
    model = _model()
    objective = MixturePriorELBO(None, 1.0)
    first = objective.loss_terms(model, _batch(True), _context(seed=3))["loss"]
    again = objective.loss_terms(model, _batch(True), _context(seed=3))["loss"]
    other = objective.loss_terms(model, _batch(True), _context(seed=4))["loss"]
    assert float(first.detach()) == float(again.detach()) != float(other.detach())
