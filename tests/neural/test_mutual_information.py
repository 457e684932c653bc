"""Tests of the mutual-information bounds, the critic and MINE."""

import math

import numpy as np
import pytest
import torch

from sklearn_vae._backend import seeded_module_init
from sklearn_vae.neural._engine import TrainingConfig, TrainingData, TrainingEngine
from sklearn_vae.neural._mine import MutualInformationNeuralEstimation
from sklearn_vae.neural._mutual_information import (
    PairCritic,
    donsker_varadhan_bound,
    encoder_mutual_information,
    info_nce_bound,
)


def linear_gaussian_pairs(n_samples, noise_scale, seed):
    """``x ~ N(0, I_2)``, ``z = x + noise_scale * eps``; I(x; z) in closed form."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, 2))
    z = x + noise_scale * rng.normal(size=(n_samples, 2))
    return torch.from_numpy(x).float(), torch.from_numpy(z).float()


def test_mine_estimates_the_mutual_information_of_a_linear_gaussian_pair():
    noise_scale = 0.5
    # I(x; z) = 1/2 log det(I + Sigma_x / noise^2) for independent dimensions.
    truth = 2 * 0.5 * math.log(1 + 1 / noise_scale**2)
    x, z = linear_gaussian_pairs(2000, noise_scale, seed=0)
    with seeded_module_init(0):
        critic = PairCritic(2, 2, (32,), "tanh")
    TrainingEngine(
        critic,
        MutualInformationNeuralEstimation(),
        TrainingConfig(learning_rate=3e-3, batch_size=200, max_epochs=30, n_iter_no_change=30),
        seed=0,
    ).fit(TrainingData(x, z=z))
    x_test, z_test = linear_gaussian_pairs(2000, noise_scale, seed=1)
    with torch.no_grad():
        estimate = float(donsker_varadhan_bound(critic.pairwise(x_test, z_test)))
    assert estimate == pytest.approx(truth, rel=0.1)


def test_the_bounds_are_zero_for_independent_scores_and_positive_for_informative_ones():
    uninformative = torch.randn(1, 50).expand(50, 50)  # T(x, z) = h(z)
    assert float(info_nce_bound(uninformative)) == pytest.approx(0.0, abs=1e-6)
    informative = 5.0 * torch.eye(50)
    assert float(info_nce_bound(informative)) > 1.0
    assert float(donsker_varadhan_bound(informative)) > 1.0


def test_info_nce_is_capped_by_the_log_of_the_batch_size():
    scores = 1e3 * torch.eye(16, dtype=torch.float64)
    assert float(info_nce_bound(scores)) == pytest.approx(math.log(16))


def test_encoder_mutual_information_tracks_the_encoder_noise():
    # z = x + s * eps with x ~ N(0, 1): I = 1/2 log(1 + 1 / s^2) per dimension.
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(500, 1, generator=generator, dtype=torch.float64)
    estimates = []
    for scale in (1.0, 0.3):
        log_var = torch.full_like(mean, 2 * math.log(scale))
        z = mean + scale * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        estimate = float(encoder_mutual_information(z, mean, log_var))
        assert estimate == pytest.approx(0.5 * math.log(1 + 1 / scale**2), rel=0.1)
        estimates.append(estimate)
    assert estimates[1] > estimates[0]


def test_the_critic_scores_pairs_and_matrices_consistently():
    with seeded_module_init(0):
        critic = PairCritic(3, 2, (8,), "relu").double()
    x = torch.randn(4, 3, dtype=torch.float64)
    z = torch.randn(4, 2, dtype=torch.float64)
    assert torch.allclose(torch.diagonal(critic.pairwise(x, z)), critic(x, z))
    draws = torch.randn(5, 4, 2, dtype=torch.float64)
    assert critic(x, draws).shape == (5, 4)
