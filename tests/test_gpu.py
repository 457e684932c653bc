"""Checks that need a CUDA device; skipped where there is none.

Run them on a GPU machine with ``python -m pytest -m gpu``. They cover what the
CPU tests cannot: float32 EM on the GPU reaching the CPU's answer, data larger
than the device's share streamed to it, and an NCCL process group.
"""

import os
import socket

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_digits, make_blobs

from sklearn_vae import EMGaussianMixture, VAETransformer, VariationalGMMPrior
from sklearn_vae.mixture import _base

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

PARAMETERS = ("weights_", "means_", "covariances_")


def blobs(n_samples=20_000, dtype=np.float32):
    X, _ = make_blobs(n_samples, n_features=16, centers=8, random_state=0)
    return X.astype(dtype)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_float32_em_on_the_gpu_reaches_the_cpu_model(covariance_type):
    X = blobs()
    start = EMGaussianMixture(8, covariance_type=covariance_type, random_state=0).fit(X)
    init = dict(
        covariance_type=covariance_type,
        weights_init=start.weights_,
        means_init=start.means_ + 0.2,
        precisions_init=start.precisions_,
    )
    cpu = EMGaussianMixture(8, **init).fit(X)
    gpu = EMGaussianMixture(8, device="cuda", **init).fit(X)
    assert gpu.converged_
    assert gpu.means_.dtype == np.float32
    for name in PARAMETERS:
        assert_allclose(getattr(gpu, name), getattr(cpu, name), rtol=1e-3, atol=1e-4)
    assert_array_equal(gpu.predict(X), cpu.predict(X))


def test_streaming_to_the_gpu_equals_the_in_memory_gpu_fit(tmp_path, monkeypatch):
    X = blobs(50_000, dtype=np.float64)
    path = tmp_path / "X.npy"
    np.save(path, X)
    in_memory = EMGaussianMixture(8, device="cuda", random_state=0).fit(X)
    mapped = EMGaussianMixture(8, device="cuda", random_state=0).fit(
        np.load(path, mmap_mode="r")
    )
    for name in PARAMETERS:
        assert_allclose(getattr(mapped, name), getattr(in_memory, name), rtol=1e-10)
    # An in-memory array above the device share is streamed too.
    monkeypatch.setattr(_base, "_DEVICE_SHARE", 0.0)
    streamed = EMGaussianMixture(8, device="cuda", random_state=0).fit(X)
    for name in PARAMETERS:
        assert_allclose(getattr(streamed, name), getattr(in_memory, name), rtol=1e-10)


def test_partial_fit_on_the_gpu():
    X = blobs()
    online = EMGaussianMixture(8, device="cuda", random_state=0)
    for start in range(0, len(X), 2000):
        online.partial_fit(X[start : start + 2000])
    full = EMGaussianMixture(8, random_state=0).fit(X)
    assert abs(online.score(X) - full.score(X)) < 0.05


def test_neural_estimators_train_in_float32_on_the_gpu():
    X = (load_digits().data / 16.0).astype(np.float32)
    vae = VAETransformer(4, max_iter=20, device="cuda", random_state=0).fit(X)
    assert vae.transform(X).dtype == np.float32
    assert vae.loss_curve_[-1] < vae.loss_curve_[0]
    assert np.isfinite(vae.score_samples(X[:50])).all()
    vade = VariationalGMMPrior(
        10, pretrain_epochs=10, max_iter=5, n_init=2, device="cuda", random_state=0
    ).fit(X)
    assert np.isfinite(vade.predict_proba(X)).all()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _nccl_rank(rank, world_size, port, results):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world_size)
    try:
        X = np.array_split(blobs(), world_size)[rank]
        gmm = EMGaussianMixture(8, device=f"cuda:{rank}", random_state=0).fit(X)
        vae = VAETransformer(
            2, hidden_layer_sizes=(32,), max_iter=3, device=f"cuda:{rank}", random_state=0
        ).fit(X / 10.0)
        results[rank] = (
            gmm.means_,
            {k: v.cpu().numpy() for k, v in vae.encoder_.state_dict().items()},
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_nccl_available(),
    reason="needs NCCL",
)
def test_nccl_data_parallel_smoke():
    world_size = min(2, torch.cuda.device_count())
    with torch.multiprocessing.get_context("spawn").Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.spawn(
            _nccl_rank, args=(world_size, _free_port(), results), nprocs=world_size
        )
        results = [results[rank] for rank in range(world_size)]
    for means, weights in results[1:]:
        assert_allclose(means, results[0][0])
        for name, value in weights.items():
            assert_array_equal(value, results[0][1][name])
