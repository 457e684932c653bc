"""The Gaussian mixture behind a fitted estimator, as the plots need it.

EMGaussianMixture's mixture lives in the data space; VariationalGMMPrior's lives
in its latent space (its ``means_`` and ``covariances_`` describe the prior over
the codes). Both follow scikit-learn's layout of ``weights_``, ``means_`` and
``covariances_`` for their ``covariance_type``, which this module turns into
one full covariance matrix per component.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import softmax
from scipy.stats import multivariate_normal
from sklearn.utils.validation import check_is_fitted

__all__ = ["axis_labels", "full_covariances", "mixture_points", "responsibilities"]


def full_covariances(estimator: Any) -> np.ndarray:
    """Expand a fitted mixture's ``covariances_`` to one full matrix per component.

    Parameters
    ----------
    estimator : fitted mixture estimator
        With ``means_``, ``covariances_`` and ``covariance_type`` (or the
        fitted ``covariance_type_`` where it has one) in
        {'full', 'tied', 'diag', 'spherical'}, laid out as in scikit-learn's
        GaussianMixture.

    Returns
    -------
    ndarray of shape (n_components, n_dims, n_dims)
    """
    check_is_fitted(estimator, ["means_", "covariances_"])
    n_components, n_dims = np.shape(estimator.means_)
    covariances = np.asarray(estimator.covariances_, dtype=float)
    # A fitted type (VariationalGMMPrior's 'auto' resolved) wins over the parameter.
    covariance_type = getattr(estimator, "covariance_type_", estimator.covariance_type)
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return np.broadcast_to(covariances, (n_components, n_dims, n_dims)).copy()
    if covariance_type == "diag":
        return covariances[:, :, np.newaxis] * np.eye(n_dims)
    if covariance_type == "spherical":
        return covariances[:, np.newaxis, np.newaxis] * np.eye(n_dims)
    raise ValueError(f"Unknown covariance_type {covariance_type!r}.")


def mixture_points(estimator: Any, X: Any) -> np.ndarray:
    """Map data into the space the estimator's mixture lives in.

    Parameters
    ----------
    estimator : fitted mixture estimator
        An estimator with an encoder (``encoder_``) carries its mixture in the
        latent space, so ``X`` is encoded with ``transform``; otherwise the
        mixture lives in the data space and ``X`` is returned as an array.
    X : array-like of shape (n_samples, n_features)

    Returns
    -------
    ndarray of shape (n_samples, n_dims)
    """
    if hasattr(estimator, "encoder_"):
        return np.asarray(estimator.transform(X), dtype=float)
    return np.asarray(X, dtype=float)


def responsibilities(estimator: Any, points: np.ndarray) -> np.ndarray:
    """Posterior probability of each component at points of the mixture's space.

    ``r_k(z) = pi_k N(z | mu_k, Sigma_k) / sum_j pi_j N(z | mu_j, Sigma_j)``,
    computed in log space so that far-away points do not underflow.

    Parameters
    ----------
    estimator : fitted mixture estimator
    points : ndarray of shape (n_points, n_dims)

    Returns
    -------
    ndarray of shape (n_points, n_components)
        Each row sums to one.
    """
    covariances = full_covariances(estimator)
    # A component with zero weight has log-weight -inf and responsibility 0.
    with np.errstate(divide="ignore"):
        log_weights = np.log(estimator.weights_)
    log_joint = (
        np.column_stack(
            [
                multivariate_normal(mean, covariance).logpdf(points)
                for mean, covariance in zip(estimator.means_, covariances)
            ]
        )
        + log_weights
    )
    return softmax(log_joint.reshape(len(points), -1), axis=1)


def axis_labels(estimator: Any, dimensions: tuple[int, int]) -> list[str]:
    """Name the two plotted dimensions of a mixture's space.

    Parameters
    ----------
    estimator : fitted mixture estimator
    dimensions : tuple of two int
        Indices of the plotted dimensions.

    Returns
    -------
    list of two str
        ``feature_names_in_`` where the estimator saw named columns, otherwise
        "feature i" in a data space and "latent dimension i" in a latent space
        (counting from 1).
    """
    if hasattr(estimator, "encoder_"):
        return [f"latent dimension {index + 1}" for index in dimensions]
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        return [str(names[index]) for index in dimensions]
    return [f"feature {index + 1}" for index in dimensions]
