"""The k-nearest-neighbour graph of the training data.

VariationalGMMPrior's neighbour-preserving pretraining and its consistency term
both need, for every training row, the indices of its ``k`` nearest rows in
input space. The graph is stored as an ``(n_samples, k)`` int64 array, the
index type torch wants: 120 MB at a million rows and ``k = 15``.

Exact search (scikit-learn's :class:`~sklearn.neighbors.NearestNeighbors`,
KD-/ball trees or brute force) is fine up to about 100k rows on a laptop.
Beyond that, pass any estimator with scikit-learn's neighbours API
(``fit(X)`` and ``kneighbors(X=None, n_neighbors=...)``) as
``neighbors_estimator``: an approximate index such as pynndescent's
``NNDescent`` wrapped in a ``KNeighborsMixin``-style adapter, or
``NearestNeighbors(algorithm='ball_tree', n_jobs=-1)`` for exact search on
many cores. See scikit-learn's example "Approximate nearest neighbors in
TSNE" for such adapters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.neighbors import NearestNeighbors

__all__ = ["nearest_neighbor_graph"]


def nearest_neighbor_graph(
    X: np.ndarray,
    n_neighbors: int,
    *,
    neighbors_estimator: Any | None = None,
) -> np.ndarray:
    """Indices of each row's nearest other rows.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Validated, dense data.
    n_neighbors : int
        ``k``. Capped at ``n_samples - 1`` so tiny data sets still get a graph.
    neighbors_estimator : estimator, default=None
        An unfitted estimator with ``fit`` and ``kneighbors`` (scikit-learn's
        neighbours API); cloned before use. ``None`` uses exact Euclidean
        :class:`~sklearn.neighbors.NearestNeighbors`.

    Returns
    -------
    ndarray of shape (n_samples, min(n_neighbors, n_samples - 1)), int64
        Row ``i`` lists the neighbours of row ``i``, nearest first; a row is
        never its own neighbour (duplicates of it may be).

    Raises
    ------
    ValueError
        If ``X`` has fewer than two rows or ``n_neighbors < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> nearest_neighbor_graph(np.array([[0.0], [1.0], [10.0]]), 1).ravel().tolist()
    [1, 0, 1]
    """
    n_samples = X.shape[0]
    if n_samples < 2:
        raise ValueError(
            f"A neighbour graph needs at least 2 samples, got {n_samples}."
        )
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}.")
    k = min(int(n_neighbors), n_samples - 1)
    estimator = (
        NearestNeighbors() if neighbors_estimator is None else clone(neighbors_estimator)
    )
    estimator.fit(X)
    # kneighbors(X=None) queries the training rows and leaves each query row out
    # of its own result, which is what a graph over the training set needs.
    indices = estimator.kneighbors(None, n_neighbors=k, return_distance=False)
    return np.ascontiguousarray(indices, dtype=np.int64)
