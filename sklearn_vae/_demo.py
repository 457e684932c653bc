"""The main job: every estimator of the package on scikit-learn's digits.

``sklearn-vae demo`` clusters the 8 x 8 digits with VariationalGMMPrior,
VAETransformer (+ EMGaussianMixture on its codes) and EMGaussianMixture, scores
them against the classes beside the classic baselines (KMeans,
scikit-learn's GaussianMixture), compares EMGaussianMixture with
GaussianMixture started from the same parameters, and writes the figures.
"""

from __future__ import annotations

import csv
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.mixture import GaussianMixture
from tqdm.auto import tqdm

from ._vade import VariationalGMMPrior
from ._vae import VAETransformer
from .metrics import clustering_accuracy
from .mixture import EMGaussianMixture

__all__ = ["ClusteringScore", "MixtureComparison", "format_table", "run_demo"]

N_CLUSTERS = 10


@dataclass(frozen=True)
class DemoSettings:
    """How long the models train: the full run and ``--quick``."""

    vae_epochs: int
    #: Passed to VariationalGMMPrior; the full run keeps its robust defaults.
    vade_params: dict[str, Any]
    kmeans_n_init: int
    compared_covariance_types: tuple[str, ...]


FULL = DemoSettings(
    vae_epochs=60,
    vade_params={},
    kmeans_n_init=10,
    compared_covariance_types=("full", "tied", "diag", "spherical"),
)
QUICK = DemoSettings(
    vae_epochs=8,
    vade_params={"pretrain_epochs": 8, "max_iter": 4},
    kmeans_n_init=3,
    compared_covariance_types=("full", "diag"),
)


@dataclass(frozen=True)
class ClusteringScore:
    """How well one model's clusters recover the digit classes.

    Attributes
    ----------
    model : str
        What was fitted.
    accuracy : float
        :func:`~sklearn_vae.metrics.clustering_accuracy`.
    nmi : float
        Normalised mutual information.
    ari : float
        Adjusted Rand index.
    fit_seconds : float
        Wall time of the fit.
    """

    model: str
    accuracy: float
    nmi: float
    ari: float
    fit_seconds: float


@dataclass(frozen=True)
class MixtureComparison:
    """EMGaussianMixture beside GaussianMixture, from the same initial parameters.

    Attributes
    ----------
    covariance_type : str
    sklearn_seconds, ours_seconds : float
        Fit wall times.
    sklearn_lower_bound, ours_lower_bound : float
        Final lower bound on the log-likelihood per sample, in nats.
    sklearn_n_iter, ours_n_iter : int
        EM iterations to convergence.
    """

    covariance_type: str
    sklearn_seconds: float
    ours_seconds: float
    sklearn_lower_bound: float
    ours_lower_bound: float
    sklearn_n_iter: int
    ours_n_iter: int


