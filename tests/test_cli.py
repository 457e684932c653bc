"""The ``sklearn-vae`` command line: fit and apply models, and its one-line errors."""

import subprocess
import sys
from importlib.metadata import entry_points

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_iris

from sklearn_vae import EMGaussianMixture, load_model, save_model
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


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Small networks run 10-100x slower when threads oversubscribe the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory):
    frame = load_iris(as_frame=True).data
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    path = tmp_path_factory.mktemp("data") / "iris.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def gmm_model(iris_csv, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "gmm.skvae"
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
    model = load_model(gmm_model)
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
    expected = load_model(gmm_model).predict(pd.read_csv(iris_csv))
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
    model = load_model(gmm_model)
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
    model = tmp_path / "vae.skvae"
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
    assert list(codes.columns) == list(load_model(model).get_feature_names_out())
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
    model = tmp_path / "vade.skvae"
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
        ["fit", "gmm", "--data", tmp_path / "nope.csv", "--out", tmp_path / "m.skvae"],
        capsys,
    )
    assert "nope.csv: no such file" in message


def test_missing_model_file(tmp_path, iris_csv, capsys):
    message = run_error(
        [
            "predict",
            "--model",
            tmp_path / "nope.skvae",
            "--data",
            iris_csv,
            "--out",
            tmp_path / "o.csv",
        ],
        capsys,
    )
    assert "no such model file" in message


