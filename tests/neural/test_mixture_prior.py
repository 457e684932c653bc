"""Tests for the latent Gaussian-mixture prior module and the collapse guard."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from torch.distributions import Categorical, MultivariateNormal, Normal, kl_divergence

from sklearn_vae.neural._mixture_prior import (
    COVARIANCE_TYPES,
    GaussianMixturePrior,
    MixtureStatistics,
    map_weights,
    split_collapsed_components,
)


def _random_prior(covariance_type, seed, n_components=3, latent_dim=4, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    prior = GaussianMixturePrior(n_components, latent_dim, covariance_type).to(dtype)
    with torch.no_grad():
        for parameter in prior.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=dtype))
    return prior


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_densities_match_scipy(covariance_type):
    prior = _random_prior(covariance_type, seed=0)
    z = torch.randn(7, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    means = prior.means.detach().numpy()
    covariances = prior.covariance_matrices().detach().numpy()
    expected = np.stack(
        [multivariate_normal(means[k], covariances[k]).logpdf(z.numpy()) for k in range(3)],
        axis=1,
    )
    np.testing.assert_allclose(prior.component_log_prob(z).detach().numpy(), expected, rtol=1e-10)
    log_weights = np.log(prior.weights.detach().numpy())
    np.testing.assert_allclose(
        prior.log_prob(z).detach().numpy(), logsumexp(expected + log_weights, axis=1), rtol=1e-10
    )
    gamma = prior.log_responsibilities(z).exp()
    np.testing.assert_allclose(gamma.sum(dim=1).detach().numpy(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        prior.variances.detach().numpy(), np.diagonal(covariances, axis1=1, axis2=2), rtol=1e-12
    )
    variances = prior.variances.detach().numpy()
    if covariance_type == "spherical":
        assert prior.log_variances.shape == (3, 1)
        assert np.all(variances == variances[:, :1])
    if covariance_type != "full":
        np.testing.assert_array_equal(covariances, covariances * np.eye(4))  # diagonal


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_kl_terms_match_torch_distributions(covariance_type):
    prior = _random_prior(covariance_type, seed=2)
    generator = torch.Generator().manual_seed(3)
    mean = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    log_var = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    log_gamma = prior.log_responsibilities(mean + torch.randn(6, 4, generator=generator, dtype=torch.float64))
    terms = prior.kl_terms(mean, log_var, log_gamma)

    posterior = MultivariateNormal(mean[:, None, :], torch.diag_embed(log_var.exp())[:, None])
    components = MultivariateNormal(prior.means[None], prior.covariance_matrices()[None])
    per_component = kl_divergence(posterior, components)
    expected_latent = (log_gamma.exp() * per_component).sum(dim=1)
    expected_cluster = kl_divergence(Categorical(logits=log_gamma), Categorical(logits=prior.weight_logits))
    torch.testing.assert_close(terms["kl_latent"], expected_latent)
    torch.testing.assert_close(terms["kl_cluster"], expected_cluster)


def test_negative_elbo_terms_equal_monte_carlo_kl():
    """sum of both terms is KL(q(z,c|x) || p(z,c)) with q(c|x) fixed."""
    prior = _random_prior("diag", seed=4, latent_dim=2)
    mean = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    log_var = torch.tensor([[-1.0, -0.5]], dtype=torch.float64)
    log_gamma = torch.log_softmax(torch.tensor([[0.2, -1.0, 0.5]], dtype=torch.float64), dim=1)
    analytic = sum(prior.kl_terms(mean, log_var, log_gamma).values())

    generator = torch.Generator().manual_seed(5)
    n = 200_000
    z = mean + (0.5 * log_var).exp() * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    log_q_z = Normal(mean, (0.5 * log_var).exp()).log_prob(z).sum(dim=1)
    joint = prior.joint_log_prob(z)
    gamma = log_gamma.exp()
    monte_carlo = (gamma * (log_gamma + log_q_z[:, None] - joint)).sum(dim=1).mean()
    assert abs(float(analytic.detach()) - float(monte_carlo.detach())) < 0.02


@given(
    scale=st.floats(0.0, 30.0),
    seed=st.integers(0, 2**16),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_extreme_parameters_stay_finite(scale, seed, covariance_type, dtype):
    prior = _random_prior(covariance_type, seed, dtype=dtype)
    with torch.no_grad():
        for parameter in prior.parameters():
            parameter.mul_(scale)
        if covariance_type == "full":  # keep the precision factor's entries comparable
            prior.precision_cholesky_lower.clamp_(-3, 3)
    generator = torch.Generator().manual_seed(seed + 1)
    mean = scale * torch.randn(5, 4, generator=generator, dtype=dtype)
    log_var = scale * torch.randn(5, 4, generator=generator, dtype=dtype).clamp(-1, 1)
    log_gamma = prior.log_responsibilities(mean)
    terms = prior.kl_terms(mean, log_var, log_gamma)
    loss = sum(t.sum() for t in terms.values()) - prior.log_dirichlet_prior(0.5)
    loss.backward()
    assert all(t.dtype == dtype for t in terms.values())
    assert torch.isfinite(loss)
    for t in terms.values():
        assert torch.all(t >= -1e-3 * (1 + t.abs()))
    assert all(torch.all(torch.isfinite(p.grad)) for p in prior.parameters())


@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "full"])
def test_initialize_round_trips_and_guards_zeros(covariance_type):
    prior = GaussianMixturePrior(3, 2, covariance_type).double()
    weights = np.array([0.5, 0.5, 0.0])
    means = np.arange(6.0).reshape(3, 2)
    variances = np.array([[1.0, 3.0], [0.5, 0.5], [0.0, 0.0]])
    prior.initialize(weights, means, variances)
    assert torch.all(torch.isfinite(prior.weight_logits))
    assert torch.all(torch.isfinite(prior.log_variances))
    np.testing.assert_allclose(prior.weights.detach().numpy()[:2], [0.5, 0.5])
    np.testing.assert_allclose(prior.means.detach().numpy(), means)
    expected = variances if covariance_type != "spherical" else variances.mean(axis=1, keepdims=True) * [1, 1]
    np.testing.assert_allclose(prior.variances.detach().numpy()[:2], expected[:2])


def test_initialize_takes_gaussian_mixture_covariances_of_every_type():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(3, 4, 4))
    matrices = factors @ factors.transpose(0, 2, 1) + np.eye(4)
    layouts = {
        "full": matrices,
        "diag": np.diagonal(matrices, axis1=1, axis2=2),
        "spherical": np.diagonal(matrices, axis1=1, axis2=2).mean(axis=1),
    }
    for covariance_type, covariances in layouts.items():
        prior = GaussianMixturePrior(3, 4, covariance_type).double()
        prior.initialize(np.full(3, 1 / 3), rng.normal(size=(3, 4)), covariances)
        np.testing.assert_allclose(prior.covariances().detach().numpy(), covariances, rtol=1e-10)
        assert prior.covariances().shape == covariances.shape


def _weighted_codes(seed, n_samples=50, latent_dim=3, n_components=2):
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(n_samples, latent_dim, generator=generator, dtype=torch.float64)
    log_var = torch.randn(n_samples, latent_dim, generator=generator, dtype=torch.float64) - 2
    logits = 3 * torch.randn(n_samples, n_components, generator=generator, dtype=torch.float64)
    return mean, log_var, torch.log_softmax(logits, dim=1)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_maximization_step_gives_the_weighted_moments_of_the_posteriors(covariance_type):
    mean, log_var, log_gamma = _weighted_codes(0)
    prior = GaussianMixturePrior(2, 3, covariance_type).double()
    prior.maximization_step(prior.sufficient_statistics(mean, log_var, log_gamma))
    gamma, variance = log_gamma.exp().numpy(), log_var.exp().numpy()
    for k in range(2):
        weights = gamma[:, k] / gamma[:, k].sum()
        mu = weights @ mean.numpy()
        centred = mean.numpy() - mu
        # E_q[(z - mu)(z - mu)^T] = (mu~ - mu)(mu~ - mu)^T + diag sigma~^2, weighted.
        expected = np.einsum("n,ni,nj->ij", weights, centred, centred) + np.diag(weights @ variance)
        expected += 1e-6 * np.eye(3)
        if covariance_type == "diag":
            expected = np.diag(expected)
        elif covariance_type == "spherical":
            expected = np.diag(expected).mean()
        np.testing.assert_allclose(prior.means[k].detach().numpy(), mu, rtol=1e-10)
        np.testing.assert_allclose(prior.covariances()[k].detach().numpy(), expected, rtol=1e-8)
    np.testing.assert_allclose(prior.weights.detach().numpy(), gamma.mean(axis=0), rtol=1e-10)


@pytest.mark.parametrize("concentration", [None, 0.5, 3.0, 1e3])
def test_closed_form_weights_are_the_dirichlet_map(concentration):
    mean, log_var, log_gamma = _weighted_codes(1, n_components=4)
    prior = GaussianMixturePrior(4, 3).double()
    statistics = prior.sufficient_statistics(mean, log_var, log_gamma)
    prior.maximization_step(statistics, weight_concentration_prior=concentration, components=False)
    counts = log_gamma.exp().sum(dim=0).numpy()
    alpha = 1.0 if concentration is None else concentration
    expected = np.maximum(counts + alpha - 1, 0)
    expected /= expected.sum()
    weights = prior.weights.detach().numpy()
    np.testing.assert_allclose(weights[expected > 0], expected[expected > 0], rtol=1e-10)
    assert np.all(weights[expected == 0] < 1e-300)
    # The MAP maximises log-likelihood + log prior over the simplex.
    objective = lambda pi: counts @ np.log(pi) + (alpha - 1) * np.log(pi).sum()  # noqa: E731
    if np.all(expected > 0):
        rng = np.random.default_rng(0)
        for other in rng.dirichlet(np.ones(4), size=20):
            assert objective(weights) >= objective(other)
    assert torch.equal(prior.means, torch.zeros(4, 3, dtype=torch.float64))  # components=False


def test_map_weights_without_information_are_uniform():
    weights = map_weights(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), 1.0, 0.1)
    np.testing.assert_allclose(weights.numpy(), 1 / 3)


def test_statistics_merge_exactly_and_blend_as_running_averages():
    mean, log_var, log_gamma = _weighted_codes(2, n_samples=30)
    prior = GaussianMixturePrior(2, 3, "full").double()
    whole = prior.sufficient_statistics(mean, log_var, log_gamma)
    first = prior.sufficient_statistics(mean[:10], log_var[:10], log_gamma[:10])
    rest = prior.sufficient_statistics(mean[10:], log_var[10:], log_gamma[10:])
    merged = first.merge(rest)
    assert merged.n_samples == 30
    for name in ("counts", "first", "second"):
        torch.testing.assert_close(getattr(merged, name), getattr(whole, name))
    blended = first.blend(rest, 0.25)
    assert blended.n_samples == 30
    torch.testing.assert_close(blended.first, 0.75 * first.first + 0.25 * rest.first)
    assert isinstance(blended, MixtureStatistics)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_maximization_step_keeps_components_without_rows(covariance_type):
    mean, log_var, _ = _weighted_codes(3)
    log_gamma = torch.log(torch.tensor([1.0, 0.0], dtype=torch.float64).clamp_min(1e-320)).expand(50, 2)
    prior = GaussianMixturePrior(2, 3, covariance_type).double()
    prior.initialize([0.5, 0.5], [[0.0] * 3, [7.0] * 3], np.full((2, 3), 2.0))
    before = prior.covariances()[1].clone()
    prior.maximization_step(prior.sufficient_statistics(mean, log_var, log_gamma))
    np.testing.assert_allclose(prior.means[1].detach().numpy(), 7.0)
    torch.testing.assert_close(prior.covariances()[1], before)
    assert torch.all(torch.isfinite(prior.weight_logits))


def test_dirichlet_prior_value_and_pull():
    prior = GaussianMixturePrior(4, 2).double()
    assert float(prior.log_dirichlet_prior(3.0).detach()) == pytest.approx(2.0 * 4 * math.log(0.25))
    prior.initialize([0.7, 0.1, 0.1, 0.1], np.zeros((4, 2)), np.ones((4, 2)))
    optimizer = torch.optim.SGD(prior.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        (-prior.log_dirichlet_prior(10.0)).backward()
        optimizer.step()
    np.testing.assert_allclose(prior.weights.detach().numpy(), 0.25, atol=1e-3)


def test_full_covariance_samples_have_the_component_covariance():
    prior = GaussianMixturePrior(1, 2, "full").double()
    covariance = np.array([[[2.0, 1.2], [1.2, 1.0]]])
    prior.initialize([1.0], [[1.0, -1.0]], covariance)
    z, _ = prior.sample(200_000, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(np.cov(z.numpy().T), covariance[0], atol=0.02)
    np.testing.assert_allclose(z.numpy().mean(axis=0), [1.0, -1.0], atol=0.01)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_follows_weights_and_components(covariance_type):
    prior = GaussianMixturePrior(3, 2, covariance_type).double()
    prior.initialize([0.6, 0.3, 0.1], [[-10.0, 0.0], [0.0, 0.0], [10.0, 0.0]], np.full((3, 2), 0.1))
    z, labels = prior.sample(3000, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(np.bincount(labels.numpy()) / 3000, [0.6, 0.3, 0.1], atol=0.03)
    assert torch.equal(prior.log_responsibilities(z).argmax(dim=1), labels)
    z2, labels2 = prior.sample(50, torch.Generator().manual_seed(0), component=2)
    assert torch.all(labels2 == 2)
    assert torch.all(prior.log_responsibilities(z2).argmax(dim=1) == 2)


def test_split_collapsed_components_reseeds_and_records():
    prior = GaussianMixturePrior(3, 2).double()
    prior.initialize([0.7, 0.299, 0.001], [[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]], [[1.0, 4.0], [1.0, 1.0], [1.0, 1.0]])
    events = split_collapsed_components(prior, weight_threshold=0.01)
    assert [(e["component"], e["split"]) for e in events] == [(2, 0)]
    assert events[0]["weight"] == pytest.approx(0.001)
    weights = prior.weights.detach().numpy()
    np.testing.assert_allclose(weights.sum(), 1.0)
    np.testing.assert_allclose(weights[[0, 2]], weights[0])
    assert weights.min() >= 0.01
    means = prior.means.detach().numpy()
    # Split along the widest dimension (the second, variance 4), one stddev apart.
    np.testing.assert_allclose(means[0], [0.0, 1.0])
    np.testing.assert_allclose(means[2], [0.0, -1.0])
    np.testing.assert_allclose(prior.variances[2].detach().numpy(), [1.0, 4.0])
    assert split_collapsed_components(prior, weight_threshold=0.01) == []


def test_split_copies_a_full_covariance():
    prior = GaussianMixturePrior(2, 2, "full").double()
    covariance = np.array([[[2.0, 1.2], [1.2, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    prior.initialize([0.999, 0.001], [[0.0, 0.0], [5.0, 5.0]], covariance)
    split_collapsed_components(prior, weight_threshold=0.01)
    np.testing.assert_allclose(prior.covariances().detach().numpy(), covariance[[0, 0]], rtol=1e-10)


def test_rejects_unknown_covariance_type():
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixturePrior(2, 2, "tied")
