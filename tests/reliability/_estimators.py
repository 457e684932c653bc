"""The estimators the reliability suite runs, with tiny settings, and helpers.

Every test in ``tests/reliability`` iterates over :data:`ESTIMATORS` and picks
the public methods an estimator has with ``hasattr``, so a method added later
(``EMGaussianMixture.partial_fit``) is covered as soon as it exists.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.testing import assert_array_equal

from sklearn_vae import EMGaussianMixture, VAETransformer, VariationalGMMPrior

#: Fast settings: each fit takes well under a second on 30 rows.
ESTIMATORS: dict[str, Callable[..., Any]] = {
    "EMGaussianMixture": lambda **params: EMGaussianMixture(
        **{"n_components": 2, "random_state": 0, **params}
    ),
    "VAETransformer": lambda **params: VAETransformer(
        **{
            "hidden_layer_sizes": (8,),
            "max_iter": 2,
            "n_importance_samples": 8,
            "random_state": 0,
            **params,
        }
    ),
    "VariationalGMMPrior": lambda **params: VariationalGMMPrior(
        **{
            "n_components": 2,
            "latent_dim": 2,
            "hidden_layer_sizes": (8,),
            "n_neighbors": 3,
            "pretrain_epochs": 1,
            "max_iter": 1,
            "n_init": 1,
            "random_state": 0,
            **params,
        }
    ),
}

#: Methods that fit, in the order they are tried.
FIT_METHODS = ("fit", "partial_fit", "fit_predict", "fit_transform")

#: Methods that read a fitted estimator and take rows of X (inverse_transform
#: takes rows of codes instead).
INFERENCE_METHODS = (
    "transform",
    "inverse_transform",
    "predict",
    "predict_proba",
    "score",
    "score_samples",
)

#: Outputs that are log-densities (or bounds on them), in nats.
LOG_DENSITY_METHODS = ("score", "score_samples")


def clean_data(n_samples: int = 30, n_features: int = 3, seed: int = 0) -> np.ndarray:
    """Standard normal rows: valid input for every estimator."""
    return np.random.default_rng(seed).normal(size=(n_samples, n_features))


def methods(estimator: Any, names: tuple[str, ...]) -> list[str]:
    """The methods of ``names`` that ``estimator`` has."""
    return [name for name in names if hasattr(estimator, name)]


def inference_input(estimator: Any, method: str, X: np.ndarray) -> np.ndarray:
    """A valid input of ``method``: X, or its codes for inverse_transform."""
    return estimator.transform(X) if method == "inverse_transform" else X


def call(estimator: Any, method: str, X: Any) -> Any:
    """Call a fitting or inference method on ``X``."""
    return getattr(estimator, method)(X)


def fitted_attributes(estimator: Any) -> dict[str, Any]:
    """Every attribute of ``estimator``, torch modules as copies of their state."""
    state = {}
    for name, value in vars(estimator).items():
        if isinstance(value, torch.nn.Module):
            state[name] = {
                key: tensor.detach().clone() for key, tensor in value.state_dict().items()
            }
        else:
            state[name] = copy.deepcopy(value)
    return state


def assert_same_attributes(before: dict[str, Any], estimator: Any) -> None:
    """The attributes (and network weights) of ``estimator`` are ``before``'s."""
    after = fitted_attributes(estimator)
    assert sorted(after) == sorted(before)
    for name, value in before.items():
        _assert_same(value, after[name], name)


def _assert_same(expected: Any, actual: Any, name: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert torch.equal(expected, actual), name
    elif isinstance(expected, np.ndarray):
        assert_array_equal(actual, expected, err_msg=name)
    elif isinstance(expected, dict):
        assert sorted(expected, key=str) == sorted(actual, key=str), name
        for key in expected:
            _assert_same(expected[key], actual[key], f"{name}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), name
        for index, (left, right) in enumerate(zip(expected, actual)):
            _assert_same(left, right, f"{name}[{index}]")
    elif isinstance(expected, float) and np.isnan(expected):
        assert np.isnan(actual), name
    else:
        assert expected == actual, name


def predictions(estimator: Any, X: np.ndarray) -> dict[str, Any]:
    """What every inference method of ``estimator`` returns on ``X``."""
    return {
        method: call(estimator, method, inference_input(estimator, method, X))
        for method in methods(estimator, INFERENCE_METHODS)
    }


def assert_same_predictions(before: dict[str, Any], estimator: Any, X: np.ndarray) -> None:
    """Every inference method still returns what it returned before."""
    after = predictions(estimator, X)
    for method, value in before.items():
        assert_array_equal(after[method], value, err_msg=method)


def is_fitted(estimator: Any) -> bool:
    """Whether any fitted attribute (a public name ending in ``_``) is set."""
    return any(
        name.endswith("_") and not name.startswith("_") for name in vars(estimator)
    )