def test_model_file_that_is_not_a_model(tmp_path, iris_csv, capsys):
    (tmp_path / "junk.skvae").write_text("junk")
    message = run_error(
        [
            "predict",
            "--model",
            tmp_path / "junk.skvae",
            "--data",
            iris_csv,
            "--out",
            tmp_path / "o.csv",
        ],
        capsys,
    )
    assert "not a sklearn-vae model file" in message
    save_model(EMGaussianMixture(), tmp_path / "unfitted.skvae")
    message = run_error(
        [
            "predict",
            "--model",
            tmp_path / "unfitted.skvae",
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
        ["fit", "gmm", "--data", tmp_path / "d.csv", "--out", tmp_path / "m.skvae"],
        capsys,
    )
    assert "non-numeric column(s) 'city'" in message


def test_missing_values_are_counted(tmp_path, capsys):
    pd.DataFrame({"a": [1.0, np.nan, np.nan], "b": [1.0, 2.0, np.nan]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    message = run_error(
        ["fit", "gmm", "--data", tmp_path / "d.csv", "--out", tmp_path / "m.skvae"],
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
            tmp_path / "m.skvae",
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
            tmp_path / "m.skvae",
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
            tmp_path / "m.skvae",
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
            tmp_path / "m.skvae",
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
        main(["fit", "svm", "--data", "x.csv", "--out", "m.skvae"])
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
            "m.skvae",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr == "sklearn-vae: error: missing.csv: no such file.\n"


def test_console_script_points_at_main():
    (script,) = entry_points(group="console_scripts", name="sklearn-vae")
    assert script.load() is main


# -- header rows and row counts ----------------------------------------------------
N_ROWS = 200


@pytest.fixture(scope="module")
def table():
    return np.random.default_rng(0).normal(size=(N_ROWS, 3))


def write_input(kind, table, folder):
    """``table`` as an input file of the given kind; return its path."""
    names = ["a", "b", "c"]
    if kind == "csv-header":
        path = folder / "header.csv"
        pd.DataFrame(table, columns=names).to_csv(path, index=False)
    elif kind == "csv-no-header":
        path = folder / "savetxt.csv"
        np.savetxt(path, table, delimiter=",")
    elif kind == "parquet":
        path = folder / "data.parquet"
        pd.DataFrame(table, columns=names).to_parquet(path)
    else:
        path = folder / "data.npy"
        np.save(path, table)
    return path


def test_headerless_csv_keeps_its_first_row(table, tmp_path, capsys):
    path = write_input("csv-no-header", table, tmp_path)
    model = tmp_path / "m.skvae"
    assert main(["fit", "gmm", "--data", str(path), "--out", str(model)]) == 0
    out = capsys.readouterr().out
    assert f"on {N_ROWS} samples x 3 features" in out
    assert "no header row" in out and "pass --header" in out
    assert not hasattr(load_model(model), "feature_names_in_")


def test_header_is_detected_and_named(table, tmp_path, capsys):
    path = write_input("csv-header", table, tmp_path)
    assert (
        main(["fit", "gmm", "--data", str(path), "--out", str(tmp_path / "m.skvae")])
        == 0
    )
    out = capsys.readouterr().out
    assert f"on {N_ROWS} samples" in out
    assert "first row of" in out and "as column names" in out and "--no-header" in out
    assert list(load_model(tmp_path / "m.skvae").feature_names_in_) == ["a", "b", "c"]


def test_header_options_override_the_guess(tmp_path, capsys):
    # Column names that are numbers (years) look like data: --header says not.
    path = tmp_path / "years.csv"
    path.write_text("2019,2020\n1.0,2.0\n3.0,4.5\n5.0,6.0\n")
    model = tmp_path / "m.skvae"
    main(["fit", "gmm", "--data", str(path), "--header", "--out", str(model)])
    out = capsys.readouterr().out
    assert "on 3 samples" in out and "header row" not in out
    assert list(load_model(model).feature_names_in_) == ["2019", "2020"]
    main(["fit", "gmm", "--data", str(path), "--no-header", "--out", str(model)])
    assert "on 4 samples" in capsys.readouterr().out
    assert not hasattr(load_model(model), "feature_names_in_")


def test_header_options_are_offered_by_every_command_that_reads_data():
    parser = build_parser()
    for command in ["fit gmm", "transform", "predict", "predict-proba", "score"]:
        args = command.split() + ["--data", "x.csv", "--no-header", "--out", "o.csv"]
        if command != "fit gmm":
            args += ["--model", "m.skvae"]
        assert parser.parse_args(args).header is False


@pytest.fixture(scope="module")
def fitted_on(table, tmp_path_factory):
    """Each input kind's file and a mixture fitted on it by the command line."""
    files = {}
    for kind in ["csv-header", "csv-no-header", "parquet", "npy"]:
        folder = tmp_path_factory.mktemp(kind)
        data, model = write_input(kind, table, folder), folder / "m.skvae"
        argv = ["fit", "gmm", "--data", str(data), "--param", "n_components=2"]
        assert main([*argv, "--param", "random_state=0", "--out", str(model)]) == 0
        files[kind] = data, model
    return files


@pytest.mark.parametrize("kind", ["csv-header", "csv-no-header", "parquet", "npy"])
@pytest.mark.parametrize(
    "command, width",
    [("predict", 1), ("predict-proba", 2), ("transform", 2), ("score", 1)],
)
@pytest.mark.parametrize("out_suffix", [".csv", ".parquet", ".npy"])
def test_one_output_row_per_input_row(
    kind, command, width, out_suffix, table, fitted_on, tmp_path, capsys
):
    data, model = fitted_on[kind]
    out = tmp_path / f"out{out_suffix}"
    assert (
        main([command, "--model", str(model), "--data", str(data), "--out", str(out)])
        == 0
    )
    assert f"Wrote {N_ROWS} rows" in capsys.readouterr().out
    if out_suffix == ".npy":
        values = np.load(out)
    elif out_suffix == ".parquet":
        values = pd.read_parquet(out).to_numpy()
    else:
        values = pd.read_csv(out).to_numpy()
    assert values.reshape(N_ROWS, -1).shape == (N_ROWS, width)
    gmm = load_model(model)
    named = hasattr(gmm, "feature_names_in_")
    expected = {
        "predict": gmm.predict,
        "predict-proba": gmm.predict_proba,
        "transform": gmm.transform,
        "score": gmm.score_samples,
    }[command](pd.DataFrame(table, columns=["a", "b", "c"]) if named else table)
    np.testing.assert_allclose(values.reshape(expected.shape), expected)


def test_model_with_names_takes_a_headerless_file_by_position(table, tmp_path, capsys):
    named = write_input("csv-header", table, tmp_path)
    model = tmp_path / "m.skvae"
    main(
        [
            "fit",
            "gmm",
            "--data",
            str(named),
            "--param",
            "random_state=0",
            "--out",
            str(model),
        ]
    )
    bare = write_input("csv-no-header", table, tmp_path)
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--data",
                str(bare),
                "--out",
                str(tmp_path / "p.npy"),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "taken, in order, as the model's features 'a', 'b', 'c'" in captured.out
    assert captured.err == ""  # no warning about missing feature names
    np.testing.assert_array_equal(
        np.load(tmp_path / "p.npy"), load_model(model).predict(pd.read_csv(named))
    )


def test_model_without_names_takes_a_named_file_by_position(table, tmp_path, capsys):
    bare = write_input("npy", table, tmp_path)
    model = tmp_path / "m.skvae"
    main(
        [
            "fit",
            "gmm",
            "--data",
            str(bare),
            "--param",
            "random_state=0",
            "--out",
            str(model),
        ]
    )
    named = write_input("parquet", table[:, ::-1], tmp_path)
    capsys.readouterr()
    main(
        [
            "predict",
            "--model",
            str(model),
            "--data",
            str(named),
            "--out",
            str(tmp_path / "p.npy"),
        ]
    )
    captured = capsys.readouterr()
    assert "fitted without column names" in captured.out and captured.err == ""
    np.testing.assert_array_equal(
        np.load(tmp_path / "p.npy"), load_model(model).predict(table[:, ::-1])
    )


# -- model files ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["model.joblib", "model.pkl", "model"])
def test_fit_refuses_other_model_endings_before_fitting(
    name, iris_csv, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(EMGaussianMixture, "fit", lambda *a: pytest.fail("fitted"))
    message = run_error(
        ["fit", "gmm", "--data", iris_csv, "--out", tmp_path / name], capsys
    )
    assert "end in .skvae" in message and "can run code when loaded" in message
    assert f"--out {tmp_path / 'model.skvae'}" in message
    assert list(tmp_path.iterdir()) == []


def test_pickled_model_is_refused_with_a_way_to_convert(
    gmm_model, iris_csv, tmp_path, capsys
):
    pickled = tmp_path / "old.joblib"
    joblib.dump(load_model(gmm_model), pickled)
    message = run_error(
        [
            "predict",
            "--model",
            pickled,
            "--data",
            iris_csv,
            "--out",
            tmp_path / "o.csv",
        ],
        capsys,
    )
    assert "pickle or joblib file" in message and "run any code" in message
    assert "sklearn_vae.save_model(joblib.load(path)" in message
    assert not (tmp_path / "o.csv").exists()
    save_model(joblib.load(pickled), tmp_path / "new.skvae")
    argv = ["predict", "--model", tmp_path / "new.skvae", "--data", iris_csv]
    assert main([str(arg) for arg in argv] + ["--out", str(tmp_path / "o.csv")]) == 0
