"""What VariationalGMMPrior's pretraining starts give, start by start.

``n_pretrain`` runs several pretrainings (starts) and continues from the one
whose initial mixture weights are the most even. This script trains every
start of a seed to the end on its own (the fit the estimator makes when that
start wins), so that the rule can be scored for every number of starts, and
beside it an oracle that keeps the best start by the labels. It also measures
how far the starts agree: after matching each start's clusters to the first
start's, the share of rows that every start puts in the same cluster, the
accuracy on those rows and on the rest, the share of the kept fit's errors
that every start makes too, and the accuracy of a majority vote of the
starts. Where the starts make the same errors, no choice among them (and no
vote) can remove those errors. With a neighbour graph it also gives the
share of the kept fit's errors whose neighbours in the input are mostly of
their own class (errors that the graph's local information gets right),
and the kept fit's errors by class::

    python benchmarks/bench_vade_starts.py                   # digits, wcp=1e3, 10 seeds, 5 starts
    python benchmarks/bench_vade_starts.py --seeds 3 --starts 3 --jobs 2
    python benchmarks/bench_vade_starts.py --dataset wine --params '{}'

Data as in ``bench_clustering.py``. ``--params`` are VariationalGMMPrior's
parameters as JSON (default ``{"weight_concentration_prior": 1000.0}``, the
balanced prior). ``--jobs`` fits starts in that many processes, each with
torch on ``--threads`` threads (default 1).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import threading
import time
import warnings
from typing import Any

import numpy as np
import scipy.optimize
import scipy.stats
import torch
from bench_clustering import load
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import confusion_matrix
from sklearn.metrics.cluster import contingency_matrix
from sklearn.neighbors import NearestNeighbors

from sklearn_vae import VariationalGMMPrior
from sklearn_vae._backend import to_numpy

DATASETS = ("digits", "wine", "iris", "blobs50")


class _OneStart(VariationalGMMPrior):
    """A fit that pretrains only start ``only_start`` of its seed's starts.

    Start 0 is the start that ``n_pretrain=1`` runs; start ``k`` has the seed
    that start ``k`` of an ``n_pretrain > k`` fit with the same
    ``random_state`` gets, so the fit equals that fit whenever start ``k``
    is the one it keeps.
    """

    only_start = 0  # set on the instance; not a parameter

    def _initialize_model(self, model: Any, data: Any, seed: int) -> None:
        start_seed = self._start_seed(seed, self.only_start)
        start = model if self.only_start == 0 else self._restarted_copy(model, data, start_seed)
        self.pretrain_history_ = self._pretrained_start(start, data, start_seed)
        if start is not model:
            model.load_state_dict(start.state_dict())
        weights = to_numpy(model.prior.weights)
        self.pretrain_entropies_ = np.array([float(scipy.stats.entropy(weights))])


def _start_worker(threads: int) -> None:
    """Set torch's threads in a pool worker, and end the worker if its parent dies.

    A killed benchmark would otherwise leave its idle workers behind, each
    holding a copy of torch and the data.
    """
    torch.set_num_threads(threads)
    parent = os.getppid()

    def exit_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()


def worker_pool(jobs: int, threads: int) -> concurrent.futures.ProcessPoolExecutor:
    """Processes that fit starts, each with torch on ``threads`` threads."""
    return concurrent.futures.ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),  # fork would copy torch's thread pool
        initializer=_start_worker,
        initargs=(threads,),
    )


def fit_start(
    dataset: str, params: dict[str, Any], seed: int, start: int
) -> dict[str, Any]:
    """Fit start ``start`` of seed ``seed`` alone; return its entropy, labels and time."""
    X, y = load(dataset)
    estimator = _OneStart(len(np.unique(y)), random_state=seed, **params)
    estimator.only_start = start
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X)
    return {
        "seed": seed,
        "start": start,
        "entropy": float(estimator.pretrain_entropies_[0]),
        "labels": estimator.labels_,
        "n_iter": estimator.n_iter_,
        "n_neighbors": estimator.n_neighbors_,
        "seconds": time.perf_counter() - began,
    }


def correct_rows(y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each row's cluster is its class under the best one-to-one matching."""
    classes, class_index = np.unique(y, return_inverse=True)
    clusters, cluster_index = np.unique(labels, return_inverse=True)
    table = contingency_matrix(class_index, cluster_index)
    rows, columns = scipy.optimize.linear_sum_assignment(-table)
    class_of = np.full(len(clusters), -1)  # clusters left unmatched are wrong everywhere
    class_of[columns] = rows
    return class_of[cluster_index] == class_index


