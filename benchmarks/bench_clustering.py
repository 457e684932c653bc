"""Clustering quality of VariationalGMMPrior against classic pipelines and peers.

Runs every method on the same data in one process, over several seeds, and
prints for each data set a table of Hungarian-matched accuracy, NMI and ARI
(mean and standard deviation over seeds, and the worst seed's accuracy), the
mean fit time (wall clock, and CPU time of this process, which a busy machine
inflates less), and each method's accuracy as a ratio of the best baseline's::

    python benchmarks/bench_clustering.py              # all data sets, 5 seeds
    python benchmarks/bench_clustering.py --quick      # digits only, 2 seeds
    python benchmarks/bench_clustering.py --seeds 10 --datasets digits wine
    python benchmarks/bench_clustering.py --peer-seeds 1 --peers "ClustPy VaDE"
    python benchmarks/bench_clustering.py --datasets iris sheared2 classes5 blobs3 \
        blobs8 --seeds 10 --peers --methods defaults "latent_dim=10, n_neighbors=15"

Data: scikit-learn's digits (X / 16), wine and iris (standardised), and 50-D
``make_blobs`` (standardised); on request, four standardised generated sets
with 2 to 8 features (``FEW_FEATURES``). The number of clusters is the number
of classes. ``--methods`` runs only some of our rows.
Torch runs on one thread per process unless ``--threads`` says otherwise.

Peers, each run only where it imports (``pip install -c constraints.txt
clustpy umap-learn``; a missing one is skipped with the reason):

* ``umap-learn`` (10 components) + GaussianMixture;
* ClustPy's VaDE, DEC and IDEC with their own defaults (autoencoder
  d-500-500-2000-10, 100 pretraining and 150 clustering epochs, batch 256);
  the reconstruction loss is ClustPy's default BCE on the digits and the
  squared error on standardised data. Their ``labels_`` are reported. On
  the digits, on one CPU thread, a DEC fit took about 80 s, an IDEC fit
  150 s and a VaDE fit 25 minutes, so ``--peer-seeds`` can run the peers on
  fewer seeds than the rest (their rows then say so) and ``--peers`` can
  choose among them.

ClustPy imports torchvision, and the only torchvision wheels this machine's
package index holds are CUDA builds whose compiled operators cannot load beside
the CPU build of torch (``operator torchvision::nms does not exist``).
ClustPy's tabular methods use none of those operators, so
:func:`_import_clustpy` declares the two operator schemas that torchvision's
import registers fake kernels for, and torchvision's pure-Python parts then
import.

``--held-out`` adds, for our defaults, the accuracy of ``predict`` on 20 % of
the rows held out of the fit (stratified), beside the accuracy of the fit on
the other 80 %.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import (
    load_digits,
    load_iris,
    load_wine,
    make_blobs,
    make_classification,
)
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import train_test_split
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_vae import VAETransformer, VariationalGMMPrior
from sklearn_vae.metrics import clustering_accuracy

#: A method takes (n_clusters, n_features, seed) and returns an object with
#: fit_predict.
MethodFactory = Callable[[int, int, int], object]


def _sheared_blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(450, n_features=2, centers=3, random_state=170)
    return X @ np.array([[0.6, -0.6], [-0.4, 0.8]]), y


#: Data with few features, where ``latent_dim='auto'`` and ``n_neighbors='auto'``
#: differ from a 10-D latent space with the neighbour graph (the VaDE user
#: guide's "Data with few features" table): anisotropic clusters in 2-D, four
#: classes in 5 features, and blobs in 3 and 8.
FEW_FEATURES: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "sheared2": _sheared_blobs,
    "classes5": lambda: make_classification(
        500, n_features=5, n_informative=4, n_redundant=0, n_classes=4,
        n_clusters_per_class=1, class_sep=1.5, random_state=0,
    ),
    "blobs3": lambda: make_blobs(400, n_features=3, centers=4, cluster_std=2.0, random_state=0),
    "blobs8": lambda: make_blobs(600, n_features=8, centers=5, cluster_std=3.0, random_state=1),
}


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the benchmark's version of a data set: features and classes."""
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return X / 16.0, y
    if name == "blobs50":
        X, y = make_blobs(2000, n_features=50, centers=8, cluster_std=4.0, random_state=0)
        return StandardScaler().fit_transform(X), y
    if name in FEW_FEATURES:
        X, y = FEW_FEATURES[name]()
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
        VAETransformer(n_components=10, random_state=seed),
        GaussianMixture(k, random_state=seed),
    )


