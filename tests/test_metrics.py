"""Clustering accuracy under the best matching of clusters to classes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sklearn_vae.metrics import clustering_accuracy


def test_renamed_clusters_are_perfect():
    assert clustering_accuracy([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 4, 4]) == 1.0


def test_each_cluster_matches_one_class():
    # Both clusters prefer class 0; only one of them may have it.
    assert clustering_accuracy([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_extra_clusters_count_as_errors():
    assert clustering_accuracy([0, 0, 0, 0], [0, 1, 2, 3]) == pytest.approx(0.25)


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=40)
)
def test_accuracy_is_a_fraction_at_least_the_largest_class_share_of_one_cluster(
    pairs,
):
    labels_true, labels_pred = map(np.array, zip(*pairs))
    accuracy = clustering_accuracy(labels_true, labels_pred)
    assert 0.0 < accuracy <= 1.0
    # Any single matched pair is a lower bound on the best matching.
    best_single = max(np.sum((labels_true == t) & (labels_pred == p)) for t, p in pairs)
    assert accuracy >= best_single / len(pairs)
    assert accuracy == clustering_accuracy(labels_true, labels_pred + 7)
