"""EMGaussianMixture.partial_fit: stepwise (online) EM on mini-batches."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.datasets import make_blobs

from sklearn_vae import EMGaussianMixture

from mixture_starts import sklearn_initialisation

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
PARAMETERS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def stream(n_samples=20_000, n_features=6, centers=5, random_state=0):
    X, _ = make_blobs(
        n_samples, n_features=n_features, centers=centers, random_state=random_state
    )
    # A stationary stream: rows in random order.
    return X[np.random.RandomState(random_state).permutation(n_samples)]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_pass_in_batches_ends_near_the_full_batch_fit(covariance_type):
    X = stream()
    full = EMGaussianMixture(5, covariance_type=covariance_type, random_state=0).fit(X)
    online = EMGaussianMixture(5, covariance_type=covariance_type, random_state=0)
    for start in range(0, len(X), 500):
        online.partial_fit(X[start : start + 500])
    assert online.n_steps_ == len(X) // 500
    assert abs(full.score(X) - online.score(X)) < 0.02
    assert len(online.lower_bounds_) == online.n_steps_
    assert np.all(np.isfinite(online.lower_bounds_))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_first_call_from_given_parameters_is_one_em_iteration(covariance_type):
    X = stream(2000)
    init = sklearn_initialisation(X, 4, covariance_type)
    online = EMGaussianMixture(4, covariance_type=covariance_type, **init).partial_fit(X)
    one_iteration = EMGaussianMixture(
        4, covariance_type=covariance_type, max_iter=1, **init
    )
    with pytest.warns(UserWarning):  # one iteration does not converge
        one_iteration.fit(X)
    for name in PARAMETERS:
        assert_allclose(
            getattr(online, name), getattr(one_iteration, name), rtol=1e-9, atol=1e-10
        )


def test_first_call_initialises_with_init_params():
    X = stream(3000)
    first = EMGaussianMixture(5, init_params="k-means++", random_state=3).partial_fit(X)
    again = EMGaussianMixture(5, init_params="k-means++", random_state=3).partial_fit(X)
    other = EMGaussianMixture(5, init_params="random", random_state=3).partial_fit(X)
    assert_allclose(first.means_, again.means_)
    assert not np.allclose(np.sort(first.means_, axis=0), np.sort(other.means_, axis=0))


def test_later_batches_follow_the_step_size_schedule():
    # From user parameters theta_0 (no initial statistics) the first batch's
    # statistics s_1 are taken whole; the second's, s_2 under theta_1, are
    # blended with eta_1 = 3 ** -decay. Rebuilt here from predict_proba in
    # numpy for 'diag': the M-step of the blended per-row averages.
    X = stream(2000)
    first_batch, second_batch = X[:1000], X[1000:]
    init = sklearn_initialisation(X, 4, "diag")
    decay = 0.8
    online = EMGaussianMixture(4, covariance_type="diag", stepwise_decay=decay, **init)
    start = EMGaussianMixture(4, covariance_type="diag", max_iter=0, **init).fit(X)
    resp_1 = start.predict_proba(first_batch)
    online.partial_fit(first_batch)
    resp_2 = online.predict_proba(second_batch)
    online.partial_fit(second_batch)

    def averages(resp, rows):
        return (
            resp.mean(axis=0),
            resp.T @ rows / len(rows),
            resp.T @ rows**2 / len(rows),
        )

    eta = 3.0**-decay
    counts, sums, squares = (
        (1 - eta) * a + eta * b
        for a, b in zip(averages(resp_1, first_batch), averages(resp_2, second_batch))
    )
    means = sums / counts[:, None]
    variances = squares / counts[:, None] - means**2 + online.reg_covar
    assert online.n_steps_ == 2
    assert_allclose(online.weights_, counts / counts.sum(), rtol=1e-8)
    assert_allclose(online.means_, means, rtol=1e-8, atol=1e-10)
    assert_allclose(online.covariances_, variances, rtol=1e-6)


def test_integer_weights_equal_repeated_rows():
    X = stream(600, n_features=3, centers=3)
    weights = np.random.RandomState(1).randint(1, 4, len(X))
    init = sklearn_initialisation(X, 3, "full")
    weighted = EMGaussianMixture(3, **init)
    repeated = EMGaussianMixture(3, **init)
    for rows in (slice(0, 300), slice(300, 600)):
        weighted.partial_fit(X[rows], sample_weight=weights[rows])
        repeated.partial_fit(np.repeat(X[rows], weights[rows], axis=0))
    for name in PARAMETERS:
        assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-8)


def test_partial_fit_after_fit_continues_from_the_fitted_model():
    X = stream(4000)
    fitted = EMGaussianMixture(5, random_state=0, tol=1e-8).fit(X)
    means = fitted.means_.copy()
    assert fitted.n_steps_ == 0
    # At a fixed point of EM, another step on the same data moves nothing.
    fitted.partial_fit(X)
    assert fitted.n_steps_ == 1
    assert_allclose(fitted.means_, means, atol=1e-4)


def test_float32_batches_stay_float32():
    X = stream(3000).astype(np.float32)
    online = EMGaussianMixture(5, random_state=0)
    for start in range(0, len(X), 1000):
        online.partial_fit(X[start : start + 1000])
    assert online.means_.dtype == np.float32
    assert online.predict_proba(X).dtype == np.float32
    full = EMGaussianMixture(5, random_state=0).fit(X)
    assert abs(full.score(X) - online.score(X)) < 0.05


def test_bad_batches_raise_and_keep_the_model():
    X = stream(2000)
    online = EMGaussianMixture(5, random_state=0).partial_fit(X[:1000])
    state = {name: getattr(online, name).copy() for name in PARAMETERS}
    with pytest.raises(ValueError, match="features"):
        online.partial_fit(X[:10, :3])
    bad = X[:10].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        online.partial_fit(bad)
    for name, value in state.items():
        assert_allclose(getattr(online, name), value)
    assert online.n_steps_ == 1
    # A later batch may be smaller than n_components; the first may not.
    online.partial_fit(X[:2])
    with pytest.raises(ValueError, match="n_components"):
        EMGaussianMixture(5).partial_fit(X[:3])


def test_warm_start_fit_after_partial_fit_continues():
    X = stream(3000)
    online = EMGaussianMixture(5, random_state=0, warm_start=True).partial_fit(X[:500])
    online.fit(X)
    assert online.converged_
    full = EMGaussianMixture(5, random_state=0).fit(X)
    assert abs(online.score(X) - full.score(X)) < 0.02
