"""Bad input to every public method of every estimator, as one table per stage.

Each row of :data:`FIT_CASES` and :data:`INFERENCE_CASES` is a kind of input
and the outcome every estimator owes it (with the exceptions an estimator
makes listed in the row): a correct result, or scikit-learn's usual
exception with a message that names the problem. Whatever the outcome, no
output is NaN, no error comes out of torch, and a fit that fails leaves the
estimator as it was: unfitted, or with its fitted attributes, network weights
and predictions unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp
from _estimators import (
    ESTIMATORS,
    FIT_METHODS,
    INFERENCE_METHODS,
    LOG_DENSITY_METHODS,
    assert_same_attributes,
    assert_same_predictions,
    call,
    clean_data,
    fitted_attributes,
    inference_input,
    is_fitted,
    methods,
    predictions,
)
from sklearn.exceptions import NotFittedError

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # numpy's own notes on the data near the float limits.
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

NEURAL = ("VAETransformer", "VariationalGMMPrior")


# ---------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Accepted:
    """A correct result: every output finite, float outputs in float64.

    ``warning``: the result comes with a UserWarning matching this.
    """

    warning: str | None = None


@dataclass(frozen=True)
class Raises:
    """scikit-learn's usual exception, its message matching ``match``."""

    error: type[Exception]
    match: str


@dataclass(frozen=True)
class FiniteOrRefused:
    """Rows too far from the model: a finite result (log-densities may be
    -inf, their value in the dtype), or a ValueError that says so."""

    match: str = r"rows of X gave non-finite results.*scale of the training data"


ACCEPTED = Accepted()
Outcome = Accepted | Raises | FiniteOrRefused


@dataclass(frozen=True)
class Case:
    """One kind of input: how to make it from valid rows, and its outcome."""

    name: str
    make: Callable[[np.ndarray], Any]
    outcome: Outcome
    exceptions: dict[str, Outcome] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    #: The outcome of partial_fit on an already fitted estimator, where it
    #: differs: later batches may be smaller than the first must be.
    later_batches: Outcome | None = None

    def outcome_for(self, estimator: str) -> Outcome:
        return self.exceptions.get(estimator, self.outcome)


