"""Clustering quality of VariationalGMMPrior against the classic pipelines.

Runs every method on the same data in one process, over several seeds, and
prints for each data set a table of Hungarian-matched accuracy, NMI and ARI
(mean and standard deviation over seeds), the mean fit time (wall clock, and
CPU time of this process, which a busy machine inflates less), and each
method's accuracy as a ratio of the best baseline's::

    python benchmarks/bench_clustering.py              # all data sets, 5 seeds
    python benchmarks/bench_clustering.py --quick      # digits only, 2 seeds
    python benchmarks/bench_clustering.py --seeds 3 --datasets digits wine

Data: scikit-learn's digits (X / 16), wine and iris (standardised), and 50-D
``make_blobs`` (standardised). The number of clusters is the number of classes.
Torch runs on one thread per process unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, load_iris, load_wine, make_blobs
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_vae import VAETransformer, VariationalGMMPrior
from sklearn_vae.metrics import clustering_accuracy

#: A method takes (n_clusters, n_features, seed) and returns an object with
#: fit_predict.
MethodFactory = Callable[[int, int, int], object]


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the benchmark's version of a data set: features and classes."""
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return X / 16.0, y
    if name == "blobs50":
        X, y = make_blobs(2000, n_features=50, centers=8, cluster_std=4.0, random_state=0)
        return StandardScaler().fit_transform(X), y
    loader = {"wine": load_wine, "iris": load_iris}[name]
    X, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _gmm(k: int, n_features: int, seed: int) -> GaussianMixture:
    return GaussianMixture(k, random_state=seed)


def _pca_gmm(k: int, n_features: int, seed: int) -> object:
    # PCA(10), or every component when there are fewer features (iris, wine).
    return make_pipeline(PCA(min(10, n_features), random_state=seed), _gmm(k, n_features, seed))


def _vae_codes_gmm(k: int, n_features: int, seed: int) -> object:
    return make_pipeline(
        VAETransformer(n_components=10, max_iter=100, random_state=seed),
        GaussianMixture(k, random_state=seed),
    )


BASELINES: dict[str, MethodFactory] = {
    "KMeans": lambda k, n_features, seed: KMeans(k, n_init=10, random_state=seed),
    "GaussianMixture raw": _gmm,
    "PCA(10)+GaussianMixture": _pca_gmm,
    "VAETransformer(10)+GaussianMixture": _vae_codes_gmm,
}

OURS: dict[str, MethodFactory] = {
    "VariationalGMMPrior (defaults)": lambda k, n_features, seed: VariationalGMMPrior(
        k, random_state=seed
    ),
    "VariationalGMMPrior (wcp=1e3)": lambda k, n_features, seed: VariationalGMMPrior(
        k, weight_concentration_prior=1e3, random_state=seed
    ),
    "VariationalGMMPrior (n_neighbors=None)": lambda k, n_features, seed: VariationalGMMPrior(
        k, n_neighbors=None, random_state=seed
    ),
}


def evaluate(factory: MethodFactory, X: np.ndarray, y: np.ndarray, seeds: list[int]) -> dict:
    """Fit the method once per seed; return per-seed scores and times."""
    k = len(np.unique(y))
    scores: dict[str, list[float]] = {"acc": [], "nmi": [], "ari": [], "time": [], "cpu": []}
    for seed in seeds:
        started, cpu_started = time.perf_counter(), time.process_time()
        labels = factory(k, X.shape[1], seed).fit_predict(X)
        scores["time"].append(time.perf_counter() - started)
        scores["cpu"].append(time.process_time() - cpu_started)
        scores["acc"].append(clustering_accuracy(y, labels))
        scores["nmi"].append(normalized_mutual_info_score(y, labels))
        scores["ari"].append(adjusted_rand_score(y, labels))
    return scores


def report(name: str, X: np.ndarray, y: np.ndarray, seeds: list[int]) -> None:
    """Run every method on one data set and print its table."""
    print(f"\n## {name}: {X.shape[0]} samples, {X.shape[1]} features, "
          f"{len(np.unique(y))} classes, seeds {seeds}")
    results = {}
    for method, factory in {**BASELINES, **OURS}.items():
        results[method] = evaluate(factory, X, y, seeds)
    best_baseline = max(np.mean(results[m]["acc"]) for m in BASELINES)
    header = (
        f"{'method':40s} {'accuracy':>15s} {'NMI':>15s} {'ARI':>15s} {'fit s':>7s} "
        f"{'cpu s':>7s} {'acc/best baseline':>18s}"
    )
    print(header)
    print("-" * len(header))
    for method, scores in results.items():
        cells = " ".join(
            f"{np.mean(scores[m]):7.3f} ± {np.std(scores[m]):5.3f}" for m in ("acc", "nmi", "ari")
        )
        ratio = np.mean(scores["acc"]) / best_baseline
        print(
            f"{method:40s} {cells} {np.mean(scores['time']):7.1f} "
            f"{np.mean(scores['cpu']):7.1f} {ratio:18.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, 2 seeds")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5)")
    parser.add_argument(
        "--datasets", nargs="+", default=None, choices=["digits", "wine", "iris", "blobs50"]
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_seeds = args.seeds or (2 if args.quick else 5)
    datasets = args.datasets or (["digits"] if args.quick else ["digits", "wine", "iris", "blobs50"])
    warnings.simplefilter("ignore", ConvergenceWarning)
    for name in datasets:
        report(name, *load(name), list(range(n_seeds)))


if __name__ == "__main__":
    main()
