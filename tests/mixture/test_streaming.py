"""EMGaussianMixture on memory-mapped data: streamed chunk by chunk, never copied."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_blobs

from sklearn_vae import EMGaussianMixture
from sklearn_vae.mixture import _data

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
PARAMETERS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


@pytest.fixture
def memmap(tmp_path):
    """A function saving an array to .npy and opening it read-only."""

    def open_memmap(X):
        path = tmp_path / f"X{X.shape[0]}_{X.dtype}.npy"
        np.save(path, X)
        return np.load(path, mmap_mode="r")

    return open_memmap


def blobs(n_samples=3000, n_features=5, centers=4, dtype=np.float64):
    X, _ = make_blobs(n_samples, n_features=n_features, centers=centers, random_state=0)
    return (X + 50.0).astype(dtype)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_memmap_fit_equals_in_memory_fit(memmap, covariance_type):
    X = blobs()
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    kwargs = dict(covariance_type=covariance_type, random_state=0, batch_size=512)
    in_memory = EMGaussianMixture(4, **kwargs).fit(X, sample_weight=weights)
    streamed = EMGaussianMixture(4, **kwargs).fit(memmap(X), sample_weight=weights)
    for name in PARAMETERS:
        assert_allclose(getattr(streamed, name), getattr(in_memory, name), rtol=1e-10)
    assert streamed.n_iter_ == in_memory.n_iter_
    assert_array_equal(
        EMGaussianMixture(4, **kwargs).fit_predict(memmap(X), sample_weight=weights),
        in_memory.predict(X),
    )


def test_memmap_is_visited_chunk_by_chunk(memmap, monkeypatch):
    X = blobs(5000, dtype=np.float32)
    mapped = memmap(X)
    converted_rows = []
    to_tensor = _data.to_tensor

    def spy(array, *args, **kwargs):
        converted_rows.append(np.shape(array)[0])
        return to_tensor(array, *args, **kwargs)

    monkeypatch.setattr(_data, "to_tensor", spy)
    streamed_passes = []
    iter_chunks = _data.StreamedRows.iter_chunks

    def spy_passes(self):
        streamed_passes.append(self)
        yield from iter_chunks(self)

    monkeypatch.setattr(_data.StreamedRows, "iter_chunks", spy_passes)
    gmm = EMGaussianMixture(4, random_state=0, batch_size=700).fit(mapped)
    assert len(streamed_passes) == gmm.n_iter_
    # Apart from the initialisation's rows (all 5000 here, at most
    # INITIALIZATION_ROWS in general), no conversion exceeds one chunk.
    assert max(converted_rows) == len(X)
    assert sorted(converted_rows)[-2] <= 700
    assert gmm.means_.dtype == np.float32


def test_large_memmap_initialises_from_a_sample(memmap, monkeypatch):
    monkeypatch.setattr(_data, "INITIALIZATION_ROWS", 500)
    X = blobs(6000)
    mapped = memmap(X)
    sizes = []
    rows = _data.EMRows.initialization_rows

    def spy(self, *args):
        start = rows(self, *args)
        sizes.append(len(start.X))
        return start

    monkeypatch.setattr(_data.EMRows, "initialization_rows", spy)
    streamed = EMGaussianMixture(4, random_state=0).fit(mapped)
    assert sizes == [500]
    in_memory = EMGaussianMixture(4, random_state=0).fit(X)
    assert abs(streamed.score(X) - in_memory.score(X)) < 1e-3
    # From the same initial parameters the two fits are the same EM.
    init = dict(
        weights_init=in_memory.weights_,
        means_init=in_memory.means_ + 0.5,
        precisions_init=in_memory.precisions_,
    )
    a = EMGaussianMixture(4, tol=1e-8, **init).fit(X)
    b = EMGaussianMixture(4, tol=1e-8, **init).fit(mapped)
    for name in PARAMETERS:
        assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-10)


def test_float32_memmap_matches_float32_in_memory(memmap):
    X = blobs(4000, dtype=np.float32)
    in_memory = EMGaussianMixture(4, covariance_type="diag", random_state=0).fit(X)
    streamed = EMGaussianMixture(4, covariance_type="diag", random_state=0).fit(memmap(X))
    assert streamed.covariances_.dtype == np.float32
    assert_allclose(streamed.means_, in_memory.means_, rtol=1e-5)
    assert_allclose(streamed.lower_bound_, in_memory.lower_bound_, rtol=1e-6)


def test_is_memory_mapped(memmap):
    X = blobs(100)
    mapped = memmap(X)
    assert _data.is_memory_mapped(mapped)
    assert _data.is_memory_mapped(mapped[10:20])
    assert not _data.is_memory_mapped(X)
    assert not _data.is_memory_mapped(np.asarray(mapped).copy())
