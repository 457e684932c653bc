"""scikit-learn's own GaussianMixture tests, run against EMGaussianMixture.

The upstream module ``sklearn/mixture/tests/test_gaussian_mixture.py`` of the
installed scikit-learn is imported and its ``GaussianMixture`` is replaced by
``EMGaussianMixture`` for the duration of each test. Every test that only uses
the public API runs here; the excluded ones are listed with the reason.

The substitute is a subclass named ``GaussianMixture`` that adds nothing: the
upstream tests match messages such as "This GaussianMixture instance is not
fitted yet", which contain the class name.
"""

import numpy as np
import pytest
from sklearn.mixture.tests import test_gaussian_mixture as upstream

from sklearn_vae import EMGaussianMixture


class GaussianMixture(EMGaussianMixture):
    """EMGaussianMixture under scikit-learn's class name."""


EXCLUDED = {
    "test_check_weights": (
        "matches scikit-learn's out-of-range message, which prints the minimum "
        "as 'max value' and the maximum as 'min value'; ours prints them right"
    ),
    "test_suffstat_sk_full": "tests scikit-learn's private M-step function",
    "test_suffstat_sk_tied": "tests scikit-learn's private M-step function",
    "test_suffstat_sk_diag": "tests scikit-learn's private M-step function",
    "test_gaussian_suffstat_sk_spherical": (
        "tests scikit-learn's private M-step function"
    ),
    "test_compute_log_det_cholesky": "tests scikit-learn's private function",
    "test_gaussian_mixture_log_probabilities": (
        "tests scikit-learn's private _estimate_log_gaussian_prob"
    ),
    "test_gaussian_mixture_precisions_init": (
        "calls the private _initialize and _set_parameters methods"
    ),
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": (
        "counts calls of scikit-learn's private _estimate_gaussian_parameters, "
        "which EMGaussianMixture does not use"
    ),
    "test_gaussian_mixture_array_api_compliance": (
        "array API dispatch: EMGaussianMixture computes in torch on `device`"
    ),
    "test_gaussian_mixture_raises_where_array_api_not_implemented": (
        "array API dispatch: EMGaussianMixture computes in torch on `device`"
    ),
}

UPSTREAM_TESTS = sorted(name for name in dir(upstream) if name.startswith("test_"))

globals().update(
    {name: getattr(upstream, name) for name in UPSTREAM_TESTS if name not in EXCLUDED}
)


@pytest.fixture(autouse=True)
def substitute_gaussian_mixture(monkeypatch):
    monkeypatch.setattr(upstream, "GaussianMixture", GaussianMixture)


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def global_dtype(request):
    """scikit-learn's fixture, with float32 always on: we claim it works."""
    return request.param


@pytest.fixture
def global_random_seed():
    """scikit-learn's default global seed."""
    return 42


def test_exclusions_name_upstream_tests():
    """An exclusion that no longer names an upstream test must be removed."""
    assert set(EXCLUDED) <= set(UPSTREAM_TESTS)
