"""scikit-learn's estimator checks over every public estimator.

Each estimator appears once in ``CHECK_INSTANCES`` with small settings so the
checks stay fast; every check it is known to fail is listed in
``EXPECTED_FAILED_CHECKS`` with the reason, and nowhere else.
"""

from sklearn.utils.estimator_checks import (
    check_param_validation,
    parametrize_with_checks,
)
import pytest

from sklearn_vae import EMGaussianMixture, VAETransformer, VariationalGMMPrior

CHECK_INSTANCES = [
    EMGaussianMixture(n_components=2, max_iter=20, random_state=0),
    VAETransformer(hidden_layer_sizes=(8,), max_iter=5, n_importance_samples=5),
    VariationalGMMPrior(
        n_components=3, latent_dim=2, hidden_layer_sizes=(8,), n_neighbors=5,
        pretrain_epochs=1, max_iter=1, n_init=1, batch_size=64, random_state=0,
    ),
]

EXPECTED_FAILED_CHECKS = {
    "EMGaussianMixture": {
        "check_sample_weight_equivalence_on_dense_data": (
            "the k-means initialisation draws its random centres over rows, so "
            "weighted and repeated data start EM from different (often "
            "permuted) components. From the same initial parameters weighted "
            "EM equals EM on repeated rows, as "
            "tests/mixture/test_em_gaussian_mixture.py checks."
        ),
    },
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(
    CHECK_INSTANCES, expected_failed_checks=_expected_failed_checks
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "estimator", CHECK_INSTANCES, ids=lambda est: type(est).__name__
)
def test_param_validation(estimator):
    check_param_validation(type(estimator).__name__, estimator)
