"""The ``sklearn-vae`` command line: fit and apply models, and its one-line errors."""

import subprocess
import sys
from importlib.metadata import entry_points

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from sklearn_vae import EMGaussianMixture
from sklearn_vae.cli import build_parser, main

# Small, fast settings for the neural models.
TINY_VAE = ["--param", "hidden_layer_sizes=(8,)", "--param", "max_iter=2"]
TINY_VADE = [
    "--param",
    "n_components=3",
    "--param",
    "latent_dim=2",
    "--param",
    "hidden_layer_sizes=(8,)",
    "--param",
    "pretrain_epochs=2",
    "--param",
    "max_iter=2",
    "--param",
    "n_init=1",
    "--param",
    "n_neighbors=5",
]


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory):
    frame = load_iris(as_frame=True).data
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    path = tmp_path_factory.mktemp("data") / "iris.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def gmm_model(iris_csv, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "gmm.joblib"
    assert (
        main(
            [
                "fit",
                "gmm",
                "--data",
                str(iris_csv),
                "--param",
                "n_components=3",
                "--param",
                "covariance_type=diag",
                "--param",
                "random_state=0",
                "--out",
                str(path),
            ]
        )
        == 0
    )
    return path


def run_error(argv, capsys):
    """Run a command that must fail; return its one-line message."""
    assert main([str(arg) for arg in argv]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("sklearn-vae: error: ")
    assert captured.err.count("\n") == 1, captured.err
    return captured.err


def test_fit_passes_parsed_parameters_and_keeps_column_names(gmm_model, capsys):
    model = joblib.load(gmm_model)
    assert isinstance(model, EMGaussianMixture)
    assert model.n_components == 3 and model.covariance_type == "diag"
    assert list(model.feature_names_in_)[0] == "sepal_length"


def test_predict_matches_the_estimator(gmm_model, iris_csv, tmp_path, capsys):
    out = tmp_path / "labels.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                str(gmm_model),
                "--data",
                str(iris_csv),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "Wrote 150 rows x 1 columns" in capsys.readouterr().out
    expected = joblib.load(gmm_model).predict(pd.read_csv(iris_csv))
    np.testing.assert_array_equal(pd.read_csv(out)["label"], expected)


def test_predict_proba_writes_parquet(gmm_model, iris_csv, tmp_path):
    out = tmp_path / "proba.parquet"
    main(
        [
            "predict-proba",
            "--model",
            str(gmm_model),
            "--data",
            str(iris_csv),
            "--out",
            str(out),
        ]
    )
    proba = pd.read_parquet(out)
    assert list(proba.columns) == ["probability_0", "probability_1", "probability_2"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_transform_writes_npy(gmm_model, iris_csv, tmp_path):
    out = tmp_path / "codes.npy"
    main(
        [
            "transform",
            "--model",
            str(gmm_model),
            "--data",
            str(iris_csv),
            "--out",
            str(out),
        ]
    )
    assert np.load(out).shape == (150, 3)


def test_columns_are_matched_by_name(gmm_model, iris_csv, tmp_path):
    shuffled = pd.read_csv(iris_csv).iloc[:, ::-1]
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    for data, out in [(iris_csv, "a.npy"), (tmp_path / "shuffled.csv", "b.npy")]:
        main(
            [
                "predict",
                "--model",
                str(gmm_model),
                "--data",
                str(data),
                "--out",
                str(tmp_path / out),
            ]
        )
    np.testing.assert_array_equal(
        np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    )


def test_score_prints_the_mean_and_writes_each_row(
    gmm_model, iris_csv, tmp_path, capsys
):
    out = tmp_path / "scores.csv"
    main(
        ["score", "--model", str(gmm_model), "--data", str(iris_csv), "--out", str(out)]
    )
    model = joblib.load(gmm_model)
    data = pd.read_csv(iris_csv)
    assert f"Mean score per sample: {model.score(data):.6g}" in capsys.readouterr().out
    np.testing.assert_allclose(pd.read_csv(out)["score"], model.score_samples(data))


def test_score_without_out_only_prints(gmm_model, iris_csv, capsys):
    assert main(["score", "--model", str(gmm_model), "--data", str(iris_csv)]) == 0
    assert "Wrote" not in capsys.readouterr().out


def test_sample_adds_the_component_to_tables(gmm_model, tmp_path):
    out = tmp_path / "samples.csv"
    main(["sample", "--model", str(gmm_model), "--n-samples", "7", "--out", str(out)])
    samples = pd.read_csv(out)
    assert samples.shape == (7, 5)
    assert list(samples.columns)[-1] == "component"
    assert set(samples["component"]) <= {0, 1, 2}
    main(
        [
            "sample",
            "--model",
            str(gmm_model),
            "--n-samples",
            "7",
            "--out",
            str(tmp_path / "samples.npy"),
        ]
    )
    assert np.load(tmp_path / "samples.npy").shape == (7, 4)


def test_vae_round_trip_on_npy(tmp_path):
    X = np.random.default_rng(0).random((40, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    model = tmp_path / "vae.joblib"
    assert (
        main(
            [
                "fit",
                "vae",
                "--data",
                str(tmp_path / "x.npy"),
                *TINY_VAE,
                "--out",
                str(model),
            ]
        )
        == 0
    )
    main(
        [
            "transform",
            "--model",
            str(model),
            "--data",
            str(tmp_path / "x.npy"),
            "--out",
            str(tmp_path / "codes.csv"),
        ]
    )
    codes = pd.read_csv(tmp_path / "codes.csv")
    assert codes.shape == (40, 2)
    assert list(codes.columns) == list(joblib.load(model).get_feature_names_out())
    main(
        [
            "sample",
            "--model",
            str(model),
            "--n-samples",
            "3",
            "--out",
            str(tmp_path / "samples.csv"),
        ]
    )
    assert list(pd.read_csv(tmp_path / "samples.csv").columns) == [
        f"x{i}" for i in range(5)
    ]


def test_vade_samples_a_chosen_component(tmp_path, iris_csv):
    model = tmp_path / "vade.joblib"
    assert (
        main(["fit", "vade", "--data", str(iris_csv), *TINY_VADE, "--out", str(model)])
        == 0
    )
    main(
        [
            "sample",
            "--model",
            str(model),
            "--n-samples",
            "4",
            "--component",
            "2",
            "--out",
            str(tmp_path / "samples.csv"),
        ]
    )
    samples = pd.read_csv(tmp_path / "samples.csv")
    assert samples["component"].tolist() == [2, 2, 2, 2]


def test_component_needs_a_model_that_can_choose(gmm_model, tmp_path, capsys):
    message = run_error(
        [
            "sample",
            "--model",
            gmm_model,
            "--component",
            "1",
            "--out",
            tmp_path / "s.csv",
        ],
        capsys,
    )
    assert "EMGaussianMixture cannot" in message


def test_missing_data_file(tmp_path, capsys):
    message = run_error(
        ["fit", "gmm", "--data", tmp_path / "nope.csv", "--out", tmp_path / "m.joblib"],
        capsys,
    )
    assert "nope.csv: no such file" in message


def test_missing_model_file(tmp_path, iris_csv, capsys):
    message = run_error(
        [
            "predict",
            "--model",
            tmp_path / "nope.joblib",
            "--data",
            iris_csv,
            "--out",
            tmp_path / "o.csv",
        ],
        capsys,
    )
    assert "no such model file" in message


def test_model_file_that_is_not_a_model(tmp_path, iris_csv, capsys):
    (tmp_path / "junk.joblib").write_text("junk")
    message = run_error(
        [
            "predict",
            "--model",
            tmp_path / "junk.joblib",
            "--data",
            iris_csv,
            "--out",
            tmp_path / "o.csv",
        ],
        capsys,
    )
    assert "cannot be loaded as a model" in message
    joblib.dump({"not": "an estimator"}, tmp_path / "dict.joblib")
    message = run_error(
        [
            "predict",
            "--model",
            tmp_path / "dict.joblib",
            "--data",
            iris_csv,
            "--out",
            tmp_path / "o.csv",
        ],
        capsys,
    )
    assert "does not hold a fitted estimator" in message


def test_non_numeric_column_is_named(tmp_path, capsys):
    pd.DataFrame({"a": [1.0, 2.0], "city": ["Oslo", "Lima"]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    message = run_error(
        ["fit", "gmm", "--data", tmp_path / "d.csv", "--out", tmp_path / "m.joblib"],
        capsys,
    )
    assert "non-numeric column(s) 'city'" in message


def test_missing_values_are_counted(tmp_path, capsys):
    pd.DataFrame({"a": [1.0, np.nan, np.nan], "b": [1.0, 2.0, np.nan]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    message = run_error(
        ["fit", "gmm", "--data", tmp_path / "d.csv", "--out", tmp_path / "m.joblib"],
        capsys,
    )
    assert "2 row(s) have missing values, in column(s) 'a', 'b'" in message


def test_missing_column_is_a_feature_mismatch(gmm_model, iris_csv, tmp_path, capsys):
    pd.read_csv(iris_csv).drop(columns="petal_width").to_csv(
        tmp_path / "d.csv", index=False
    )
    message = run_error(
        [
            "predict",
            "--model",
            gmm_model,
            "--data",
            tmp_path / "d.csv",
            "--out",
            tmp_path / "o.csv",
        ],
        capsys,
    )
    assert "feature mismatch" in message and "'petal_width'" in message


def test_extra_column_is_a_feature_mismatch(gmm_model, iris_csv, tmp_path, capsys):
    pd.read_csv(iris_csv).assign(colour=1.0).to_csv(tmp_path / "d.csv", index=False)
    message = run_error(
        [
            "predict",
            "--model",
            gmm_model,
            "--data",
            tmp_path / "d.csv",
            "--out",
            tmp_path / "o.csv",
        ],
        capsys,
    )
    assert "has the column(s) 'colour' that the model was not fitted on" in message


def test_wrong_column_count_is_a_feature_mismatch(gmm_model, tmp_path, capsys):
    np.save(tmp_path / "d.npy", np.ones((3, 2)))
    message = run_error(
        [
            "predict",
            "--model",
            gmm_model,
            "--data",
            tmp_path / "d.npy",
            "--out",
            tmp_path / "o.csv",
        ],
        capsys,
    )
    assert "has 2 column(s) but the model was fitted on 4 feature(s)" in message


def test_unknown_parameter_lists_the_valid_ones(iris_csv, tmp_path, capsys):
    message = run_error(
        [
            "fit",
            "gmm",
            "--data",
            iris_csv,
            "--param",
            "n_clusters=3",
            "--out",
            tmp_path / "m.joblib",
        ],
        capsys,
    )
    assert "unknown parameter(s) 'n_clusters' for gmm (EMGaussianMixture)" in message
    assert "n_components" in message


def test_invalid_value_is_reported_by_the_estimator(iris_csv, tmp_path, capsys):
    message = run_error(
        [
            "fit",
            "gmm",
            "--data",
            iris_csv,
            "--param",
            "covariance_type=round",
            "--out",
            tmp_path / "m.joblib",
        ],
        capsys,
    )
    assert "covariance_type" in message and "'round'" in message


def test_param_without_equals_sign(iris_csv, tmp_path, capsys):
    message = run_error(
        [
            "fit",
            "gmm",
            "--data",
            iris_csv,
            "--param",
            "n_components",
            "--out",
            tmp_path / "m.joblib",
        ],
        capsys,
    )
    assert "--param expects NAME=VALUE, got 'n_components'" in message


def test_multi_line_estimator_errors_become_one_line(iris_csv, tmp_path, capsys):
    # More components than samples: the estimator's own error.
    pd.read_csv(iris_csv).head(2).to_csv(tmp_path / "d.csv", index=False)
    run_error(
        [
            "fit",
            "gmm",
            "--data",
            tmp_path / "d.csv",
            "--param",
            "n_components=5",
            "--out",
            tmp_path / "m.joblib",
        ],
        capsys,
    )


def test_bare_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: sklearn-vae" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command",
    ["demo", "fit", "transform", "predict", "predict-proba", "score", "sample"],
)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: sklearn-vae {command}" in capsys.readouterr().out


def test_usage_errors_exit_with_status_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "svm", "--data", "x.csv", "--out", "m.joblib"])
    assert exit_info.value.code == 2


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sklearn_vae",
            "fit",
            "gmm",
            "--data",
            "missing.csv",
            "--out",
            "m.joblib",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr == "sklearn-vae: error: missing.csv: no such file.\n"


def test_console_script_points_at_main():
    (script,) = entry_points(group="console_scripts", name="sklearn-vae")
    assert script.load() is main