def _umap_gmm(k: int, n_features: int, seed: int) -> object:
    import umap

    return make_pipeline(
        umap.UMAP(n_components=min(10, n_features), random_state=seed, n_jobs=1),
        GaussianMixture(k, random_state=seed),
    )


def _import_clustpy() -> Any:
    """Import ``clustpy.deep``, past torchvision's missing compiled operators."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        library = torch.library.Library("torchvision", "DEF")
        for name in ("nms", "qnms"):
            library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _import_clustpy.library = library  # the schemas live as long as it does
        sys.modules.pop("torchvision", None)
        for module in [name for name in sys.modules if name.startswith("torchvision.")]:
            sys.modules.pop(module)
    import clustpy.deep

    return clustpy.deep


class _ClustPy:
    """A ClustPy deep clustering method with its defaults, as fit_predict."""

    def __init__(self, name: str, k: int, seed: int) -> None:
        self.name, self.k, self.seed = name, k, seed

    def fit_predict(self, X: np.ndarray) -> np.ndarray:
        deep = _import_clustpy()
        params: dict[str, Any] = {"n_clusters": self.k, "random_state": self.seed, "device": "cpu"}
        if X.min() < 0 or X.max() > 1:  # BCE needs [0, 1]; standardised data get MSE
            loss = torch.nn.MSELoss(reduction="sum") if self.name == "VaDE" else None
            params["ssl_loss_fn"] = loss or deep.mean_squared_error
        with contextlib.redirect_stdout(io.StringIO()):
            model = getattr(deep, self.name)(**params).fit(X.astype(np.float32))
        return model.labels_


def _peer_reason(module: str) -> str | None:
    """Why a peer cannot run here, or None."""
    try:
        _import_clustpy() if module == "clustpy" else importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - any failure means: skip, say why
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return None


BASELINES: dict[str, MethodFactory] = {
    "KMeans": lambda k, n_features, seed: KMeans(k, n_init=10, random_state=seed),
    "GaussianMixture raw": _gmm,
    "PCA(10)+GaussianMixture": _pca_gmm,
    "VAETransformer(10)+GaussianMixture": _vae_codes_gmm,
}

PEERS: dict[str, tuple[str, MethodFactory]] = {
    "umap-learn(10)+GaussianMixture": ("umap", _umap_gmm),
    "ClustPy VaDE": ("clustpy", lambda k, n_features, seed: _ClustPy("VaDE", k, seed)),
    "ClustPy DEC": ("clustpy", lambda k, n_features, seed: _ClustPy("DEC", k, seed)),
    "ClustPy IDEC": ("clustpy", lambda k, n_features, seed: _ClustPy("IDEC", k, seed)),
}

OURS: dict[str, MethodFactory] = {
    "VariationalGMMPrior (defaults)": lambda k, n_features, seed: VariationalGMMPrior(
        k, random_state=seed
    ),
    # The initial mixture chosen by likelihood, as before init_selection
    # (the defaults choose the most even of the n_init fits).
    "VariationalGMMPrior (init_selection='map')": lambda k, n_features, seed: (
        VariationalGMMPrior(k, init_selection="map", random_state=seed)
    ),
    "VariationalGMMPrior (wcp=1e3)": lambda k, n_features, seed: VariationalGMMPrior(
        k, weight_concentration_prior=1e3, random_state=seed
    ),
    # The same fit with its two starts on two threads: the same clustering,
    # bit for bit, in about half the wall-clock time.
    "VariationalGMMPrior (wcp=1e3, n_jobs=2)": lambda k, n_features, seed: VariationalGMMPrior(
        k, weight_concentration_prior=1e3, n_jobs=2, random_state=seed
    ),
    # One pretraining under the balanced prior, as before n_pretrain (whose
    # 'auto' runs two there and keeps the more even start).
    "VariationalGMMPrior (wcp=1e3, n_pretrain=1)": lambda k, n_features, seed: (
        VariationalGMMPrior(
            k, weight_concentration_prior=1e3, n_pretrain=1, random_state=seed
        )
    ),
    "VariationalGMMPrior (n_neighbors=None)": lambda k, n_features, seed: VariationalGMMPrior(
        k, n_neighbors=None, random_state=seed
    ),
    # Plain VaDE with 'diag' always, beside 'auto' (which picks 'full' on the
    # digits and iris, with enough rows per component, and 'diag' on wine).
    "VariationalGMMPrior (n_neighbors=None, 'diag')": lambda k, n_features, seed: (
        VariationalGMMPrior(k, n_neighbors=None, covariance_type="diag", random_state=seed)
    ),
    "VariationalGMMPrior (covariance 'full')": lambda k, n_features, seed: VariationalGMMPrior(
        k, covariance_type="full", random_state=seed
    ),
    # A 10-D latent space and the graph whatever the data: the defaults on
    # data with more than 10 features, set by hand on data with fewer.
    "VariationalGMMPrior (latent_dim=10, n_neighbors=15)": lambda k, n_features, seed: (
        VariationalGMMPrior(k, latent_dim=10, n_neighbors=15, random_state=seed)
    ),
    # The earlier defaults: relu networks, 10 latent dimensions and a graph of
    # 15 neighbours whatever the data (the defaults now take tanh, and on
    # data with at most 10 features as many latent dimensions as features
    # and no graph). Joint training stops by the current rule.
    "VariationalGMMPrior (relu, latent_dim=10, n_neighbors=15)": lambda k, n_features, seed: (
        VariationalGMMPrior(
            k, activation="relu", latent_dim=10, n_neighbors=15, random_state=seed
        )
    ),
}


def _variant(method: str) -> str:
    """The text in the parentheses of one of OURS' names: 'defaults', ..."""
    return method[method.index("(") + 1 : -1]


