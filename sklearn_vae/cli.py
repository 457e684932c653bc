"""The ``sklearn-vae`` command line: the demo, and fit/apply models on data files.

::

    sklearn-vae demo [--out DIR] [--quick]
    sklearn-vae fit {gmm,vae,vade} --data FILE [--param NAME=VALUE ...] --out MODEL
    sklearn-vae {transform,predict,predict-proba} --model MODEL --data FILE --out FILE
    sklearn-vae score --model MODEL --data FILE [--out FILE]
    sklearn-vae sample --model MODEL [--n-samples N] [--component K] --out FILE

Commands that read data take ``--header``/``--no-header`` for CSV files; by
default a first row of numbers is data, and the command says which it assumed.
Models are written and read in sklearn-vae's safe format (``.skvae``, see
``sklearn_vae.save_model``), never as pickles, which run code when loaded.
Every output is written to a temporary file and renamed into place, so a
failure never leaves a partial file.

Bad input (a missing or malformed file, an unknown or invalid parameter, data
that does not match the model), an unwritable output, a training that diverges
or runs out of memory end with a one-line message on stderr and exit status 1,
never a traceback; warnings are printed as one line each. Usage errors exit
with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from . import __version__
from ._io import (
    SUPPORTED_SUFFIXES,
    check_writable,
    csv_has_header,
    format_names,
    read_data,
    write_data,
)
from ._model_file import MODEL_SUFFIX, load_model, save_model
from ._vade import VariationalGMMPrior
from ._vae import VAETransformer
from .mixture import EMGaussianMixture

__all__ = ["CommandLineError", "MODELS", "build_parser", "main"]

#: The estimator behind each ``MODEL`` name of ``sklearn-vae fit``.
MODELS: dict[str, type[BaseEstimator]] = {
    "gmm": EMGaussianMixture,
    "vae": VAETransformer,
    "vade": VariationalGMMPrior,
}

_PROGRAM = "sklearn-vae"
_FILE_TYPES = ", ".join(SUPPORTED_SUFFIXES)


class CommandLineError(ValueError):
    """Bad input to the command line, reported as one line without a traceback."""


def _parse_param(text: str) -> tuple[str, Any]:
    """Split ``name=value`` and read the value as a Python literal.

    A value that is not a literal (``covariance_type=diag``) is kept as a
    string, so that strings need no quotes on the command line.
    """
    name, separator, raw = text.partition("=")
    if not separator or not name.strip():
        raise CommandLineError(f"--param expects NAME=VALUE, got {text!r}.")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return name.strip(), value


def _make_estimator(model: str, params: Sequence[str]) -> BaseEstimator:
    estimator = MODELS[model]()
    valid = estimator.get_params()
    parsed = dict(_parse_param(text) for text in params)
    unknown = sorted(set(parsed) - set(valid))
    if unknown:
        raise CommandLineError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for {model} "
            f"({type(estimator).__name__}); valid parameters: "
            f"{', '.join(sorted(valid))}."
        )
    # The estimator validates the values itself when it is fitted.
    return estimator.set_params(**parsed)


def _load_model(path: str) -> BaseEstimator:
    if not Path(path).is_file():
        raise CommandLineError(f"{path}: no such model file.")
    # load_model refuses pickles and anything else that is not its own format
    # with a one-line ValueError.
    model = load_model(path)
    if not hasattr(model, "n_features_in_"):
        raise CommandLineError(
            f"{path}: does not hold a fitted estimator; create one with "
            f"'{_PROGRAM} fit'."
        )
    return model


def _read(path: str, header: bool | None) -> Any:
    """Read a data file; for a CSV, say how its first row was taken if guessed."""
    if Path(path).suffix.lower() != ".csv":
        return read_data(path)
    if header is None:
        header = csv_has_header(path)
        if header:
            print(
                f"Read the first row of {path} as column names (it is not all "
                "numbers); pass --no-header if it is data."
            )
        else:
            print(
                f"Read {path} as having no header row (its first row is all "
                "numbers, so it is data); pass --header if it holds column names."
            )
    return read_data(path, header=header)


def _check_model_path(path: str) -> None:
    if Path(path).suffix.lower() != MODEL_SUFFIX:
        raise CommandLineError(
            f"--out {path}: model files are written in sklearn-vae's safe format and "
            f"end in {MODEL_SUFFIX} (joblib and pickle files can run code when "
            f"loaded); use e.g. --out {Path(path).with_suffix(MODEL_SUFFIX)}."
        )
    check_writable(path)


def _named_like_model(values: np.ndarray, names: np.ndarray) -> Any:
    # The model was fitted with column names: give it them, so that it does
    # not warn that the data has none.
    try:
        import pandas
    except ImportError:
        return values
    return pandas.DataFrame(values, columns=list(names))


def _matching_data(model: BaseEstimator, data: Any, path: str) -> Any:
    """Check ``data`` against the features the model was fitted on.

    Named columns are matched by name (and put in the model's order); unnamed
    columns, or columns given to a model fitted without names, are matched by
    position and must be as many as the model's features.
    """
    names = getattr(model, "feature_names_in_", None)
    columns = getattr(data, "columns", None)
    if names is not None and columns is not None:
        missing = [name for name in names if name not in set(columns)]
        if missing:
            raise CommandLineError(
                f"feature mismatch: {path} lacks the column(s) "
                f"{format_names(missing)} that the model was fitted on."
            )
        extra = [name for name in columns if name not in set(names)]
        if extra:
            raise CommandLineError(
                f"feature mismatch: {path} has the column(s) {format_names(extra)} "
                "that the model was not fitted on."
            )
        return data[list(names)]
    n_columns = data.shape[1]
    if n_columns != model.n_features_in_:
        raise CommandLineError(
            f"feature mismatch: {path} has {n_columns} column(s) but the model was "
            f"fitted on {model.n_features_in_} feature(s)."
        )
    if names is not None:
        print(
            f"{path} has no column names: its columns are taken, in order, as the "
            f"model's features {format_names(list(names))}."
        )
        return _named_like_model(data, names)
    if columns is not None:
        print(
            f"The model was fitted without column names: the columns of {path} "
            "are taken in order."
        )
        # A model fitted without names takes a plain array (no spurious warning).
        return data.to_numpy()
    return data


def _require_method(model: BaseEstimator, method: str, command: str) -> None:
    if not hasattr(model, method):
        raise CommandLineError(
            f"'{command}' needs a model with {method}(); "
            f"{type(model).__name__} has none."
        )


def _command_demo(args: argparse.Namespace) -> None:
    from ._demo import run_demo

    run_demo(Path(args.out), quick=args.quick, device=args.device)


def _command_fit(args: argparse.Namespace) -> None:
    # Refuse a bad output before a fit that may take long.
    _check_model_path(args.out)
    estimator = _make_estimator(args.model, args.param)
    data = _read(args.data, args.header)
    started = time.perf_counter()
    estimator.fit(data)
    elapsed = time.perf_counter() - started
    save_model(estimator, args.out)
    print(
        f"Fitted {type(estimator).__name__} on {data.shape[0]} samples x "
        f"{data.shape[1]} features in {elapsed:.2f} s; saved to {args.out}"
    )


def _model_and_data(args: argparse.Namespace, method: str) -> tuple[Any, Any]:
    if args.out is not None:
        check_writable(args.out)
    model = _load_model(args.model)
    _require_method(model, method, args.command)
    return model, _matching_data(model, _read(args.data, args.header), args.data)


def _write(path: str, values: np.ndarray, columns: Sequence[str]) -> None:
    write_data(path, values, columns=columns)
    shape = np.shape(values)
    width = shape[1] if len(shape) > 1 else 1
    print(f"Wrote {shape[0]} rows x {width} columns to {path}")


def _command_transform(args: argparse.Namespace) -> None:
    model, data = _model_and_data(args, "transform")
    codes = model.transform(data)
    if hasattr(model, "get_feature_names_out"):
        columns = list(model.get_feature_names_out())
    else:
        columns = [f"component_{k}" for k in range(np.shape(codes)[1])]
    _write(args.out, np.asarray(codes), columns)


def _command_predict(args: argparse.Namespace) -> None:
    model, data = _model_and_data(args, "predict")
    _write(args.out, np.asarray(model.predict(data)), ["label"])


def _command_predict_proba(args: argparse.Namespace) -> None:
    model, data = _model_and_data(args, "predict_proba")
    probabilities = np.asarray(model.predict_proba(data))
    columns = [f"probability_{k}" for k in range(probabilities.shape[1])]
    _write(args.out, probabilities, columns)


def _command_score(args: argparse.Namespace) -> None:
    model, data = _model_and_data(args, "score")
    print(f"Mean score per sample: {model.score(data):.6g}")
    if args.out is not None:
        _require_method(model, "score_samples", args.command)
        _write(args.out, np.asarray(model.score_samples(data)), ["score"])


def _command_sample(args: argparse.Namespace) -> None:
    check_writable(args.out)
    model = _load_model(args.model)
    _require_method(model, "sample", args.command)
    if args.component is None:
        result = model.sample(args.n_samples)
    elif "component" in inspect.signature(model.sample).parameters:
        result = model.sample(args.n_samples, component=args.component)
    else:
        raise CommandLineError(
            f"--component needs a model that samples a chosen component; "
            f"{type(model).__name__} cannot."
        )
    samples, labels = result if isinstance(result, tuple) else (result, None)
    names = getattr(model, "feature_names_in_", None)
    columns = (
        [str(name) for name in names]
        if names is not None
        else [f"x{index}" for index in range(model.n_features_in_)]
    )
    values = np.asarray(samples)
    # A table keeps each sample's component next to it; a .npy file holds only
    # the samples, as the other commands' .npy outputs hold only values.
    if labels is not None and Path(args.out).suffix.lower() != ".npy":
        values = np.column_stack([values, labels])
        columns.append("component")
    _write(args.out, values, columns)


def _add_header_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "whether the first row of a CSV file holds column names (default: "
            "it does unless every field in it is a number); ignored for other files"
        ),
    )


def _add_apply_command(
    subparsers: Any, name: str, help_text: str, *, out_required: bool = True
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.add_argument(
        "--model",
        required=True,
        metavar="FILE",
        help=f"a model file written by 'sklearn-vae fit' ({MODEL_SUFFIX})",
    )
    parser.add_argument(
        "--data", required=True, metavar="FILE", help=f"the input table ({_FILE_TYPES})"
    )
    _add_header_option(parser)
    parser.add_argument(
        "--out",
        required=out_required,
        metavar="FILE",
        help=f"the output file ({_FILE_TYPES}; the ending chooses the format)",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``sklearn-vae`` command.

    Returns
    -------
    argparse.ArgumentParser
        Each subcommand stores its handler as the ``handler`` default.
    """
    parser = argparse.ArgumentParser(
        prog=_PROGRAM,
        description=(
            "Probabilistic deep learning estimators with the scikit-learn API: "
            "EMGaussianMixture (gmm), VAETransformer (vae) and VariationalGMMPrior "
            "(vade). Run 'sklearn-vae demo' to see them on bundled data."
        ),
    )
    parser.add_argument("--version", action="version", version=__version__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = subparsers.add_parser(
        "demo",
        help="cluster scikit-learn's digits with every model and plot the results",
        description=(
            "Fit VariationalGMMPrior, VAETransformer and EMGaussianMixture on "
            "scikit-learn's digits, print clustering accuracy / NMI / ARI against "
            "KMeans and GaussianMixture with fit times, compare EMGaussianMixture "
            "with GaussianMixture, and write the figures."
        ),
    )
    demo.add_argument(
        "--out",
        default="sklearn-vae-demo",
        metavar="DIR",
        help="folder for the figures and results.csv (default: %(default)s)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="a short run (under 30 s) with fewer epochs",
    )
    demo.add_argument(
        "--device",
        default="cpu",
        help="torch device to compute on (default: %(default)s)",
    )
    demo.set_defaults(handler=_command_demo)

    fit = subparsers.add_parser(
        "fit",
        help="fit a model on a data file and save it",
        description=(
            "Fit a model on a data file and save it in sklearn-vae's safe model "
            f"format ({MODEL_SUFFIX}: JSON and arrays with checksums, which cannot "
            "run code when loaded)."
        ),
        epilog=(
            "example: sklearn-vae fit gmm --data train.csv --param n_components=3 "
            f"--param covariance_type=diag --out model{MODEL_SUFFIX}"
        ),
    )
    fit.add_argument(
        "model",
        choices=sorted(MODELS),
        help="gmm: EMGaussianMixture, vae: VAETransformer, vade: VariationalGMMPrior",
    )
    fit.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help=f"the training table ({_FILE_TYPES})",
    )
    _add_header_option(fit)
    fit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=(
            "an estimator parameter; the value is read as a Python literal "
            "(n_components=3, hidden_layer_sizes=(64,32)) or else as a string "
            "(covariance_type=diag). Repeat for several."
        ),
    )
    fit.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help=f"the model file to write (ending in {MODEL_SUFFIX})",
    )
    fit.set_defaults(handler=_command_fit)

    _add_apply_command(
        subparsers, "transform", "write the model's transform of the data"
    ).set_defaults(handler=_command_transform)
    _add_apply_command(
        subparsers, "predict", "write the most likely component of each row"
    ).set_defaults(handler=_command_predict)
    _add_apply_command(
        subparsers, "predict-proba", "write each component's posterior probability"
    ).set_defaults(handler=_command_predict_proba)
    _add_apply_command(
        subparsers,
        "score",
        "print the mean score per sample; --out writes each row's score",
        out_required=False,
    ).set_defaults(handler=_command_score)

    sample = subparsers.add_parser(
        "sample",
        help="write samples drawn from the model",
        description="Write samples drawn from a fitted generative model.",
    )
    sample.add_argument(
        "--model",
        required=True,
        metavar="FILE",
        help=f"a model file written by 'sklearn-vae fit' ({MODEL_SUFFIX})",
    )
    sample.add_argument(
        "--n-samples",
        type=int,
        default=100,
        metavar="N",
        help="how many (default: %(default)s)",
    )
    sample.add_argument(
        "--component",
        type=int,
        default=None,
        metavar="K",
        help="draw every sample from this mixture component (vade models)",
    )
    sample.add_argument(
        "--out", required=True, metavar="FILE", help=f"the output file ({_FILE_TYPES})"
    )
    sample.set_defaults(handler=_command_sample)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _print_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    print(f"{_PROGRAM}: warning: {_one_line(str(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sklearn-vae`` command.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments after the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        The exit status: 0 on success (and for a bare ``sklearn-vae``, which
        prints the help), 1 for bad input or a failed computation (one line on
        stderr), 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        try:
            args.handler(args)
        except KeyboardInterrupt:
            print(f"{_PROGRAM}: interrupted", file=sys.stderr)
            return 130
        # Estimators report bad parameters and data as ValueError (scikit-learn's
        # InvalidParameterError is one), files fail with OSError, a diverging
        # training with FloatingPointError (NonFiniteLossError); anything else is
        # a bug and keeps its traceback.
        except (ValueError, OSError, FloatingPointError) as error:
            message = _one_line(str(error)) or type(error).__name__
            print(f"{_PROGRAM}: error: {message}", file=sys.stderr)
            return 1
        except (MemoryError, torch.cuda.OutOfMemoryError) as error:
            reason = _one_line(str(error)).split(". ")[0] or type(error).__name__
            print(
                f"{_PROGRAM}: error: out of memory ({reason}); try smaller data, "
                "a smaller batch_size or a smaller network.",
                file=sys.stderr,
            )
            return 1
    return 0
