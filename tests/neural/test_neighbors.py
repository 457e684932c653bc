"""Tests for the k-nearest-neighbour graph."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

from sklearn_vae.neural._neighbors import nearest_neighbor_graph


@given(n_samples=st.integers(2, 40), n_neighbors=st.integers(1, 50), seed=st.integers(0, 1000))
def test_graph_lists_nearest_other_rows(n_samples, n_neighbors, seed):
    X = np.random.default_rng(seed).normal(size=(n_samples, 3))
    graph = nearest_neighbor_graph(X, n_neighbors)
    k = min(n_neighbors, n_samples - 1)
    assert graph.shape == (n_samples, k)
    assert graph.dtype == np.int64
    assert not np.any(graph == np.arange(n_samples)[:, None])
    distances = cdist(X, X)
    np.fill_diagonal(distances, np.inf)
    expected = np.sort(distances, axis=1)[:, :k]
    found = np.take_along_axis(distances, graph, axis=1)
    np.testing.assert_allclose(found, expected)


def test_custom_neighbors_estimator_is_used_and_cloned():
    X = np.random.default_rng(0).normal(size=(30, 4))
    estimator = NearestNeighbors(algorithm="brute", metric="manhattan")
    graph = nearest_neighbor_graph(X, 3, neighbors_estimator=estimator)
    distances = cdist(X, X, metric="cityblock")
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(graph[:, 0], distances.argmin(axis=1))
    assert not hasattr(estimator, "n_samples_fit_")


def test_graph_rejects_too_few_rows_and_bad_k():
    with pytest.raises(ValueError, match="at least 2 samples"):
        nearest_neighbor_graph(np.zeros((1, 2)), 3)
    with pytest.raises(ValueError, match="n_neighbors"):
        nearest_neighbor_graph(np.zeros((5, 2)), 0)