def evaluate(factory: MethodFactory, X: np.ndarray, y: np.ndarray, seeds: list[int]) -> dict:
    """Fit the method once per seed; return per-seed scores and times."""
    k = len(np.unique(y))
    scores: dict[str, list[float]] = {"acc": [], "nmi": [], "ari": [], "time": [], "cpu": []}
    threads = torch.get_num_threads()
    for seed in seeds:
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            labels = factory(k, X.shape[1], seed).fit_predict(X)
        finally:
            # A fit may leave torch on other threads: umap-learn's numba
            # shares OpenMP with torch and, after a fit with n_jobs=1, sets
            # it back to every core, which then sped up and inflated the CPU
            # time of every torch row after it. Each fit runs as asked.
            torch.set_num_threads(threads)
        scores["time"].append(time.perf_counter() - started)
        scores["cpu"].append(time.process_time() - cpu_started)
        scores["acc"].append(clustering_accuracy(y, labels))
        scores["nmi"].append(normalized_mutual_info_score(y, labels))
        scores["ari"].append(adjusted_rand_score(y, labels))
    return scores


def held_out(X: np.ndarray, y: np.ndarray, seeds: list[int]) -> dict:
    """Accuracy of our defaults on the 80 % they were fitted on and the 20 % held out."""
    k = len(np.unique(y))
    scores: dict[str, list[float]] = {"train": [], "test": []}
    for seed in seeds:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.2, random_state=seed, stratify=y
        )
        model = OURS["VariationalGMMPrior (defaults)"](k, X.shape[1], seed).fit(X_train)
        scores["train"].append(clustering_accuracy(y_train, model.labels_))
        scores["test"].append(clustering_accuracy(y_test, model.predict(X_test)))
    return scores


