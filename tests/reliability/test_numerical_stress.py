"""Numerical stress: rescaled data, duplicate points, collinear features.

EMGaussianMixture is equivariant under a change of units: fitted on ``s X``
(with ``reg_covar``, which is in squared units of X, scaled by ``s**2``) it is
the model fitted on X with means times ``s``, covariances times ``s**2``, the
same weights and predictions, and log-densities lower by ``n_features *
log(s)``. The neural estimators do not standardise their input: they warn
when the features are far from unit scale, and in a Pipeline after a
StandardScaler they give the same model whatever the units.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _estimators import ESTIMATORS, is_fitted, predictions
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_vae import EMGaussianMixture
from sklearn_vae.neural._engine import NonFiniteLossError

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
SCALES = [1e6, 1e-6]
NEURAL = ("VAETransformer", "VariationalGMMPrior")


def blobs(n_samples=150, n_features=3, seed=0):
    X, _ = make_blobs(n_samples, n_features=n_features, centers=3, random_state=seed)
    return X


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_mixture_fitted_in_other_units_is_the_same_model(covariance_type, scale):
    X = blobs()
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    reference = EMGaussianMixture(**params).fit(X)
    scaled = EMGaussianMixture(**params, reg_covar=1e-6 * scale**2).fit(X * scale)
    assert scaled.n_iter_ == reference.n_iter_
    assert_allclose(scaled.weights_, reference.weights_, rtol=1e-9)
    assert_allclose(scaled.means_ / scale, reference.means_, rtol=1e-9, atol=1e-9)
    assert_allclose(scaled.covariances_ / scale**2, reference.covariances_, rtol=1e-8, atol=1e-12)
    assert_array_equal(scaled.predict(X * scale), reference.predict(X))
    assert_allclose(scaled.predict_proba(X * scale), reference.predict_proba(X), atol=1e-9)
    # A change of variables: log p(s x) = log p(x) - n_features * log(s).
    assert_allclose(
        scaled.score_samples(X * scale),
        reference.score_samples(X) - X.shape[1] * np.log(scale),
        rtol=1e-9,
    )
    assert_allclose(scaled.lower_bound_, reference.lower_bound_ - X.shape[1] * np.log(scale))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_mixture_with_default_reg_covar_survives_duplicates_and_collinear_features(
    covariance_type, dtype
):
    rng = np.random.default_rng(0)
    X = blobs(n_samples=60)
    stressed = {
        # Every row ten times, and a cluster of 20 identical points.
        "duplicate rows": np.vstack([np.repeat(X, 10, axis=0), np.tile(X[:1], (20, 1))]),
        # A copy of a feature and an exact linear combination of two.
        "collinear features": np.column_stack([X, X[:, 0], X[:, 0] - 2 * X[:, 1]]),
        "all rows identical": np.tile(rng.normal(size=(1, 3)), (40, 1)),
        "a constant feature": np.column_stack([X, np.full(len(X), 7.0)]),
    }
    for name, data in stressed.items():
        data = data.astype(dtype)
        with warnings.catch_warnings():
            # k-means warns when it finds fewer distinct points than clusters.
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator = EMGaussianMixture(3, covariance_type=covariance_type, random_state=0)
            labels = estimator.fit_predict(data)
        assert_array_equal(labels, estimator.predict(data), err_msg=name)
        proba = estimator.predict_proba(data)
        assert np.all(np.isfinite(proba)) and np.all((proba >= 0) & (proba <= 1)), name
        assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5, err_msg=name)
        assert np.all(np.isfinite(estimator.score_samples(data))), name
        assert np.isfinite(estimator.lower_bound_), name


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", NEURAL)
def test_neural_fit_on_unscaled_features_warns_and_never_returns_garbage(name, scale):
    X = StandardScaler().fit_transform(blobs()) * scale
    estimator = ESTIMATORS[name]()
    with pytest.warns(UserWarning, match=r"far from unit scale.*StandardScaler"):
        try:
            estimator.fit(X)
        except NonFiniteLossError:
            assert not is_fitted(estimator)
            return
    for method, value in predictions(estimator, X).items():
        assert np.all(np.isfinite(value)), method


@pytest.mark.parametrize("name", NEURAL)
def test_neural_fit_after_a_scaler_is_the_same_model_in_any_units(name):
    X = blobs()
    reference = make_pipeline(StandardScaler(), ESTIMATORS[name]()).fit(X)
    expected = predictions(reference[-1], reference[0].transform(X))
    for scale in SCALES:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*unit scale")
            pipeline = make_pipeline(StandardScaler(), ESTIMATORS[name]()).fit(X * scale)
        for method, value in predictions(pipeline[-1], pipeline[0].transform(X * scale)).items():
            if method == "predict":
                assert_array_equal(value, expected[method])
            else:
                assert_allclose(value, expected[method], rtol=1e-6, atol=1e-8, err_msg=method)
        # The pipeline scores the standardised data; the log-density of the
        # data as given subtracts the log of the scaler's units.
        log_density = pipeline.score_samples(X * scale) - np.log(pipeline[0].scale_).sum()
        assert_allclose(
            log_density + X.shape[1] * np.log(scale),
            reference.score_samples(X) - np.log(reference[0].scale_).sum(),
            rtol=1e-6,
        )


@pytest.mark.parametrize("name", NEURAL)
def test_bernoulli_data_never_get_the_unit_scale_warning(name):
    # Faint grey levels: in [0, 1] as Bernoulli data must be, with standard
    # deviations (0.014) that would warn under a Gaussian likelihood.
    X = np.random.default_rng(0).uniform(0.0, 0.05, size=(40, 5))
    with pytest.warns(UserWarning, match="unit scale"):
        ESTIMATORS[name](likelihood="gaussian").fit(X)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*unit scale")
        estimator = ESTIMATORS[name](likelihood="bernoulli").fit(X)
    assert np.all(np.isfinite(estimator.score_samples(X)))
