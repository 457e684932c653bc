"""torch.distributed: two CPU ranks (gloo), each with a shard, against one process.

Each test spawns two processes that join a gloo process group, fit on their
shard and save what they fitted; the test process compares. The workers are
module-level functions so the spawned processes can import them.
"""

import os
import socket
import time
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_blobs

from sklearn_vae import EMGaussianMixture

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend",
)

WORLD_SIZE = 2
PARAMETERS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


#: Seconds after which ranks still running are killed: a collective that one
#: rank never reaches would otherwise hang the test suite.
TIMEOUT = 180


def run_ranks(worker, *args):
    """Run ``worker(rank, *args)`` on WORLD_SIZE gloo ranks; return their results."""
    port = _free_port()
    with mp.get_context("spawn").Manager() as manager:
        results = manager.dict()
        context = mp.spawn(
            _join_and_run,
            args=(port, worker, args, results),
            nprocs=WORLD_SIZE,
            join=False,
        )
        deadline = time.monotonic() + TIMEOUT
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                pytest.fail(f"the ranks did not finish within {TIMEOUT} s (deadlock?)")
        return [results[rank] for rank in range(WORLD_SIZE)]


def _join_and_run(rank, port, worker, args, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        results[rank] = worker(rank, *args)
    finally:
        dist.destroy_process_group()


def mixture_data():
    X, _ = make_blobs(3000, n_features=4, centers=3, random_state=0)
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    return X + 10.0, weights


def shard(array, rank):
    # Uneven shards: rank 0 holds 1200 rows, rank 1 the other 1800.
    return np.split(array, [1200])[rank]


def fitted(estimator):
    result = {name: getattr(estimator, name) for name in PARAMETERS}
    result["n_iter_"] = getattr(estimator, "n_iter_", None)
    return result


def _fit_mixtures(rank):
    X, weights = mixture_data()
    results = {}
    for covariance_type in ("full", "tied", "diag", "spherical"):
        gmm = EMGaussianMixture(
            3, covariance_type=covariance_type, random_state=0, tol=1e-8
        ).fit(shard(X, rank), sample_weight=shard(weights, rank))
        results[covariance_type] = fitted(gmm)
    # Initialised from rank-dependent seeds: the ranks must still agree.
    unseeded = EMGaussianMixture(3, init_params="random_from_data").fit(shard(X, rank))
    results["unseeded"] = fitted(unseeded)
    online = EMGaussianMixture(3, random_state=0)
    for start in (0, 300, 600, 900):
        online.partial_fit(shard(X, rank)[start : start + 300])
    results["partial_fit"] = fitted(online)
    results["labels"] = EMGaussianMixture(3, random_state=0).fit_predict(shard(X, rank))
    return results


def test_ranks_fit_the_mixture_of_all_shards():
    ranks = run_ranks(_fit_mixtures)
    X, weights = mixture_data()
    for covariance_type in ("full", "tied", "diag", "spherical"):
        single = EMGaussianMixture(
            3, covariance_type=covariance_type, random_state=0, tol=1e-8
        ).fit(X, sample_weight=weights)
        for rank in ranks:
            result = rank[covariance_type]
            assert result["n_iter_"] == single.n_iter_
            for name in PARAMETERS:
                assert_allclose(
                    result[name], getattr(single, name), rtol=1e-10, atol=1e-12
                )
    for key in ("unseeded", "partial_fit"):
        for name in PARAMETERS:
            assert_array_equal(ranks[0][key][name], ranks[1][key][name])
    single = EMGaussianMixture(3, random_state=0).fit(X)
    assert_array_equal(
        np.concatenate([ranks[0]["labels"], ranks[1]["labels"]]), single.predict(X)
    )


def _fit_on_bad_shard(rank):
    X, _ = mixture_data()
    X = shard(X, rank).copy()
    if rank == 1:
        X[5, 0] = np.nan
    try:
        EMGaussianMixture(3).fit(X)
    except ValueError as error:
        return str(error)
    return None


def test_a_bad_shard_fails_every_rank_without_hanging():
    messages = run_ranks(_fit_on_bad_shard)
    assert "NaN" in messages[1]
    assert messages[0].startswith("Rank 1 could not fit its shard") and "NaN" in messages[0]


def network_data():
    X, _ = make_blobs(600, n_features=6, centers=3, random_state=1)
    return (X - X.mean(axis=0)) / X.std(axis=0)


def tiny_vade(**params):
    """The small VariationalGMMPrior the rank workers fit: 3 clusters in 2-D codes."""
    from sklearn_vae import VariationalGMMPrior

    defaults = {
        "n_components": 3,
        "latent_dim": 2,
        "hidden_layer_sizes": (16,),
        "n_init": 1,
        "random_state": 0,
    }
    return VariationalGMMPrior(**{**defaults, **params})


def _weights(module):
    return {name: value.detach().numpy().copy() for name, value in module.state_dict().items()}


def _train_networks(rank):
    from sklearn_vae import VAETransformer

    X = np.split(network_data(), [250])[rank]  # uneven shards: 250 and 350 rows
    vae = VAETransformer(
        2,
        hidden_layer_sizes=(16,),
        max_iter=15,
        batch_size=64,
        early_stopping=True,
        n_iter_no_change=3,
        random_state=rank,  # different seeds: rank 0's weights must win
    ).fit(X)
    vade = tiny_vade(
        n_neighbors=5,
        pretrain_epochs=3,
        max_iter=4,
        n_init=2,
        # Several starts: every rank must keep the same one (their mixtures,
        # and so their weight entropies, are fitted to all ranks' codes).
        # n_jobs is ignored in a process group: the ranks' collectives must
        # come in the same order, so the starts run one after another.
        n_pretrain=3,
        n_jobs=2,
        batch_size=64,
    ).fit(X)
    return {
        "vae": {**_weights(vae.encoder_), **_weights(vae.decoder_)},
        "vae_history": vae.history_,
        "vae_n_iter": vae.n_iter_,
        "vade": {
            **_weights(vade.encoder_),
            **_weights(vade.decoder_),
            **_weights(vade.prior_),
        },
        "vade_history": vade.history_,
        "vade_weights": vade.weights_,
        "vade_start_entropies": vade.pretrain_entropies_,
    }


def _without_times(history):
    return [{k: v for k, v in record.items() if k != "time"} for record in history]


def test_networks_train_data_parallel_with_identical_weights():
    ranks = run_ranks(_train_networks)
    for key in ("vae", "vade"):
        assert ranks[0][key].keys() == ranks[1][key].keys()
        for name, value in ranks[0][key].items():
            assert_array_equal(value, ranks[1][key][name], err_msg=f"{key}: {name}")
    # The logged terms and the stopping decision are global.
    assert ranks[0]["vae_n_iter"] == ranks[1]["vae_n_iter"]
    for key in ("vae_history", "vade_history"):
        assert _without_times(ranks[0][key]) == _without_times(ranks[1][key])
    assert_array_equal(ranks[0]["vade_weights"], ranks[1]["vade_weights"])
    assert ranks[0]["vade_start_entropies"].shape == (3,)
    assert_array_equal(ranks[0]["vade_start_entropies"], ranks[1]["vade_start_entropies"])
    losses = [record["loss"] for record in ranks[0]["vae_history"]]
    assert losses[-1] < losses[0]


def _fit_plain_vade_on_uneven_shards(rank):
    # 12 and 588 rows. Plain VaDE's 'auto' covariance is 'full' from 15 rows
    # on here (3 components, latent_dim=2): rank 0's shard alone is too small,
    # all the rows are not.
    X = np.split(network_data(), [12])[rank]
    vade = tiny_vade(n_neighbors=None, pretrain_epochs=2, max_iter=1, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vade.fit(X)
    return {"covariance_type": vade.covariance_type_, "covariances": vade.covariances_}


def test_ranks_resolve_auto_covariance_type_from_all_rows():
    ranks = run_ranks(_fit_plain_vade_on_uneven_shards)
    assert [result["covariance_type"] for result in ranks] == ["full", "full"]
    assert_array_equal(ranks[0]["covariances"], ranks[1]["covariances"])


def _pretrained_decoder_variance(rank):
    X_all = network_data()
    X = np.split(X_all, [12])[rank]  # rank 0's 12 rows alone say little
    # A vanishing learning rate keeps the networks where pretraining left them.
    vade = tiny_vade(
        n_neighbors=5, pretrain_epochs=5, max_iter=1, batch_size=32, learning_rate_init=1e-12
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vade.fit(X)
    with torch.no_grad():
        codes = vade.encoder_(torch.as_tensor(X_all))[0]
        residual = (X_all - vade.decoder_.mean(codes).numpy()) ** 2
    return {
        "variance": vade.decoder_.variance().detach().numpy(),
        "all_rows": residual.mean(axis=0),
        "own_rows": residual[: len(X)].mean(axis=0) if rank == 0 else None,
    }


def test_pretrained_decoder_variance_is_the_residual_variance_of_all_rows():
    ranks = run_ranks(_pretrained_decoder_variance)
    assert_array_equal(ranks[0]["variance"], ranks[1]["variance"])
    assert_allclose(ranks[0]["variance"], ranks[0]["all_rows"], rtol=1e-3)
    assert not np.allclose(ranks[0]["variance"], ranks[0]["own_rows"], rtol=1e-2)