def report(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    seeds: list[int],
    with_held_out: bool,
    peers: list[str],
    n_peer_seeds: int,
    ours: dict[str, MethodFactory] | None = None,
) -> None:
    """Run every method on one data set and print its table.

    ``ours`` are the VariationalGMMPrior rows to run (default all of OURS).
    """
    print(f"\n## {name}: {X.shape[0]} samples, {X.shape[1]} features, "
          f"{len(np.unique(y))} classes, seeds {seeds}", flush=True)
    results, skipped = {}, {}
    for method, factory in BASELINES.items():
        results[method] = evaluate(factory, X, y, seeds)
    for method in peers:
        module, factory = PEERS[method]
        reason = _peer_reason(module)
        if reason is None:
            results[method] = evaluate(factory, X, y, seeds[:n_peer_seeds])
        else:
            skipped[method] = reason
    for method, factory in (OURS if ours is None else ours).items():
        results[method] = evaluate(factory, X, y, seeds)
    best_baseline = max(np.mean(results[m]["acc"]) for m in BASELINES)
    width = max(len(method) for method in [*results, *skipped, "method"])
    header = (
        f"{'method':{width}s} {'accuracy':>15s} {'min':>6s} {'NMI':>15s} {'ARI':>15s} "
        f"{'fit s':>7s} {'cpu s':>7s} {'acc/best baseline':>18s}"
    )
    print(header)
    print("-" * len(header))
    for method, scores in results.items():
        cells = " ".join(
            f"{np.mean(scores[m]):7.3f} ± {np.std(scores[m]):5.3f}"
            + (f" {np.min(scores[m]):6.3f}" if m == "acc" else "")
            for m in ("acc", "nmi", "ari")
        )
        ratio = np.mean(scores["acc"]) / best_baseline
        n_scored = len(scores["acc"])
        note = f"  ({n_scored} of {len(seeds)} seeds)" if n_scored < len(seeds) else ""
        print(
            f"{method:{width}s} {cells} {np.mean(scores['time']):7.1f} "
            f"{np.mean(scores['cpu']):7.1f} {ratio:18.3f}{note}"
        )
    for method, reason in skipped.items():
        print(f"{method:{width}s} skipped: {reason}")
    if with_held_out:
        scores = held_out(X, y, seeds)
        gap = np.mean(scores["train"]) - np.mean(scores["test"])
        print(
            f"held-out (defaults): fit on 80 % {np.mean(scores['train']):.3f} "
            f"± {np.std(scores['train']):.3f}, predict on 20 % {np.mean(scores['test']):.3f} "
            f"± {np.std(scores['test']):.3f}, gap {gap:+.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, 2 seeds")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5)")
    parser.add_argument(
        "--datasets", nargs="+", default=None,
        choices=["digits", "wine", "iris", "blobs50", *FEW_FEATURES],
        help="data sets (default digits, wine, iris, blobs50; the few-feature sets "
        f"{', '.join(FEW_FEATURES)} only on request)",
    )
    parser.add_argument(
        "--methods", nargs="+", default=None, choices=[_variant(name) for name in OURS],
        metavar="VARIANT",
        help="which VariationalGMMPrior rows to run, by the text in their parentheses "
        "(default all; the baselines always run)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--held-out", action="store_true", help="also fit our defaults on 80 %% and predict 20 %%"
    )
    parser.add_argument(
        "--peers", nargs="*", default=list(PEERS), choices=list(PEERS), metavar="PEER",
        help=f"peers to run (default all: {', '.join(PEERS)})",
    )
    parser.add_argument(
        "--peer-seeds", type=int, default=None,
        help="run the peers on the first N seeds only (a ClustPy fit takes minutes)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_seeds = args.seeds or (2 if args.quick else 5)
    datasets = args.datasets or (["digits"] if args.quick else ["digits", "wine", "iris", "blobs50"])
    warnings.simplefilter("ignore", ConvergenceWarning)
    ours = {
        name: factory for name, factory in OURS.items()
        if args.methods is None or _variant(name) in args.methods
    }
    for name in datasets:
        report(
            name, *load(name), list(range(n_seeds)), args.held_out, args.peers,
            args.peer_seeds or n_seeds, ours,
        )


if __name__ == "__main__":
    main()
