"""Dask: exact EM where the blocks live, lazy inference, and dask_ml's Incremental.

Everything runs on a ``distributed.LocalCluster`` of two worker processes
started here, so the E-step really is pickled and run elsewhere.
"""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_blobs

from sklearn_vae import EMGaussianMixture, VAETransformer
from sklearn_vae.mixture import _dask, _data

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
PARAMETERS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _prepare_worker():
    # One torch thread per single-threaded worker (two workers on two cores),
    # and the package imported once, before the first task.
    import sklearn_vae  # noqa: F401

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        client.run(_prepare_worker)
        yield client


def blobs(n_samples=6000, n_features=5, centers=4):
    X, _ = make_blobs(n_samples, n_features=n_features, centers=centers, random_state=0)
    return X + 20.0


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_dask_fit_equals_in_memory_fit_from_the_same_start(client, covariance_type):
    X = blobs()
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    start = EMGaussianMixture(4, covariance_type=covariance_type, random_state=0).fit(X)
    init = dict(
        covariance_type=covariance_type,
        weights_init=start.weights_,
        means_init=start.means_ + 0.3,
        precisions_init=start.precisions_,
        tol=1e-9,
    )
    in_memory = EMGaussianMixture(4, **init).fit(X, sample_weight=weights)
    on_dask = EMGaussianMixture(4, **init).fit(
        da.from_array(X, chunks=(1000, 5)),
        sample_weight=da.from_array(weights, chunks=700),  # rechunked to X's rows
    )
    assert on_dask.n_iter_ == in_memory.n_iter_
    for name in PARAMETERS:
        assert_allclose(getattr(on_dask, name), getattr(in_memory, name), rtol=1e-10)
    assert_allclose(on_dask.lower_bound_, in_memory.lower_bound_, rtol=1e-12)


def test_default_initialisation_on_few_rows_matches_in_memory(client):
    X = blobs(3000)
    in_memory = EMGaussianMixture(4, random_state=0).fit(X)
    on_dask = EMGaussianMixture(4, random_state=0).fit(da.from_array(X, chunks=700))
    assert_allclose(on_dask.means_, in_memory.means_, rtol=1e-10)


def test_initialisation_pulls_only_a_sample(client, monkeypatch):
    monkeypatch.setattr(_data, "INITIALIZATION_ROWS", 400)
    X = blobs(5000)
    pulled = []
    rows = _dask.DaskRows.initialization_rows

    def spy(self, *args):
        start = rows(self, *args)
        pulled.append(len(start.X))
        return start

    monkeypatch.setattr(_dask.DaskRows, "initialization_rows", spy)
    gmm = EMGaussianMixture(4, random_state=0).fit(da.from_array(X, chunks=1000))
    assert pulled == [400]
    assert abs(gmm.score(X) - EMGaussianMixture(4, random_state=0).fit(X).score(X)) < 1e-3


def test_inference_on_dask_is_lazy_and_blockwise(client):
    X = blobs(4000)
    gmm = EMGaussianMixture(4, random_state=0).fit(X)
    X_dask = da.from_array(X, chunks=(900, 5))
    labels = gmm.predict(X_dask)
    proba = gmm.predict_proba(X_dask)
    log_prob = gmm.score_samples(X_dask)
    for lazy in (labels, proba, log_prob, gmm.transform(X_dask)):
        assert isinstance(lazy, da.Array)
    assert proba.chunks[0] == X_dask.chunks[0]
    assert labels.dtype == np.int64
    assert_array_equal(labels.compute(), gmm.predict(X))
    assert_allclose(proba.compute(), gmm.predict_proba(X))
    assert_allclose(log_prob.compute(), gmm.score_samples(X))
    assert_allclose(gmm.score(X_dask), gmm.score(X))
    assert isinstance(gmm.score(X_dask), float)
    assert_array_equal(
        EMGaussianMixture(4, random_state=0).fit_predict(X_dask).compute(),
        gmm.predict(X),
    )


def test_float32_dask_fit_stays_float32(client):
    X = blobs(3000).astype(np.float32)
    gmm = EMGaussianMixture(4, covariance_type="diag", random_state=0)
    gmm.fit(da.from_array(X, chunks=1000))
    assert gmm.means_.dtype == np.float32
    assert gmm.predict_proba(da.from_array(X, chunks=1000)).dtype == np.float32


def test_bad_dask_input_raises_clearly(client):
    X = blobs(2000)
    bad = X.copy()
    bad[1500, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        EMGaussianMixture(4).fit(da.from_array(bad, chunks=500))
    with pytest.raises(ValueError, match="2D"):
        EMGaussianMixture(4).fit(da.from_array(X[:, 0], chunks=500))
    with pytest.raises(ValueError, match="Negative"):
        EMGaussianMixture(4).fit(
            da.from_array(X, chunks=500), sample_weight=-np.ones(len(X))
        )
    gmm = EMGaussianMixture(4, random_state=0).fit(da.from_array(X, chunks=500))
    with pytest.raises(ValueError, match="features"):
        gmm.predict(da.from_array(X[:, :3], chunks=500))


def test_incremental_feeds_partial_fit_block_by_block(client):
    dask_ml_wrappers = pytest.importorskip("dask_ml.wrappers")
    X = blobs(6000)
    X_dask = da.from_array(X, chunks=(1000, 5))
    incremental = dask_ml_wrappers.Incremental(EMGaussianMixture(4, random_state=0))
    incremental.fit(X_dask)
    mixture = incremental.estimator_
    assert mixture.n_steps_ == len(X_dask.chunks[0])
    assert abs(mixture.score(X) - EMGaussianMixture(4, random_state=0).fit(X).score(X)) < 0.05
    # Incremental predicts blockwise, lazily.
    assert_array_equal(incremental.predict(X_dask).compute(), mixture.predict(X))


def test_incremental_trains_the_vae(client):
    dask_ml_wrappers = pytest.importorskip("dask_ml.wrappers")
    torch.set_num_threads(1)
    X = blobs(2000)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    vae = VAETransformer(2, hidden_layer_sizes=(8,), random_state=0)
    incremental = dask_ml_wrappers.Incremental(vae)
    incremental.fit(da.from_array(X, chunks=(500, 5)))
    fitted = incremental.estimator_
    assert fitted.n_iter_ == 4  # one epoch per block
    assert fitted.transform(X).shape == (len(X), 2)
    assert np.isfinite(fitted.score(X))
