"""Scores for clusterings against known classes."""

from __future__ import annotations

from typing import Any

from scipy.optimize import linear_sum_assignment
from sklearn.metrics.cluster import contingency_matrix

__all__ = ["clustering_accuracy"]


def clustering_accuracy(labels_true: Any, labels_pred: Any) -> float:
    """Accuracy of a clustering under the best matching of clusters to classes.

    Cluster numbers are arbitrary, so each cluster is matched to at most one
    class by the Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`)
    to maximise the number of agreeing samples; the accuracy is that number
    over the number of samples. This is the "unsupervised clustering accuracy"
    of the deep-clustering literature (VaDE, DEC). Clusters left unmatched
    (more clusters than classes) count as errors.

    Parameters
    ----------
    labels_true : array-like of shape (n_samples,)
        Ground-truth classes.
    labels_pred : array-like of shape (n_samples,)
        Cluster labels to evaluate.

    Returns
    -------
    float
        Between 0 and 1; 1 when the clustering equals the classes up to a
        renaming of the clusters.

    See Also
    --------
    sklearn.metrics.adjusted_rand_score : Agreement of two partitions, chance-adjusted.
    sklearn.metrics.normalized_mutual_info_score : Shared information of two partitions.

    Examples
    --------
    >>> from sklearn_vae.metrics import clustering_accuracy
    >>> clustering_accuracy([0, 0, 1, 1, 2], [2, 2, 0, 0, 0])
    0.8
    """
    contingency = contingency_matrix(labels_true, labels_pred)
    rows, columns = linear_sum_assignment(contingency, maximize=True)
    return float(contingency[rows, columns].sum() / contingency.sum())
