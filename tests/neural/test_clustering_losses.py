"""Tests for the neighbour-embedding, consistency and batch-entropy terms."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sklearn_vae.neural._clustering_losses import (
    UMAP_A,
    UMAP_B,
    batch_entropy,
    neighbor_consistency_loss,
    neighbor_embedding_loss,
    sample_negatives,
)


def _umap_similarity(squared_distance):
    return 1.0 / (1.0 + UMAP_A * squared_distance**UMAP_B)


def test_neighbor_embedding_loss_is_umap_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    z, z_pos = (torch.randn(8, 3, generator=generator, dtype=torch.float64) for _ in range(2))
    z_neg = torch.randn(8, 5, 3, generator=generator, dtype=torch.float64)
    q_pos = _umap_similarity(((z - z_pos) ** 2).sum(-1))
    q_neg = _umap_similarity(((z[:, None] - z_neg) ** 2).sum(-1))
    expected = -torch.log(q_pos) - torch.log1p(-q_neg).sum(dim=1)
    torch.testing.assert_close(neighbor_embedding_loss(z, z_pos, z_neg), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neighbor_embedding_loss_has_finite_gradients_at_coincident_points(dtype):
    z = torch.zeros(4, 2, dtype=dtype, requires_grad=True)
    loss = neighbor_embedding_loss(z, z.detach().clone(), torch.zeros(4, 3, 2, dtype=dtype)).sum()
    loss.backward()
    assert loss.dtype == dtype
    assert torch.isfinite(loss) and torch.all(torch.isfinite(z.grad))


def test_neighbor_embedding_loss_prefers_close_neighbours_and_far_negatives():
    z = torch.zeros(1, 2)
    near, far = torch.full((1, 2), 0.1), torch.full((1, 2), 5.0)
    good = neighbor_embedding_loss(z, near, far[:, None, :])
    bad = neighbor_embedding_loss(z, far, near[:, None, :])
    assert float(good) < float(bad)


@given(batch_size=st.integers(2, 64), n_negatives=st.integers(1, 8), seed=st.integers(0, 1000))
def test_sample_negatives_never_picks_the_item_itself(batch_size, n_negatives, seed):
    negatives = sample_negatives(batch_size, n_negatives, torch.Generator().manual_seed(seed))
    assert negatives.shape == (batch_size, n_negatives)
    assert negatives.min() >= 0 and negatives.max() < batch_size
    assert not torch.any(negatives == torch.arange(batch_size)[:, None])


def test_sample_negatives_is_reproducible():
    first = sample_negatives(10, 4, torch.Generator().manual_seed(3))
    again = sample_negatives(10, 4, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)


@given(seed=st.integers(0, 1000), sharpness=st.floats(0.0, 200.0))
def test_consistency_loss_matches_direct_formula_and_stays_finite(seed, sharpness):
    generator = torch.Generator().manual_seed(seed)
    log_gamma = torch.log_softmax(sharpness * torch.randn(6, 4, generator=generator, dtype=torch.float64), 1)
    log_gamma_nb = torch.log_softmax(sharpness * torch.randn(6, 4, generator=generator, dtype=torch.float64), 1)
    loss = neighbor_consistency_loss(log_gamma, log_gamma_nb)
    assert torch.all(torch.isfinite(loss)) and torch.all(loss >= -1e-12)
    direct = -torch.log((log_gamma.exp() * log_gamma_nb.exp()).sum(1))
    finite = torch.isfinite(direct)
    torch.testing.assert_close(loss[finite], direct[finite])


def test_consistency_loss_is_zero_for_agreeing_confident_pairs():
    log_gamma = torch.log_softmax(torch.tensor([[50.0, 0.0, 0.0]], dtype=torch.float64), 1)
    assert float(neighbor_consistency_loss(log_gamma, log_gamma)) == pytest.approx(0.0, abs=1e-12)
    other = torch.log_softmax(torch.tensor([[0.0, 50.0, 0.0]], dtype=torch.float64), 1)
    assert float(neighbor_consistency_loss(log_gamma, other)) > 40.0


def test_batch_entropy_bounds():
    uniform = torch.full((5, 4), -math.log(4), dtype=torch.float64)
    assert float(batch_entropy(uniform)) == pytest.approx(math.log(4))
    one_cluster = torch.log_softmax(torch.tensor([[60.0, 0, 0, 0]] * 5, dtype=torch.float64), 1)
    assert float(batch_entropy(one_cluster)) == pytest.approx(0.0, abs=1e-12)
    split = torch.log_softmax(torch.tensor([[60.0, 0], [0, 60.0]], dtype=torch.float64), 1)
    assert float(batch_entropy(split)) == pytest.approx(math.log(2))
    assert np.isfinite(float(batch_entropy(one_cluster.float())))