def aligned_to(reference: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """``labels`` renamed to the clusters of ``reference`` they overlap most (one to one)."""
    table = confusion_matrix(reference, labels, labels=np.arange(n_clusters))
    rows, columns = scipy.optimize.linear_sum_assignment(-table)
    rename = np.arange(n_clusters)
    rename[columns] = rows
    return rename[labels]


def kept_start(entropies: np.ndarray) -> int:
    """The start ``n_pretrain`` keeps: the largest entropy, the first on ties."""
    return int(np.argmax(entropies))


def majority_vote(aligned: np.ndarray, tie_breaker: int) -> np.ndarray:
    """Each row's most frequent cluster over the starts; ties go to start ``tie_breaker``."""
    n_clusters = int(aligned.max()) + 1
    counts = np.stack([(aligned == c).sum(axis=0) for c in range(n_clusters)])
    vote = counts.argmax(axis=0)
    tied = (counts == counts.max(axis=0)).sum(axis=0) > 1
    vote[tied] = aligned[tie_breaker, tied]
    return vote


def neighbors_agree(X: np.ndarray, y: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Whether the most frequent class among each row's neighbours is its own.

    The neighbours are those of the estimator's graph (exact Euclidean, the
    row itself left out); ties go to the smallest class.
    """
    graph = NearestNeighbors(n_neighbors=n_neighbors).fit(X).kneighbors(return_distance=False)
    _, class_index = np.unique(y, return_inverse=True)
    counts = np.stack([np.bincount(row, minlength=class_index.max() + 1) for row in class_index[graph]])
    return counts.argmax(axis=1) == class_index


def summarise(
    y: np.ndarray, results: list[dict[str, Any]], n_starts: int, graph_agrees: np.ndarray | None
) -> dict[str, Any]:
    """Scores of one seed's starts: per start, per rule, and their agreement.

    ``graph_agrees`` is :func:`neighbors_agree` for the fits' graph, or None
    without one.
    """
    results = sorted(results, key=lambda result: result["start"])
    labels = np.stack([result["labels"] for result in results])
    entropies = np.array([result["entropy"] for result in results])
    correct = np.stack([correct_rows(y, row) for row in labels])
    accuracies = correct.mean(axis=1)
    n_clusters = int(labels.max()) + 1
    aligned = np.stack([aligned_to(labels[0], row, n_clusters) for row in labels])
    agreed = (aligned == aligned[0]).all(axis=0)
    kept = kept_start(entropies)
    errors = ~correct[kept]
    return {
        "entropies": entropies,
        "accuracies": accuracies,
        "kept_of_first": [accuracies[kept_start(entropies[:n])] for n in range(1, n_starts + 1)],
        "oracle": accuracies.max(),
        "agreed": agreed.mean(),
        "accuracy_agreed": correct[kept, agreed].mean() if agreed.any() else np.nan,
        "accuracy_disagreed": correct[kept, ~agreed].mean() if (~agreed).any() else np.nan,
        "shared_errors": (~correct).all(axis=0)[errors].mean() if errors.any() else np.nan,
        "graph_consistent_errors": (
            graph_agrees[errors].mean() if graph_agrees is not None and errors.any() else np.nan
        ),
        "errors_by_class": np.array([errors[y == c].sum() for c in np.unique(y)]),
        "vote": correct_rows(y, majority_vote(aligned, kept)).mean(),
        "seconds": np.mean([result["seconds"] for result in results]),
        "n_iter": [result["n_iter"] for result in results],
    }


def report(dataset: str, params: dict[str, Any], seeds: list[int], n_starts: int,
           jobs: int, threads: int) -> None:
    """Fit every start of every seed and print the tables."""
    X, y = load(dataset)
    print(
        f"## {dataset}: {X.shape[0]} samples, {len(np.unique(y))} clusters, params {params}, "
        f"seeds {seeds[0]}-{seeds[-1]}, {n_starts} starts each"
    )
    tasks = [(dataset, params, seed, start) for seed in seeds for start in range(n_starts)]
    if jobs == 1:
        torch.set_num_threads(threads)
        results = [fit_start(*task) for task in tasks]
    else:
        with worker_pool(jobs, threads) as pool:
            results = list(pool.map(fit_start, *zip(*tasks)))
    n_neighbors = results[0]["n_neighbors"]
    graph_agrees = None if n_neighbors is None else neighbors_agree(X, y, n_neighbors)
    summaries = {
        seed: summarise(y, [r for r in results if r["seed"] == seed], n_starts, graph_agrees)
        for seed in seeds
    }
    print(f"{'seed':>4s}  {'entropy of each start (nats)':{9 * n_starts}s}  accuracy of each start")
    for seed, summary in summaries.items():
        entropies = " ".join(f"{e:8.5f}" for e in summary["entropies"])
        accuracies = " ".join(f"{a:.4f}" for a in summary["accuracies"])
        print(f"{seed:4d}  {entropies:{9 * n_starts}s}  {accuracies}")
    print("\nstarts   kept by n_pretrain (the most even of the first n)")
    for n in range(1, n_starts + 1):
        kept = np.array([summary["kept_of_first"][n - 1] for summary in summaries.values()])
        print(f"{n:6d}   {kept.mean():.4f} ± {kept.std():.4f}, min {kept.min():.4f}")
    oracle = np.array([summary["oracle"] for summary in summaries.values()])
    print(f"oracle   {oracle.mean():.4f} ± {oracle.std():.4f}, min {oracle.min():.4f}"
          f"  (best of {n_starts} by the labels)")

    def mean(key: str) -> float:
        return float(np.nanmean([summary[key] for summary in summaries.values()]))

    print(
        f"\nagreement of the {n_starts} starts (means over seeds): every start puts "
        f"{100 * mean('agreed'):.1f} % of rows in the same cluster; the kept fit's accuracy "
        f"there is {mean('accuracy_agreed'):.4f}, on the other rows {mean('accuracy_disagreed'):.4f}; "
        f"{100 * mean('shared_errors'):.0f} % of the kept fit's errors are made by every start; "
        f"a majority vote of the starts scores {mean('vote'):.4f}"
    )
    if graph_agrees is not None:
        print(
            f"the input's {n_neighbors} nearest neighbours are mostly of a row's own class for "
            f"{100 * graph_agrees.mean():.1f} % of rows, and for "
            f"{100 * mean('graph_consistent_errors'):.0f} % of the rows the kept fit gets wrong"
        )
    by_class = np.mean([summary["errors_by_class"] for summary in summaries.values()], axis=0)
    print(
        "the kept fit's errors by class (mean per seed): "
        + ", ".join(f"{c}: {n:.1f}" for c, n in zip(np.unique(y), by_class))
    )
    epochs = [n for summary in summaries.values() for n in summary["n_iter"]]
    print(f"one start's fit: {mean('seconds'):.1f} s, {np.mean(epochs):.1f} joint epochs on average")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=DATASETS)
    parser.add_argument("--params", default='{"weight_concentration_prior": 1000.0}',
                        help="VariationalGMMPrior parameters as JSON")
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds, from 0")
    parser.add_argument("--starts", type=int, default=5, help="starts per seed")
    parser.add_argument("--jobs", type=int, default=1, help="processes fitting starts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()
    if args.starts < 1 or args.seeds < 1 or args.jobs < 1 or args.threads < 1:
        parser.error("--seeds, --starts, --jobs and --threads must be at least 1")
    params = json.loads(args.params)
    report(args.dataset, params, list(range(args.seeds)), args.starts, args.jobs, args.threads)


if __name__ == "__main__":
    main()