def with_value(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def make(X: np.ndarray) -> np.ndarray:
        X = X.copy()
        X[0, 0] = value
        return X

    return make


NAN = Raises(ValueError, r"(?s)contains NaN.*imputer|contains NaN")
INFINITE = Raises(ValueError, r"contains infinity or a value too large")
NOT_2D = Raises(ValueError, r"(?s)Expected 2D array, got 1D array.*Reshape your data")
THREE_D = Raises(ValueError, r"Found array with dim 3, while dim <= 2 is required")
NOT_NUMERIC = Raises(ValueError, r"could not convert string to float")
COMPLEX = Raises(ValueError, r"Complex data not supported")
SPARSE = Raises(TypeError, r"dense data is required\. Use '\.toarray\(\)'")
OVERFLOW = Raises(ValueError, r"squares overflow float\d\d.*Standardise the features")
TOO_LARGE_FOR_EM = Raises(
    ValueError,
    r"(ill-defined empirical covariance|non-finite log-likelihood).*[Ss]cale the input data",
)
FAR_FROM_UNIT_SCALE = Accepted(warning=r"far from unit scale.*StandardScaler")

# ---------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------
FIT_CASES = [
    Case("NaN", with_value(np.nan), NAN),
    Case("+inf", with_value(np.inf), INFINITE),
    Case("-inf", with_value(-np.inf), INFINITE),
    Case("empty array", lambda X: X[:0], Raises(ValueError, r"0 sample\(s\).*minimum of \d is required")),
    Case("no features", lambda X: X[:, :0], Raises(ValueError, r"0 feature\(s\).*minimum of 1 is required")),
    Case("1-D array", lambda X: X[:, 0], NOT_2D),
    Case("3-D array", lambda X: X[:, :, None], THREE_D),
    Case(
        "single sample",
        lambda X: X[:1],
        Raises(ValueError, r"1 sample\(s\).*minimum of 2 is required|n_samples >= max\(2"),
        exceptions={"VAETransformer": ACCEPTED},
        later_batches=ACCEPTED,
    ),
    Case(
        "n_samples < n_components",
        lambda X: X[:3],
        Raises(ValueError, r"Expected n_samples >= (max\(2, )?n_components.*more samples"),
        exceptions={"VAETransformer": ACCEPTED},  # its n_components is the latent width
        params={"n_components": 4},
        later_batches=ACCEPTED,
    ),
    Case("object dtype of floats", lambda X: X.astype(object), ACCEPTED),
    Case("numeric strings", lambda X: X.astype(str), ACCEPTED),
    Case("non-numeric strings", lambda X: np.full(X.shape, "a"), NOT_NUMERIC),
    Case("complex dtype", lambda X: X.astype(complex), COMPLEX),
    Case("bool dtype", lambda X: X > 0, ACCEPTED),
    Case("int dtype", lambda X: np.rint(2 * X).astype(np.int64), ACCEPTED),
    Case("float16 dtype", lambda X: X.astype(np.float16), ACCEPTED),
    Case("sparse CSR matrix", sp.csr_matrix, SPARSE),
    Case("sparse COO array", sp.coo_array, SPARSE),
    Case("list of lists", lambda X: X.tolist(), ACCEPTED),
    Case(
        "scaled by 1e200",
        lambda X: X * 1e200,
        TOO_LARGE_FOR_EM,
        exceptions=dict.fromkeys(NEURAL, OVERFLOW),
    ),
    Case(
        "float32 scaled by 1e30",
        lambda X: (X * 1e30).astype(np.float32),
        TOO_LARGE_FOR_EM,
        exceptions=dict.fromkeys(NEURAL, OVERFLOW),
    ),
    Case(
        "scaled by 1e-200",
        lambda X: X * 1e-200,
        ACCEPTED,
        exceptions=dict.fromkeys(NEURAL, FAR_FROM_UNIT_SCALE),
    ),
]

INFERENCE_CASES = [
    Case("NaN", with_value(np.nan), NAN),
    Case("+inf", with_value(np.inf), INFINITE),
    Case("-inf", with_value(-np.inf), INFINITE),
    Case("empty array", lambda X: X[:0], Raises(ValueError, r"0 sample\(s\).*minimum of 1 is required")),
    Case("1-D array", lambda X: X[0], NOT_2D),
    Case("3-D array", lambda X: X[:, :, None], THREE_D),
    Case("single sample", lambda X: X[:1], ACCEPTED),
    Case("object dtype of floats", lambda X: X.astype(object), ACCEPTED),
    Case("numeric strings", lambda X: X.astype(str), ACCEPTED),
    Case("non-numeric strings", lambda X: np.full(X.shape, "a"), NOT_NUMERIC),
    Case("complex dtype", lambda X: X.astype(complex), COMPLEX),
    Case("bool dtype", lambda X: X > 0, ACCEPTED),
    Case("int dtype", lambda X: np.rint(2 * X).astype(np.int64), ACCEPTED),
    Case("float16 dtype", lambda X: X.astype(np.float16), ACCEPTED),
    Case("sparse CSR matrix", sp.csr_matrix, SPARSE),
    Case("list of lists", lambda X: X.tolist(), ACCEPTED),
    Case(
        "wrong n_features",
        lambda X: X[:, :-1],
        Raises(ValueError, r"X has \d+ features, but \w+(\.inverse_transform)? is expecting"),
    ),
    Case("scaled by 1e200", lambda X: X * 1e200, FiniteOrRefused()),
    Case("float32 scaled by 1e30", lambda X: (X * 1e30).astype(np.float32), FiniteOrRefused()),
    Case("scaled by 1e-200", lambda X: X * 1e-200, ACCEPTED),
]


def _table(cases: list[Case], method_names: tuple[str, ...]) -> list[Any]:
    return [
        pytest.param(case, name, method, id=f"{name}.{method}-{case.name}")
        for name, make in ESTIMATORS.items()
        for method in methods(make(), method_names)
        for case in cases
    ]


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------
def _assert_finite(output: Any, *, log_density: bool = False, float64: bool = True) -> None:
    if output is None or not isinstance(output, (np.ndarray, float, tuple)):
        return
    for part in output if isinstance(output, tuple) else (output,):
        part = np.asarray(part)
        if log_density:
            assert not np.any(np.isnan(part)) and not np.any(part == np.inf), part
        else:
            assert np.all(np.isfinite(part)), part
        if float64 and np.issubdtype(part.dtype, np.floating):
            assert part.dtype == np.float64, part.dtype


def _assert_raises(outcome: Raises, function: Callable[[], Any]) -> None:
    with pytest.raises(outcome.error, match=outcome.match) as caught:
        function()
    # The error comes from our validation or scikit-learn's, never out of torch.
    assert "/torch/" not in str(caught.traceback[-1].path), caught.traceback[-1]


def _run_accepted(outcome: Accepted, function: Callable[[], Any]) -> Any:
    if outcome.warning is None:
        return function()
    with pytest.warns(UserWarning, match=outcome.warning):
        return function()


@pytest.mark.parametrize("case, name, method", _table(FIT_CASES, FIT_METHODS))
def test_fit_input(case, name, method, fitted_copy):
    X = clean_data()
    data = case.make(X)
    outcome = case.outcome_for(name)
    estimator = ESTIMATORS[name](**case.params)
    if isinstance(outcome, Accepted):
        output = _run_accepted(outcome, lambda: call(estimator, method, data))
        _assert_finite(output)
        for method_name, value in predictions(estimator, data).items():
            _assert_finite(value, log_density=method_name in LOG_DENSITY_METHODS)
        return

    _assert_raises(outcome, lambda: call(estimator, method, data))
    assert not is_fitted(estimator), sorted(vars(estimator))

    refitted = fitted_copy(name).set_params(**case.params)
    if method == "partial_fit" and case.later_batches is not None:
        _run_accepted(case.later_batches, lambda: call(refitted, method, data))
        for method_name, value in predictions(refitted, X).items():
            _assert_finite(value, log_density=method_name in LOG_DENSITY_METHODS)
        return
    attributes, before = fitted_attributes(refitted), predictions(refitted, X)
    _assert_raises(outcome, lambda: call(refitted, method, data))
    assert_same_attributes(attributes, refitted)
    assert_same_predictions(before, refitted, X)


@pytest.mark.parametrize("case, name, method", _table(INFERENCE_CASES, INFERENCE_METHODS))
def test_inference_input(case, name, method, fitted_estimators):
    estimator = fitted_estimators[name]
    data = case.make(inference_input(estimator, method, clean_data()))
    outcome = case.outcome_for(name)
    log_density = method in LOG_DENSITY_METHODS
    if isinstance(outcome, Raises):
        _assert_raises(outcome, lambda: call(estimator, method, data))
    elif isinstance(outcome, Accepted):
        _assert_finite(_run_accepted(outcome, lambda: call(estimator, method, data)))
    else:
        try:
            output = call(estimator, method, data)
        except ValueError as error:
            assert re.search(outcome.match, str(error), re.DOTALL), error
        else:
            _assert_finite(output, log_density=log_density, float64=False)


# ---------------------------------------------------------------------------
# Data frames: names recorded at fit, checked at predict time
# ---------------------------------------------------------------------------
FRAMES = {
    "pandas": lambda X, columns: pd.DataFrame(X, columns=columns),
    "polars": lambda X, columns: pl.DataFrame(X, schema=columns),
}
FRAME_CASES = [
    # (name, columns at predict time, column order, outcome)
    ("same columns", ["a", "b", "c"], [0, 1, 2], ACCEPTED),
    (
        "renamed column",
        ["a", "b", "z"],
        [0, 1, 2],
        Raises(ValueError, r"(?s)feature names should match.*unseen at fit time:\n- z"),
    ),
    (
        "reordered columns",
        ["c", "a", "b"],
        [2, 0, 1],
        Raises(ValueError, r"(?s)feature names should match.*must be in the same order"),
    ),
]


@pytest.mark.parametrize("library", FRAMES)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_frames_record_names_and_refuse_renamed_or_reordered_columns(name, library):
    X = clean_data()
    frame = FRAMES[library]
    estimator = ESTIMATORS[name]().fit(frame(X, ["a", "b", "c"]))
    assert list(estimator.feature_names_in_) == ["a", "b", "c"]
    expected = predictions(estimator, X)
    for method in methods(estimator, INFERENCE_METHODS):
        if method == "inverse_transform":
            continue  # takes codes, not named features
        for case, columns, order, outcome in FRAME_CASES:
            data = frame(X[:, order], columns)
            if isinstance(outcome, Raises):
                _assert_raises(outcome, lambda: call(estimator, method, data))
            else:
                np.testing.assert_array_equal(
                    call(estimator, method, data), expected[method], err_msg=case
                )
        with pytest.warns(UserWarning, match="does not have valid feature names"):
            call(estimator, method, X)


def test_frame_with_mixed_column_dtypes_is_converted_to_float64():
    X = clean_data()
    frame = pd.DataFrame(
        {"a": X[:, 0], "b": np.rint(2 * X[:, 1]).astype(int), "c": X[:, 2] > 0}
    )
    for make in ESTIMATORS.values():
        estimator = make().fit(frame)
        _assert_finite(estimator.score_samples(frame), log_density=True)


# ---------------------------------------------------------------------------
# sample() and unfitted estimators
# ---------------------------------------------------------------------------
SAMPLE_CASES = [
    (0, Raises(ValueError, r"n_samples.*(int >= 1|positive integer)")),
    (-3, Raises(ValueError, r"n_samples.*(int >= 1|positive integer)")),
    (1.5, Raises(ValueError, r"n_samples.*(int >= 1|positive integer)")),
    (1, ACCEPTED),
    (np.int64(3), ACCEPTED),
    (True, ACCEPTED),  # a bool is an int, as everywhere in Python
]


@pytest.mark.parametrize("n_samples, outcome", SAMPLE_CASES, ids=repr)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_sample_counts(name, n_samples, outcome, fitted_estimators):
    estimator = fitted_estimators[name]
    if isinstance(outcome, Raises):
        _assert_raises(outcome, lambda: estimator.sample(n_samples))
        return
    output = estimator.sample(n_samples)
    samples = output[0] if isinstance(output, tuple) else output
    assert samples.shape == (int(n_samples), estimator.n_features_in_)
    _assert_finite(output)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_unfitted_estimators_say_to_call_fit(name):
    estimator = ESTIMATORS[name]()
    X = clean_data()
    calls = {method: (lambda m=method: call(estimator, m, X)) for method in methods(estimator, INFERENCE_METHODS)}
    calls["sample"] = lambda: estimator.sample(2)
    for method, function in calls.items():
        with pytest.raises(NotFittedError, match=r"not fitted yet\. Call 'fit'"):
            function()

