"""The main job, ``sklearn-vae demo``, end to end with tiny training budgets."""

import csv

import pytest

from sklearn_vae import _demo
from sklearn_vae.cli import main

TINY = _demo.DemoSettings(
    vae_epochs=1,
    vade_params={
        "pretrain_epochs": 1,
        "max_iter": 1,
        "n_init": 1,
        "hidden_layer_sizes": (16,),
    },
    kmeans_n_init=1,
    compared_covariance_types=("spherical",),
)
MODELS = {
    "KMeans",
    "GaussianMixture",
    "EMGaussianMixture",
    "VAETransformer + EMGaussianMixture",
    "VariationalGMMPrior",
}
FIGURES = {
    "posterior_map.png",
    "latent_space.png",
    "generated_digits.png",
    "training_curves.png",
}


def test_demo_prints_both_tables_and_writes_results_and_figures(
    tmp_path, monkeypatch, capsys
):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(_demo, "QUICK", TINY)
    assert main(["demo", "--quick", "--out", str(tmp_path / "out")]) == 0
    output = capsys.readouterr().out
    assert "Clustering the digits" in output
    assert "EMGaussianMixture vs scikit-learn's GaussianMixture" in output
    assert all(model in output for model in MODELS)
    with (tmp_path / "out" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["model"] for row in rows} == MODELS
    accuracies = [float(row["accuracy"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert all(0.0 < accuracy <= 1.0 for accuracy in accuracies)
    assert FIGURES <= {path.name for path in (tmp_path / "out").iterdir()}


def test_mixtures_from_the_same_start_reach_the_same_bound():
    from sklearn.datasets import load_iris

    (comparison,) = _demo.compare_mixtures(load_iris().data, ["diag"])
    assert comparison.covariance_type == "diag"
    assert comparison.ours_lower_bound == pytest.approx(
        comparison.sklearn_lower_bound, rel=1e-6
    )
    assert comparison.sklearn_seconds > 0 and comparison.ours_seconds > 0


def test_format_table_aligns_text_left_and_numbers_right():
    table = _demo.format_table(
        ["model", "accuracy"], [["KMeans", 0.5], ["VariationalGMMPrior", 0.9312]]
    )
    assert table.splitlines() == [
        "model                accuracy",
        "-------------------  --------",
        "KMeans                  0.500",
        "VariationalGMMPrior     0.931",
    ]
