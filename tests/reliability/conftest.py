"""Fixtures of the reliability suite: one thread, and fitted estimators."""

import copy
import warnings

import pytest
import torch
from _estimators import ESTIMATORS, clean_data
from sklearn.exceptions import ConvergenceWarning


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    """The networks are tiny: a second thread only spin-waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def fitted_estimators():
    """Each estimator of the table fitted on :func:`clean_data` (do not modify)."""
    X = clean_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return {name: make().fit(X) for name, make in ESTIMATORS.items()}


@pytest.fixture
def fitted_copy(fitted_estimators):
    """A function returning a private deep copy of a fitted estimator."""
    return lambda name: copy.deepcopy(fitted_estimators[name])
