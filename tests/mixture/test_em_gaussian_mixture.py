"""Tests of EMGaussianMixture beyond scikit-learn's own suite.

scikit-learn's GaussianMixture tests run against it in test_sklearn_suite.py and
the estimator checks in tests/test_common.py; here: agreement with scikit-learn
to 1e-6, float32, sample weights, chunking, properties, bad input, failure
handling and the meta-estimator workflow.
"""

import io
import pickle
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse
import torch
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_vae import EMGaussianMixture
from sklearn_vae.mixture import _gaussian
from sklearn_vae.mixture._base import _AUTO_CHUNK_BYTES

from mixture_starts import sklearn_initialisation

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def blobs(n_samples=300, n_features=3, centers=3, random_state=0, offset=0.0):
    X, y = make_blobs(
        n_samples=n_samples,
        n_features=n_features,
        centers=centers,
        cluster_std=1.5,
        random_state=random_state,
    )
    return X + offset, y


def fitted_state(estimator):
    return {
        name: getattr(estimator, name)
        for name in (
            "weights_",
            "means_",
            "covariances_",
            "precisions_",
            "precisions_cholesky_",
            "lower_bound_",
            "n_iter_",
            "converged_",
        )
    }


def assert_attributes_close(actual, desired, names, **tolerances):
    """assert_allclose on each named fitted attribute of two estimators."""
    for name in names:
        assert_allclose(
            getattr(actual, name), getattr(desired, name), err_msg=name, **tolerances
        )


# ---------------------------------------------------------------------- #
# Agreement with scikit-learn
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_sklearn_from_the_same_initial_parameters(covariance_type):
    X, _ = blobs(n_samples=400, n_features=4, centers=3, offset=5.0)
    init = sklearn_initialisation(X, 3, covariance_type)
    settings = dict(covariance_type=covariance_type, tol=1e-9, max_iter=200, **init)
    theirs = GaussianMixture(3, **settings).fit(X)
    ours = EMGaussianMixture(3, **settings).fit(X)

    assert ours.converged_ and theirs.converged_
    assert ours.n_iter_ == theirs.n_iter_
    assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=1e-6)
    assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=1e-6)
    assert_attributes_close(
        ours,
        theirs,
        ("weights_", "means_", "covariances_", "precisions_cholesky_"),
        rtol=1e-6,
        atol=1e-12,
    )
    assert_allclose(ours.score_samples(X), theirs.score_samples(X), rtol=1e-6)
    assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-6)
    assert_allclose(ours.bic(X), theirs.bic(X), rtol=1e-6)
    assert_allclose(ours.aic(X), theirs.aic(X), rtol=1e-6)