def _timed(fit: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fit()
    return result, time.perf_counter() - started


def _clustering_score(
    model: str, labels_true: np.ndarray, labels_pred: np.ndarray, seconds: float
) -> ClusteringScore:
    return ClusteringScore(
        model=model,
        accuracy=clustering_accuracy(labels_true, labels_pred),
        nmi=normalized_mutual_info_score(labels_true, labels_pred),
        ari=adjusted_rand_score(labels_true, labels_pred),
        fit_seconds=seconds,
    )


def compare_mixtures(
    X: np.ndarray,
    covariance_types: Sequence[str] = ("full", "tied", "diag", "spherical"),
    random_state: int = 0,
) -> list[MixtureComparison]:
    """Fit EMGaussianMixture and GaussianMixture from the same start.

    Both start from the parameters one EM iteration of GaussianMixture reaches
    from its k-means initialisation, so that they follow the same path and
    should end at the same lower bound; only their speed may differ.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    covariance_types : sequence of str, default=("full", "tied", "diag", "spherical")
        One comparison per covariance type.
    random_state : int, default=0

    Returns
    -------
    list of MixtureComparison
    """
    comparisons = []
    for covariance_type in tqdm(
        covariance_types, desc="EM vs GaussianMixture", unit="fit"
    ):
        with warnings.catch_warnings():
            # One iteration cannot converge; it only sets the shared start.
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = GaussianMixture(
                N_CLUSTERS,
                covariance_type=covariance_type,
                max_iter=1,
                random_state=random_state,
            ).fit(X)
        shared = {
            "n_components": N_CLUSTERS,
            "covariance_type": covariance_type,
            "weights_init": start.weights_,
            "means_init": start.means_,
            "precisions_init": start.precisions_,
            "max_iter": 500,
        }
        theirs, their_seconds = _timed(lambda: GaussianMixture(**shared).fit(X))
        ours, our_seconds = _timed(lambda: EMGaussianMixture(**shared).fit(X))
        comparisons.append(
            MixtureComparison(
                covariance_type=covariance_type,
                sklearn_seconds=their_seconds,
                ours_seconds=our_seconds,
                sklearn_lower_bound=float(theirs.lower_bound_),
                ours_lower_bound=float(ours.lower_bound_),
                sklearn_n_iter=int(theirs.n_iter_),
                ours_n_iter=int(ours.n_iter_),
            )
        )
    return comparisons


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Lay out rows as an aligned plain-text table.

    Parameters
    ----------
    headers : sequence of str
    rows : sequence of sequence
        Floats are written with 3 decimals (4 significant digits beyond
        1000), everything else with ``str``.

    Returns
    -------
    str
        The header, a rule and one line per row; text columns left-aligned,
        numbers right-aligned.
    """

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"
        return str(value)

    cells = [[cell(value) for value in row] for row in rows]
    widths = [
        max(len(header), *(len(row[column]) for row in cells))
        for column, header in enumerate(headers)
    ]
    numeric = [
        all(isinstance(row[column], (int, float)) for row in rows)
        for column in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


def _write_csv(path: Path, scores: Sequence[ClusteringScore]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=[f.name for f in fields(ClusteringScore)]
        )
        writer.writeheader()
        writer.writerows(asdict(score) for score in scores)


@dataclass
class _FittedModels:
    """What the figures are drawn from."""

    vae: VAETransformer
    vae_codes: np.ndarray
    codes_mixture: EMGaussianMixture
    vade: VariationalGMMPrior


def _write_figures(
    models: _FittedModels, X: np.ndarray, y: np.ndarray, out_dir: Path
) -> list[Path]:
    from matplotlib.figure import Figure

    from .plotting import (
        GeneratedSamplesDisplay,
        LatentSpaceDisplay,
        MixtureEllipsesDisplay,
        PosteriorMapDisplay,
        TrainingCurvesDisplay,
    )

    written = []

    def save(figure: Figure, name: str) -> None:
        path = out_dir / name
        figure.savefig(path, dpi=110, bbox_inches="tight")
        written.append(path)

    figure = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    PosteriorMapDisplay.from_estimator(models.codes_mixture, models.vae_codes, ax=left)
    left.set(
        title="Posterior of EMGaussianMixture over the VAE's 2-D codes",
        xlabel="VAE latent dimension 1",
        ylabel="VAE latent dimension 2",
    )
    MixtureEllipsesDisplay.from_estimator(
        models.codes_mixture, models.vae_codes, ax=right
    )
    right.set(
        title="Its components at 1, 2 and 3 sigma",
        xlabel="VAE latent dimension 1",
        ylabel="VAE latent dimension 2",
    )
    save(figure, "posterior_map.png")

    figure = Figure(figsize=(12, 5), layout="constrained")
    left, right = figure.subplots(1, 2)
    LatentSpaceDisplay.from_estimator(models.vae, X, y, ax=left)
    left.set_title("VAETransformer: 2-D codes, coloured by digit")
    LatentSpaceDisplay.from_estimator(models.vade, X, y, ax=right)
    right.set_title("VariationalGMMPrior: latent means (PCA), coloured by digit")
    save(figure, "latent_space.png")

    figure = Figure(figsize=(7, 7.5), layout="constrained")
    display = GeneratedSamplesDisplay.from_estimator(
        models.vade, n_samples=10, ax=figure.subplots()
    )
    display.ax_.set_title("VariationalGMMPrior: digits generated from each cluster")
    save(figure, "generated_digits.png")

    figure = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = figure.subplots(1, 2)
    TrainingCurvesDisplay.from_estimator(models.vae, ax=left)
    left.set_title("VAETransformer training")
    TrainingCurvesDisplay.from_estimator(models.vade, ax=right)
    right.set_title("VariationalGMMPrior training")
    save(figure, "training_curves.png")
    return written


def _cluster_digits(
    X: np.ndarray,
    y: np.ndarray,
    settings: DemoSettings,
    device: str,
    random_state: int,
) -> tuple[list[ClusteringScore], list[MixtureComparison], _FittedModels]:
    """Fit every model, printing each step; return the scores and the models."""
    n_steps = 5
    scores: list[ClusteringScore] = []

    def fit_and_score(name: str, estimator: BaseEstimator) -> BaseEstimator:
        labels, seconds = _timed(lambda: estimator.fit_predict(X))
        scores.append(_clustering_score(name, y, labels, seconds))
        return estimator

    print(f"[1/{n_steps}] Baselines: KMeans and scikit-learn's GaussianMixture")
    fit_and_score(
        "KMeans",
        KMeans(N_CLUSTERS, n_init=settings.kmeans_n_init, random_state=random_state),
    )
    fit_and_score(
        "GaussianMixture", GaussianMixture(N_CLUSTERS, random_state=random_state)
    )
    fit_and_score(
        "EMGaussianMixture",
        EMGaussianMixture(N_CLUSTERS, random_state=random_state, device=device),
    )

    print(
        f"[2/{n_steps}] EMGaussianMixture against GaussianMixture from the same start"
    )
    comparisons = compare_mixtures(
        X.astype(np.float64), settings.compared_covariance_types, random_state
    )

    print(f"[3/{n_steps}] VAETransformer (2-D codes) + EMGaussianMixture on the codes")
    vae = VAETransformer(
        n_components=2,
        likelihood="bernoulli",
        max_iter=settings.vae_epochs,
        random_state=random_state,
        device=device,
        verbose=1,
    )
    vae_codes, vae_seconds = _timed(lambda: vae.fit_transform(X))
    codes_mixture = EMGaussianMixture(
        N_CLUSTERS, random_state=random_state, device=device
    )
    labels, mixture_seconds = _timed(lambda: codes_mixture.fit_predict(vae_codes))
    scores.append(
        _clustering_score(
            "VAETransformer + EMGaussianMixture",
            y,
            labels,
            vae_seconds + mixture_seconds,
        )
    )

    print(
        f"[4/{n_steps}] VariationalGMMPrior "
        "(VaDE with neighbour-preserving pretraining)"
    )
    vade = fit_and_score(
        "VariationalGMMPrior",
        VariationalGMMPrior(
            N_CLUSTERS,
            likelihood="bernoulli",
            random_state=random_state,
            device=device,
            verbose=1,
            **settings.vade_params,
        ),
    )
    print(f"[5/{n_steps}] Figures")
    scores.sort(key=lambda score: score.accuracy, reverse=True)
    return scores, comparisons, _FittedModels(vae, vae_codes, codes_mixture, vade)


def _print_report(
    scores: Sequence[ClusteringScore], comparisons: Sequence[MixtureComparison]
) -> None:
    print("\nClustering the digits (10 clusters, scored against the 10 classes)\n")
    print(
        format_table(
            ["model", "accuracy", "NMI", "ARI", "fit time (s)"],
            [[s.model, s.accuracy, s.nmi, s.ari, s.fit_seconds] for s in scores],
        )
    )
    print(
        "\nEMGaussianMixture vs scikit-learn's GaussianMixture on the digits from the "
        "same initial parameters\n(a small data set: see benchmarks/bench_gmm.py for "
        "large ones)\n"
    )
    print(
        format_table(
            [
                "covariance",
                "sklearn (s)",
                "ours (s)",
                "speed-up",
                "sklearn lower bound",
                "ours lower bound",
                "iterations (sklearn/ours)",
            ],
            [
                [
                    c.covariance_type,
                    c.sklearn_seconds,
                    c.ours_seconds,
                    c.sklearn_seconds / c.ours_seconds,
                    c.sklearn_lower_bound,
                    c.ours_lower_bound,
                    f"{c.sklearn_n_iter}/{c.ours_n_iter}",
                ]
                for c in comparisons
            ],
        )
    )


def run_demo(
    out_dir: str | Path = "sklearn-vae-demo",
    *,
    quick: bool = False,
    device: str = "cpu",
    random_state: int = 0,
) -> tuple[list[ClusteringScore], list[MixtureComparison]]:
    """Run the demo: fit every model on digits, print the tables, write figures.

    Parameters
    ----------
    out_dir : str or path-like, default='sklearn-vae-demo'
        Folder for ``results.csv`` and the figures (PNG); created if needed.
    quick : bool, default=False
        Train the neural estimators for a few epochs only (under 30 s).
    device : str, default='cpu'
        The ``device`` of the torch estimators.
    random_state : int, default=0
        Seeds every model.

    Returns
    -------
    scores : list of ClusteringScore
        The clustering table, best accuracy first.
    comparisons : list of MixtureComparison
        EMGaussianMixture against GaussianMixture, per covariance type.
    """
    settings = QUICK if quick else FULL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    # float32 pixels in [0, 1]: the torch estimators then compute in float32.
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    print(
        f"sklearn-vae demo on scikit-learn's digits: {X.shape[0]} images of "
        f"{X.shape[1]} pixels, {len(np.unique(y))} classes"
        + (" (quick run)" if quick else "")
    )
    with warnings.catch_warnings():
        # The demo trains for a fixed number of epochs on purpose; warnings
        # that they did not converge would only distract from the results.
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores, comparisons, models = _cluster_digits(
            X, y, settings, device, random_state
        )
    _write_csv(out_dir / "results.csv", scores)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        figures: list[Path] = []
        print(
            "  matplotlib is not installed: pip install 'sklearn-vae[plot]' for figures"
        )
    else:
        figures = _write_figures(models, X, y, out_dir)
    _print_report(scores, comparisons)
    print(
        f"\nWrote {out_dir / 'results.csv'}" + "".join(f", {p.name}" for p in figures)
    )
    return scores, comparisons