@pytest.mark.parametrize(
    "init_params", ["kmeans", "k-means++", "random", "random_from_data"]
)
def test_same_random_state_starts_where_sklearn_starts(init_params):
    X, _ = blobs()
    settings = dict(init_params=init_params, random_state=3, max_iter=0)
    theirs = GaussianMixture(3, **settings).fit(X)
    ours = EMGaussianMixture(3, **settings).fit(X)
    assert_allclose(ours.means_, theirs.means_, rtol=1e-10)
    # Single-point starts have covariance reg_covar * I; ours is a difference
    # of second moments, exact to rounding at the data's scale (~10**2).
    assert_allclose(ours.covariances_, theirs.covariances_, rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------- #
# float32
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_is_computed_and_returned_in_float32(covariance_type):
    # Far from the origin: without centring, float32 second moments cancel.
    X, _ = blobs(n_samples=600, offset=1000.0)
    init = sklearn_initialisation(X, 3, covariance_type)
    settings = dict(covariance_type=covariance_type, tol=1e-6, max_iter=200, **init)
    exact = EMGaussianMixture(3, **settings).fit(X)
    single = EMGaussianMixture(3, **settings).fit(X.astype(np.float32))

    assert single.converged_
    for name in (
        "weights_",
        "means_",
        "covariances_",
        "precisions_",
        "precisions_cholesky_",
    ):
        assert getattr(single, name).dtype == np.float32, name
    X32 = X.astype(np.float32)
    assert single.score_samples(X32).dtype == np.float32
    assert single.predict_proba(X32).dtype == np.float32
    assert single.transform(X32).dtype == np.float32
    assert single.sample(5)[0].dtype == np.float32
    assert_allclose(single.lower_bound_, exact.lower_bound_, rtol=1e-5)
    assert_allclose(single.means_, exact.means_, rtol=1e-5)
    # Only points on a decision boundary may change side.
    assert np.mean(single.predict(X32) == exact.predict(X)) > 0.99


def _collapsed_component_data(case):
    """Data where one component ends on a few points, its variance ~reg_covar."""
    rng = np.random.default_rng(0)
    if case == "three close points":
        n_features = 4
        X = np.vstack(
            [
                rng.normal(-6.0, 1.0, (40, n_features)),
                rng.normal(6.0, 1.0, (40, n_features)),
                10.0 + 1e-4 * rng.normal(size=(3, n_features)),
            ]
        )
        means = np.array([[-6.0] * n_features, [6.0] * n_features, [10.0] * n_features])
        return X, dict(means_init=means, random_state=0)
    # The thorough hypothesis profile's case: 20 rows about three centres,
    # one component left with fewer rows than the 5 dimensions.
    rng = np.random.default_rng(3)
    centers = 6.0 * rng.normal(size=(3, 5))
    X = centers[rng.integers(3, size=20)] + rng.normal(size=(20, 5))
    return X, dict(means_init=X[[0, 9, 19]], random_state=0)


@pytest.mark.parametrize("case", ["three close points", "fewer rows than dimensions"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_log_densities_of_a_collapsed_component(case, covariance_type):
    # Its log-densities are tens of nats; float32 rounding of sums about the
    # data's mean (second moments, expanded quadratic forms) is 1e-7 of
    # |x|^2, more than its variance: it must not reach the results.
    X, init = _collapsed_component_data(case)
    settings = dict(covariance_type=covariance_type, max_iter=5, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exact = EMGaussianMixture(3, **settings).fit(X)
        single = EMGaussianMixture(3, **settings).fit(X.astype(np.float32))

    assert single.means_.dtype == np.float32
    X32 = X.astype(np.float32)
    assert_allclose(
        single.score_samples(X32), exact.score_samples(X), rtol=1e-4, atol=5e-3
    )
    assert_allclose(single.predict_proba(X32), exact.predict_proba(X), atol=1e-4)


# ---------------------------------------------------------------------- #
# Sample weights
# ---------------------------------------------------------------------- #
@given(covariance_type=st.sampled_from(COVARIANCE_TYPES), data=st.data())
def test_integer_weights_equal_repeated_rows(covariance_type, data):
    X, _ = blobs(n_samples=60, random_state=data.draw(st.integers(0, 1000)))
    repeats = np.array(data.draw(st.lists(st.integers(0, 3), min_size=60, max_size=60)))
    repeats[:3] += 1  # at least n_components samples keep a positive weight
    init = sklearn_initialisation(X, 3, covariance_type)
    settings = dict(covariance_type=covariance_type, max_iter=5, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = EMGaussianMixture(3, **settings).fit(X, sample_weight=repeats)
        repeated = EMGaussianMixture(3, **settings).fit(np.repeat(X, repeats, axis=0))

    assert_attributes_close(
        weighted,
        repeated,
        ("weights_", "means_", "covariances_", "lower_bound_"),
        rtol=1e-8,
        atol=1e-10,
    )
    X_repeated = np.repeat(X, repeats, axis=0)
    assert_allclose(
        weighted.score(X, sample_weight=repeats), repeated.score(X_repeated), rtol=1e-10
    )
    assert_allclose(
        weighted.bic(X, sample_weight=repeats), repeated.bic(X_repeated), rtol=1e-10
    )
    assert_allclose(
        weighted.aic(X, sample_weight=repeats), repeated.aic(X_repeated), rtol=1e-10
    )


def test_kmeans_initialisation_uses_sample_weight():
    X, _ = blobs()
    weights = np.ones(len(X))
    weights[:10] = 50.0
    unweighted = EMGaussianMixture(3, max_iter=0, random_state=0).fit(X)
    weighted = EMGaussianMixture(3, max_iter=0, random_state=0).fit(
        X, sample_weight=weights
    )
    assert not np.allclose(unweighted.means_, weighted.means_)


def test_unit_weights_equal_no_weights():
    X, _ = blobs()
    plain = EMGaussianMixture(3, random_state=0).fit(X)
    unit = EMGaussianMixture(3, random_state=0).fit(X, sample_weight=np.ones(len(X)))
    assert_allclose(unit.means_, plain.means_, rtol=1e-12)
    assert unit.score(X, sample_weight=np.ones(len(X))) == pytest.approx(plain.score(X))


@pytest.mark.parametrize(
    "sample_weight, message",
    [
        (-np.ones(300), "Negative values in data passed to `sample_weight`"),
        (np.r_[np.ones(2), np.zeros(298)], "give at least n_components samples"),
        (np.ones(5), r"sample_weight.shape == \(5,\), expected \(300,\)"),
    ],
)
def test_bad_sample_weight(sample_weight, message):
    X, _ = blobs()
    with pytest.raises(ValueError, match=message):
        EMGaussianMixture(3).fit(X, sample_weight=sample_weight)


# ---------------------------------------------------------------------- #
# Chunking
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunks_never_exceed_batch_size_and_do_not_change_results(
    covariance_type, monkeypatch
):
    X, _ = blobs(n_samples=250)
    settings = dict(covariance_type=covariance_type, random_state=0)
    whole = EMGaussianMixture(3, batch_size=10_000, **settings).fit(X)

    chunk_rows = []
    moments = EMGaussianMixture._weighted_moments

    def recording_moments(
        self, X_chunk, weighted_resp, workspace=None, parameters=None
    ):
        chunk_rows.append(X_chunk.shape[0])
        return moments(self, X_chunk, weighted_resp, workspace, parameters)

    monkeypatch.setattr(EMGaussianMixture, "_weighted_moments", recording_moments)
    chunked = EMGaussianMixture(3, batch_size=16, **settings).fit(X)

    assert max(chunk_rows) == 16 and min(chunk_rows) == 250 % 16
    assert chunked.n_iter_ == whole.n_iter_
    assert_attributes_close(
        chunked, whole, ("means_", "covariances_", "lower_bound_"), rtol=1e-10
    )
    assert_allclose(chunked.predict_proba(X), whole.predict_proba(X), atol=1e-12)


@given(
    n_components=st.integers(4, 12),
    nonzeros_per_row=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    about_reference=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_gathered_full_scatter_equals_the_dense_product(
    n_components, nonzeros_per_row, dtype, about_reference, seed
):
    generator = torch.Generator().manual_seed(seed)
    n_samples, n_features = 400, 5
    X = torch.randn(n_samples, n_features, generator=generator, dtype=dtype)
    # A few components per row (sample weights included), zeros elsewhere.
    columns = torch.rand(n_samples, n_components, generator=generator).argsort(1)
    weighted_resp = torch.zeros(n_samples, n_components, dtype=dtype)
    weighted_resp.scatter_(
        1,
        columns[:, :nonzeros_per_row],
        torch.rand(n_samples, nonzeros_per_row, generator=generator, dtype=dtype),
    )
    reference = (
        torch.randn(n_components, n_features, generator=generator, dtype=dtype)
        if about_reference
        else torch.zeros(n_components, n_features, dtype=dtype)
    )
    residuals = X[None, :, :] - reference[:, None, :]
    expected = torch.einsum("nk,kna,knb->kab", weighted_resp, residuals, residuals)
    share = nonzeros_per_row / n_components
    reference = reference if about_reference else None

    gathered = _gaussian._scatter_full_by_component(X, weighted_resp, reference)

    if share > 2 * _gaussian._GATHERED_MAX_SHARE:
        # Some component then has more than the allowed share of the rows.
        assert gathered is None
    if gathered is not None:
        tolerance = 1e-4 if dtype == torch.float32 else 1e-12
        assert gathered.shape == (n_components, n_features, n_features)
        torch.testing.assert_close(gathered, expected, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(
        _gaussian._scatter_full(X, weighted_resp, reference=reference),
        expected,
        rtol=1e-4 if dtype == torch.float32 else 1e-12,
        atol=1e-4 if dtype == torch.float32 else 1e-12,
    )


def _fit_recording_gathers(monkeypatch, estimator, X):
    """Fit; return, per call of _rows_by_component, its number of wide components.

    None stands for a call that fell back to the dense products.
    """
    calls = []
    group = _gaussian._rows_by_component

    def recording_group(pairs):
        groups = group(pairs)
        calls.append(None if groups is None else len(groups.wide))
        return groups

    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        patch.setattr(_gaussian, "_rows_by_component", recording_group)
        estimator.fit(X)
    return calls


def _dense_fit(monkeypatch, estimator, X):
    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        patch.setattr(_gaussian, "_GATHERED_MAX_SHARE", 0.0)
        return estimator.fit(X)


GAUSSIAN_ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _three_fits(monkeypatch, X, settings, **our_settings):
    """scikit-learn's fit, ours with the gathers it made, and ours kept dense."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = GaussianMixture(**settings).fit(X)
    ours = EMGaussianMixture(**settings, **our_settings)
    calls = _fit_recording_gathers(monkeypatch, ours, X)
    dense = _dense_fit(monkeypatch, EMGaussianMixture(**settings, **our_settings), X)
    return theirs, ours, dense, calls


def test_well_separated_fit_gathers_rows_and_matches_the_dense_fit(monkeypatch):
    # 16 components so far apart that every other component's responsibility
    # is below the float64 floor (1e-300): each row counts for one component.
    X, _ = make_blobs(
        n_samples=2000, n_features=20, centers=16, cluster_std=0.5, random_state=0
    )
    init = sklearn_initialisation(X, 16, "full")
    settings = dict(n_components=16, tol=0.0, max_iter=5, **init)
    theirs, ours, dense, calls = _three_fits(monkeypatch, X, settings)

    # One chunk; per iteration one E-step and one M-step, both gathered.
    assert calls == [0] * 10
    # The same sums in another order: equal to rounding at the data's scale.
    names = (*GAUSSIAN_ATTRIBUTES, "lower_bounds_")
    assert_attributes_close(ours, dense, names, rtol=1e-10, atol=1e-12)
    assert_attributes_close(ours, theirs, names, rtol=1e-6, atol=1e-12)
    assert_array_equal(ours.predict(X), dense.predict(X))
    assert_array_equal(ours.predict(X), theirs.predict(X))


def test_a_component_spanning_all_rows_is_computed_densely(monkeypatch):
    # Twelve tight clusters in uniform noise, and a broad background component
    # for the noise: the background is paired with every row, each cluster
    # with its own rows only.
    clusters, _ = make_blobs(
        n_samples=1200, n_features=20, centers=12, cluster_std=0.5, random_state=1
    )
    noise = np.random.RandomState(1).uniform(-15, 15, size=(300, 20))
    X = np.vstack([clusters, noise])
    init = sklearn_initialisation(clusters, 12, "full")
    settings = dict(
        n_components=13,
        tol=0.0,
        max_iter=3,
        weights_init=np.append(np.full(12, 0.8 / 12), 0.2),
        means_init=np.vstack([init["means_init"], noise.mean(axis=0)]),
        precisions_init=np.concatenate(
            [init["precisions_init"], np.eye(20)[None] / noise.var(axis=0).mean()]
        ),
    )
    theirs, ours, dense, calls = _three_fits(monkeypatch, X, settings)

    # Every E- and M-step computes the background densely, the clusters gathered.
    assert calls == [1] * 6
    names = (*GAUSSIAN_ATTRIBUTES, "lower_bounds_")
    assert_attributes_close(ours, dense, names, rtol=1e-10, atol=1e-12)
    assert_attributes_close(ours, theirs, names, rtol=1e-6, atol=1e-12)


def test_overlapping_components_fall_back_to_dense_chunks(monkeypatch):
    # Clusters a few standard deviations apart: no responsibility is zero.
    X, _ = make_blobs(
        n_samples=1600, n_features=8, centers=8, cluster_std=4.0, random_state=0
    )
    init = sklearn_initialisation(X, 8, "full")
    settings = dict(n_components=8, tol=0.0, max_iter=2, **init)
    theirs, ours, dense, calls = _three_fits(
        monkeypatch, X, settings, batch_size=100
    )

    # Per pass of 16 chunks: the E-step tries the bounds on chunks 0 and 8
    # only, the M-step on every chunk; none gathers.
    assert calls == [None] * 2 * (2 + 16)
    names = (*GAUSSIAN_ATTRIBUTES, "lower_bounds_")
    assert_attributes_close(ours, dense, names, rtol=1e-12)
    assert_attributes_close(ours, theirs, names, rtol=1e-6, atol=1e-12)


def test_a_fallback_to_dense_chunks_carries_over_to_the_next_passes(monkeypatch):
    # One chunk of overlapping clusters: the bounds never thin it. Their cost
    # (the precisions' eigenvalues and a product) is paid on one pass in
    # eight, not on every pass.
    X, _ = make_blobs(
        n_samples=800, n_features=8, centers=8, cluster_std=4.0, random_state=0
    )
    init = sklearn_initialisation(X, 8, "full")
    settings = dict(n_components=8, tol=0.0, max_iter=17, **init)
    bound_terms = []
    of = _gaussian._BoundTerms.of.__func__

    def recording_of(cls, parameters, dtype):
        bound_terms.append(dtype)
        return of(cls, parameters, dtype)

    with monkeypatch.context() as patch:
        patch.setattr(_gaussian._BoundTerms, "of", classmethod(recording_of))
        ours = EMGaussianMixture(**settings).fit(X)
    # Passes 1, 9 and 17.
    assert len(bound_terms) == 3
    dense = _dense_fit(monkeypatch, EMGaussianMixture(**settings), X)
    names = (*GAUSSIAN_ATTRIBUTES, "lower_bounds_")
    assert_attributes_close(ours, dense, names, rtol=1e-12)


@given(
    n_components=st.integers(4, 10),
    n_features=st.integers(1, 6),
    spread=st.sampled_from([3.0, 30.0, 3000.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_truncated_log_prob_skips_only_negligible_pairs(
    n_components, n_features, spread, dtype, seed
):
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    means = spread * draw(n_components, n_features)
    # Anisotropic covariances, condition numbers up to about 10**2.
    factors = draw(n_components, n_features, n_features)
    covariances = factors @ factors.mT + 0.1 * torch.eye(n_features)
    weights = torch.rand(n_components, generator=generator, dtype=torch.float64)
    parameters = _gaussian.GaussianParameters(
        weights / weights.sum(),
        means,
        covariances,
        _gaussian._precisions_cholesky(covariances, "full"),
    )
    labels = torch.randint(n_components, (300,), generator=generator)
    X = (
        means[labels]
        + (torch.linalg.cholesky(covariances)[labels] @ draw(300, n_features, 1))[
            ..., 0
        ]
    ).to(dtype)
    negligible = -20.0

    dense = _gaussian._log_prob_full(parameters, dtype)(X)
    truncated = _gaussian._log_prob_full_truncated(parameters, dtype, None, negligible)(
        X
    )
    exact = _gaussian._log_prob_full(parameters, torch.float64)(X.double())

    kept = torch.isfinite(truncated)
    # The kept pairs are as accurate as the dense product's (in float32 far
    # from the origin both round at the scale of |x P|).
    error = (truncated[kept].double() - exact[kept]).abs().max()
    dense_error = (dense.double() - exact).abs().max()
    assert error <= 4 * dense_error + 1e-10 * exact.abs().max()
    log_ratio = exact - exact.amax(dim=1, keepdim=True)
    assert torch.all(log_ratio[~kept] < negligible)
    assert torch.all(kept[torch.arange(len(X)), exact.argmax(dim=1)])


@pytest.mark.parametrize("n_components, n_features", [(16, 32), (32, 64), (8, 16)])
def test_auto_batch_size_bounds_the_chunk_temporaries(n_components, n_features):
    estimator = EMGaussianMixture(n_components)
    rows64 = estimator._chunk_size(n_features, torch.float64)
    rows32 = estimator._chunk_size(n_features, torch.float32)
    assert rows64 * n_components * n_features * 8 <= _AUTO_CHUNK_BYTES
    assert rows32 == 2 * rows64
    explicit = EMGaussianMixture(n_components, batch_size=7)
    assert explicit._chunk_size(n_features, torch.float64) == 7


# ---------------------------------------------------------------------- #
# Properties
# ---------------------------------------------------------------------- #
mixture_settings = st.fixed_dictionaries(
    dict(
        n_components=st.integers(1, 4),
        covariance_type=st.sampled_from(COVARIANCE_TYPES),
        random_state=st.integers(0, 2**16),
    )
)


@given(
    settings=mixture_settings,
    n_features=st.integers(1, 4),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_responsibilities_are_probabilities_and_scores_finite(
    settings, n_features, scale
):
    X, _ = blobs(
        n_samples=80,
        n_features=n_features,
        centers=3,
        random_state=settings["random_state"],
    )
    X *= scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator = EMGaussianMixture(max_iter=20, **settings).fit(X)
    resp = estimator.predict_proba(X)
    assert resp.shape == (len(X), settings["n_components"])
    assert np.all((resp >= 0) & (resp <= 1))
    assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-10)
    assert np.all(np.isfinite(estimator.score_samples(X)))
    assert_array_equal(estimator.predict(X), resp.argmax(axis=1))


@given(settings=mixture_settings, n_samples=st.integers(1, 300))
def test_sample_shapes_and_labels(settings, n_samples):
    X, _ = blobs(n_samples=60, random_state=settings["random_state"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator = EMGaussianMixture(max_iter=10, **settings).fit(X)
    samples, labels = estimator.sample(n_samples)
    assert samples.shape == (n_samples, X.shape[1])
    assert labels.shape == (n_samples,)
    assert np.all(np.isfinite(samples))
    assert set(labels) <= set(range(settings["n_components"]))
    assert np.all(np.diff(labels) >= 0)


@given(settings=mixture_settings)
def test_same_random_state_refits_identically(settings):
    X, _ = blobs(n_samples=80, random_state=settings["random_state"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator = EMGaussianMixture(max_iter=10, n_init=2, **settings)
        first = fitted_state(estimator.fit(X))
        second = fitted_state(clone(estimator).fit(X))
    for name, value in first.items():
        assert_array_equal(second[name], value, err_msg=name)
    assert_array_equal(estimator.sample(20)[0], estimator.sample(20)[0])


def test_sample_follows_the_fitted_distribution():
    X, _ = blobs(n_samples=300, n_features=2)
    estimator = EMGaussianMixture(3, random_state=0).fit(X)
    samples, labels = estimator.sample(20_000)
    for k in range(3):
        assert_allclose(
            samples[labels == k].mean(axis=0), estimator.means_[k], atol=0.1
        )
        assert_allclose(
            np.cov(samples[labels == k].T), estimator.covariances_[k], atol=0.15
        )


# ---------------------------------------------------------------------- #
# Bad input, failures and warnings
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "X, error, message",
    [
        (np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 3.0]]), ValueError, "contains NaN"),
        (np.array([[0.0, 1.0], [np.inf, 1.0], [2.0, 3.0]]), ValueError, "contains inf"),
        (np.arange(10.0), ValueError, "Expected 2D array, got 1D array"),
        (
            scipy.sparse.random(20, 3, density=0.5, format="csr", random_state=0),
            TypeError,
            "Sparse data was passed",
        ),
        (
            np.array([["a", "b"], ["c", "d"]], dtype=object),
            ValueError,
            "could not convert",
        ),
        (np.ones((1, 2)), ValueError, "minimum of 2 is required"),
        (
            np.random.RandomState(0).rand(2, 2),
            ValueError,
            "Expected n_samples >= n_components",
        ),
    ],
)
def test_bad_training_data(X, error, message):
    with pytest.raises(error, match=message):
        EMGaussianMixture(3).fit(X)


def test_bad_prediction_data():
    X, _ = blobs(n_features=3)
    estimator = EMGaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(
        ValueError,
        match="X has 2 features, but EMGaussianMixture is expecting 3 features",
    ):
        estimator.predict(X[:, :2])
    with pytest.raises(ValueError, match="contains NaN"):
        estimator.score_samples(np.full((2, 3), np.nan))
    with pytest.raises(NotFittedError):
        EMGaussianMixture().predict(X)


def test_ill_defined_covariance_raises_and_keeps_last_good_state():
    X, _ = blobs(n_features=5)
    estimator = EMGaussianMixture(2, random_state=0).fit(X)
    before = fitted_state(estimator)
    collapsed = np.vstack([np.ones((5, 5)), np.zeros((5, 5))])
    with pytest.raises(
        ValueError, match="ill-defined empirical covariance.*increase reg_covar"
    ):
        estimator.set_params(n_components=10, reg_covar=0.0).fit(collapsed)
    for name, value in before.items():
        assert_array_equal(getattr(estimator, name), value, err_msg=name)


def test_non_finite_likelihood_raises_and_leaves_estimator_unfitted():
    X, _ = blobs(n_features=2)
    estimator = EMGaussianMixture(
        2,
        covariance_type="spherical",
        weights_init=[0.5, 0.5],
        means_init=[[1e200, 0.0], [1e200, 1.0]],
        precisions_init=[1e200, 1e200],
    )
    with pytest.raises(ValueError, match="non-finite log-likelihood.*Scale the input"):
        estimator.fit(X)
    assert not hasattr(estimator, "means_")


def test_convergence_warning_says_what_to_change():
    X, _ = blobs()
    with pytest.warns(ConvergenceWarning, match="increase max_iter, tol"):
        EMGaussianMixture(3, max_iter=1, tol=0.0, random_state=0).fit(X)


def test_verbose_reports_iterations(capsys):
    X, _ = blobs()
    EMGaussianMixture(3, verbose=2, verbose_interval=1, random_state=0).fit(X)
    output = capsys.readouterr().out
    assert "Initialization 0" in output
    assert "Iteration 1\t time lapse" in output
    assert "Initialization converged." in output


def test_bad_initial_parameters():
    X, _ = blobs()
    with pytest.raises(
        ValueError,
        match=r"should be in the range \[0, 1\], but got "
        r"max value 1.50000, min value -0.50000",
    ):
        EMGaussianMixture(2, weights_init=[1.5, -0.5]).fit(X)
    with pytest.raises(ValueError, match="'full precision' should be symmetric"):
        EMGaussianMixture(1, precisions_init=[-np.eye(3)]).fit(X)


def test_runs_on_every_available_device(device):
    X, _ = blobs()
    estimator = EMGaussianMixture(3, device=device, random_state=0).fit(X)
    reference = EMGaussianMixture(3, random_state=0).fit(X)
    assert_allclose(estimator.means_, reference.means_, rtol=1e-8)


# ---------------------------------------------------------------------- #
# scikit-learn workflow
# ---------------------------------------------------------------------- #
def test_transform_is_the_responsibilities_with_feature_names():
    X, _ = blobs()
    estimator = EMGaussianMixture(3, random_state=0).fit(X)
    assert_allclose(estimator.transform(X), estimator.predict_proba(X))
    assert_array_equal(
        estimator.get_feature_names_out(),
        ["emgaussianmixture0", "emgaussianmixture1", "emgaussianmixture2"],
    )
    frame = estimator.set_output(transform="pandas").transform(X)
    assert list(frame.columns) == list(estimator.get_feature_names_out())


def test_pipeline_with_responsibilities_as_features():
    X, y = blobs(n_samples=300)
    pipeline = make_pipeline(
        StandardScaler(), EMGaussianMixture(3, random_state=0), LogisticRegression()
    ).fit(X, y)
    assert pipeline.score(X, y) > 0.9


@pytest.mark.parametrize(
    "scoring",
    [None, lambda estimator, X, y=None: -estimator.bic(X)],
    ids=["score", "bic"],
)
def test_grid_search_selects_the_number_of_components(scoring):
    X, _ = make_blobs(n_samples=300, centers=[[0, 0], [8, 0], [0, 8]], random_state=1)
    search = GridSearchCV(
        EMGaussianMixture(random_state=0),
        {"n_components": [1, 2, 3, 4, 5]},
        scoring=scoring,
        cv=3,
    ).fit(X)
    if scoring is None:
        # Held-out likelihood does not penalise extra components; it must
        # still reject too few.
        assert search.best_params_["n_components"] >= 3
    else:
        assert search.best_params_["n_components"] == 3
    assert isinstance(search.best_estimator_, EMGaussianMixture)


def test_clone_pickle_and_joblib_roundtrips():
    X, _ = blobs()
    estimator = EMGaussianMixture(3, covariance_type="diag", random_state=0).fit(X)
    unfitted = clone(estimator)
    assert unfitted.get_params() == estimator.get_params()
    assert not hasattr(unfitted, "means_")

    restored = pickle.loads(pickle.dumps(estimator))
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    buffer.seek(0)
    for copy in (restored, joblib.load(buffer)):
        assert_array_equal(copy.predict_proba(X), estimator.predict_proba(X))
        assert_array_equal(copy.sample(10)[0], estimator.sample(10)[0])
