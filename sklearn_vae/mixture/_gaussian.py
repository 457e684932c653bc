"""EMGaussianMixture: a Gaussian mixture fitted by EM in torch.

The math per covariance type lives in small pure functions named after it:
statistics of a chunk (``_scatter_*``), the M-step from summed statistics
(``_covariances_*``), precision Cholesky factors, and log-densities built as a
function of a chunk (``_log_prob_*``). All components are handled at once by
matrix products; there is no Python loop over components.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.utils import check_array
from sklearn.utils._param_validation import StrOptions

from .._backend import to_numpy, to_tensor
from ._base import BaseEMMixture, ChunkWorkspace, WeightedLogProb, workspace_rows
from ._statistics import ACCUMULATION_DTYPE, SufficientStatistics

__all__ = ["EMGaussianMixture"]

_ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have "
    "ill-defined empirical covariance (for instance caused by singleton "
    "or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)


class GaussianParameters(NamedTuple):
    """Parameters of a Gaussian mixture, as float64 tensors.

    Shapes of ``covariances`` and ``precisions_cholesky`` depend on the
    covariance type as for scikit-learn's GaussianMixture.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    precisions_cholesky: torch.Tensor


# ---------------------------------------------------------------------- #
# Checks of user-provided initial parameters (scikit-learn's messages)
# ---------------------------------------------------------------------- #
def _check_shape(array: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if array.shape != shape:
        raise ValueError(
            f"The parameter '{name}' should have the shape of {shape}, "
            f"but got {array.shape}"
        )


def _check_weights(weights: Any, n_components: int) -> np.ndarray:
    weights = check_array(weights, dtype=[np.float64, np.float32], ensure_2d=False)
    _check_shape(weights, (n_components,), "weights")
    if np.any(weights < 0.0) or np.any(weights > 1.0):
        raise ValueError(
            "The parameter 'weights' should be in the range [0, 1], but got "
            f"max value {np.max(weights):.5f}, min value {np.min(weights):.5f}"
        )
    atol = 1e-6 if weights.dtype == np.float32 else 1e-8
    if not np.isclose(np.sum(weights), 1.0, rtol=0.0, atol=atol):
        raise ValueError(
            "The parameter 'weights' should be normalized, but got "
            f"sum(weights) = {np.sum(weights):.5f}"
        )
    return weights


def _check_means(means: Any, n_components: int, n_features: int) -> np.ndarray:
    means = check_array(means, dtype=[np.float64, np.float32], ensure_2d=False)
    _check_shape(means, (n_components, n_features), "means")
    return means


def _check_precisions(
    precisions: Any, covariance_type: str, n_components: int, n_features: int
) -> np.ndarray:
    precisions = check_array(
        precisions,
        dtype=[np.float64, np.float32],
        ensure_2d=False,
        allow_nd=covariance_type == "full",
    )
    shape = {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]
    _check_shape(precisions, shape, f"{covariance_type} precision")
    if covariance_type in ("full", "tied"):
        symmetric = np.allclose(precisions, np.swapaxes(precisions, -1, -2))
        if not (symmetric and np.all(np.linalg.eigvalsh(precisions) > 0.0)):
            raise ValueError(
                f"'{covariance_type} precision' should be symmetric, positive-definite"
            )
    elif np.any(precisions <= 0.0):
        raise ValueError(f"'{covariance_type} precision' should be positive")
    return precisions


# ---------------------------------------------------------------------- #
# Chunk statistics: the second moments each covariance type needs
# ---------------------------------------------------------------------- #
#: The workspace buffer of shape (rows, n_components * n_features) that the
#: full E-step fills with whitened residuals and the full M-step, once those
#: are reduced, with responsibility-weighted rows.
_COMPONENT_ROWS = "rows by component features"


#: The share of the dense products' arithmetic below which the 'full' E- and
#: M-steps gather each component's rows instead (see _rows_by_component).
#: The gathers, index arithmetic and host read of the batch size cost about as
#: much as a fifth of the dense product on a 4,096-row chunk; a quarter leaves
#: a clear saving where the gather is taken.
_GATHERED_MAX_SHARE = 0.25


class _ComponentRows(NamedTuple):
    """The (row, component) pairs of a chunk, grouped into a padded batch.

    Slot ``c * largest + j`` of the (k * largest)-slot batch holds the j-th
    row paired with component ``c``; slots past a component's last row are
    padding and read row 0. ``wide`` lists the components paired with so
    many rows that they are computed densely instead; they have no slots in
    use.
    """

    component: torch.Tensor
    row: torch.Tensor
    slot: torch.Tensor
    source_row: torch.Tensor
    largest: int
    wide: torch.Tensor


def _rows_by_component(pairs: torch.Tensor) -> _ComponentRows | None:
    """Group the non-zero entries of a (rows, k) ``pairs`` by component, or None.

    With well-separated components each row matters to one or two components
    only, and the dense products of the 'full' E- and M-steps spend most of
    their ``n k d^2`` multiply-adds on pairs that contribute nothing. Gathered
    into a batch of shape (k, m, d), ``m`` the largest number of rows paired
    with one component, the same work is ``k m d^2``, about ``n d^2`` when
    components are balanced. A component paired with more than
    ``_GATHERED_MAX_SHARE`` of the rows (one spanning two clusters, say) is
    left out of the batch as "wide", for the caller to compute densely.

    Returns None, for the dense products, where the wide components alone
    are more than ``_GATHERED_MAX_SHARE`` of all, and off the CPU, where
    reading ``m`` back to size the batch would stall the device once per
    chunk.
    """
    if pairs.device.type != "cpu":
        return None
    n_samples, n_components = pairs.shape
    paired = pairs.T != 0
    counts = paired.sum(dim=1)
    is_wide = counts > _GATHERED_MAX_SHARE * n_samples
    wide = is_wide.nonzero().squeeze(1)
    if len(wide) > _GATHERED_MAX_SHARE * n_components:
        return None
    if len(wide):
        paired[wide] = False
        counts[wide] = 0
    # Component-major order: each component's rows are contiguous.
    component, row = paired.nonzero(as_tuple=True)
    largest = int(counts.max())
    # Entry e is the (e - first entry of its component)-th row of its slot.
    first_entry = counts.cumsum(0) - counts
    slot = torch.arange(len(row)) + component * largest - first_entry[component]
    # Padding reads row 0: gathers of rows, not scatters, fill the batch.
    source_row = row.new_zeros(n_components * largest)
    source_row[slot] = row
    return _ComponentRows(component, row, slot, source_row, largest, wide)


def _scatter_full(X, weighted_resp, workspace=None, reference=None):
    """``sum_i v_ik (x_i - c_k)(x_i - c_k)^T`` for every k, shape (k, d, d).

    ``reference`` holds the points ``c_k`` (k, d), zero when None. Where most
    responsibilities are zero, the gathered product of
    :func:`_scatter_full_by_component` gives the same sums for less work.
    """
    scatter = _scatter_full_by_component(X, weighted_resp, reference)
    if scatter is not None:
        return scatter
    return _scatter_full_dense(X, weighted_resp, workspace, reference)


def _scatter_full_dense(X, weighted_resp, workspace=None, reference=None):
    """:func:`_scatter_full` over every (row, component) pair.

    Without a reference, one (d, n) @ (n, k*d) product; with one, the rows
    centred on each ``c_k`` and scaled by ``sqrt(v_ik)``, then one batched
    (d, n) @ (n, d) product of that tensor with itself.
    """
    n_samples, n_features = X.shape
    n_components = weighted_resp.shape[1]
    buffer = workspace_rows(
        workspace, _COMPONENT_ROWS, n_samples, n_components * n_features, X
    )
    if reference is None:
        torch.mul(
            weighted_resp[:, :, None],
            X[:, None, :],
            out=buffer.view(n_samples, n_components, n_features),
        )
        scatter = (X.T @ buffer).view(n_features, n_components, n_features)
        return scatter.transpose(0, 1)
    centred = buffer.view(n_components, n_samples, n_features)
    torch.sub(X[None, :, :], reference[:, None, :], out=centred)
    centred *= weighted_resp.T.sqrt()[:, :, None]
    return centred.mT @ centred


def _scatter_full_by_component(X, weighted_resp, reference=None):
    """:func:`_scatter_full` over the non-zero ``v_ik`` alone, or None.

    The E-step sets responsibilities below its floor to exactly zero; the rows
    of each component are gathered (:func:`_rows_by_component`) and the
    scatter is one batched (d, m) @ (m, d) product, plus a dense product for
    the wide components. The sums are those of the dense product up to
    rounding: padding slots have weight zero. None where gathering does not
    pay.
    """
    groups = _rows_by_component(weighted_resp)
    if groups is None:
        return None
    n_samples, n_features = X.shape
    n_components = weighted_resp.shape[1]
    slot_weight = weighted_resp.new_zeros(n_components * groups.largest)
    slot_weight[groups.slot] = weighted_resp.reshape(-1).index_select(
        0, groups.row * n_components + groups.component
    )
    shape = (n_components, groups.largest, n_features)
    gathered = X.index_select(0, groups.source_row).view(shape)
    if reference is not None:
        gathered = gathered - reference[:, None, :]
    weighted = gathered * slot_weight.view(shape[:2])[:, :, None]
    scatter = gathered.mT @ weighted
    if len(groups.wide):
        scatter[groups.wide] = _scatter_full_dense(
            X,
            weighted_resp[:, groups.wide].contiguous(),
            reference=None if reference is None else reference[groups.wide],
        )
    return scatter


def _moments_full(X, weighted_resp, workspace=None, reference=None):
    """``sum_i v_ik x_i`` and ``sum_i v_ik x_i x_i^T``, the latter in float64.

    ``sum v x x^T - N mu mu^T`` cancels: in float32 (not float64) its rounding, about
    1e-7 of ``|x|^2``, can exceed a component's whole variance along a thin
    direction (a component on a few points, its covariance near reg_covar).
    The scatter is therefore summed about ``reference`` (the current means,
    close to the new ones), which keeps the rounding to 1e-7 of the
    component's own spread, and the raw second moments are recovered in
    float64, where the M-step's cancellation costs only 1e-16 of ``|x|^2``::

        sum v x x^T = S_c + c s^T + s c^T - N c c^T

    with ``s = sum v x`` and ``N = sum v``, the same sums the statistics hold.
    """
    weighted_sum = weighted_resp.T @ X
    if X.dtype == ACCUMULATION_DTYPE:
        # Its rounding, 1e-16 of |x|^2, is negligible: the cheaper product.
        reference = None
    scatter = _scatter_full(X, weighted_resp, workspace, reference)
    if reference is None:
        return weighted_sum, scatter
    scatter, weighted_sum, reference, nk = (
        t.to(ACCUMULATION_DTYPE)
        for t in (scatter, weighted_sum, reference, weighted_resp.sum(dim=0))
    )
    cross = reference[:, :, None] * weighted_sum[:, None, :]
    scatter += cross + cross.mT
    scatter -= nk[:, None, None] * reference[:, :, None] * reference[:, None, :]
    return weighted_sum, scatter


def _scatter_tied(X, weighted_resp, workspace=None):
    """``sum_i w_i x_i x_i^T``; the row sums of ``v`` are the sample weights."""
    return X.T @ (X * weighted_resp.sum(dim=1, keepdim=True))


#: Workspace buffers holding a chunk's rows beside their squares ('diag',
#: shape (rows, 2 * n_features)) or beside their squared norms ('spherical',
#: shape (rows, n_features + 1)): the design matrices of those E-steps, whose
#: product with the responsibilities then gives both of the M-step's moments
#: at once.
_ROWS_AND_SQUARES = "rows and squared rows"
_ROWS_AND_SQUARED_NORMS = "rows and squared norms"


def _rows_and_squares(X, workspace=None):
    """``[X, X**2]``, written into the workspace buffer when there is one."""
    n_samples, n_features = X.shape
    features = workspace_rows(workspace, _ROWS_AND_SQUARES, n_samples, 2 * n_features, X)
    features[:, :n_features] = X
    torch.mul(X, X, out=features[:, n_features:])
    return features


def _rows_and_squared_norms(X, workspace=None):
    """``[X, |x|**2]``, written into the workspace buffer when there is one."""
    n_samples, n_features = X.shape
    features = workspace_rows(
        workspace, _ROWS_AND_SQUARED_NORMS, n_samples, n_features + 1, X
    )
    features[:, :n_features] = X
    features[:, n_features] = torch.linalg.vecdot(X, X)
    return features


def _design_moments(features, weighted_resp, n_features):
    """``v^T [X, f(X)]`` as one product, widened as one matrix.

    Returns the float64 views of its ``X`` columns and of the rest.
    """
    moments = (weighted_resp.T @ features).to(ACCUMULATION_DTYPE)
    return moments[:, :n_features], moments[:, n_features:]


def _moments_diagonal(X, weighted_resp, workspace=None, reference=None):
    """``sum_i v_ik x_i`` and ``sum_i v_ik x_i**2`` as one product.

    With a workspace, the rows and squares are those the E-step's
    :func:`_log_prob_diagonal` has just written there for this chunk (the
    E-step always computes a chunk's log-probabilities before its
    statistics); without one, they are computed here.
    """
    n_samples, n_features = X.shape
    if workspace is None:
        features = _rows_and_squares(X)
    else:
        features = workspace.rows(_ROWS_AND_SQUARES, n_samples, 2 * n_features, X)
    return _design_moments(features, weighted_resp, n_features)


def _moments_spherical(X, weighted_resp, workspace=None, reference=None):
    """``sum_i v_ik x_i`` and ``sum_i v_ik |x_i|^2`` as one product.

    As :func:`_moments_diagonal`, with the design of :func:`_log_prob_spherical`.
    """
    n_samples, n_features = X.shape
    if workspace is None:
        features = _rows_and_squared_norms(X)
    else:
        features = workspace.rows(_ROWS_AND_SQUARED_NORMS, n_samples, n_features + 1, X)
    weighted_sum, weighted_squared_norms = _design_moments(
        features, weighted_resp, n_features
    )
    return weighted_sum, weighted_squared_norms.squeeze(1)


def _moments(scatter):
    """Moments of a covariance type whose scatter is computed on its own."""

    def moments(X, weighted_resp, workspace=None, reference=None):
        return weighted_resp.T @ X, scatter(X, weighted_resp, workspace)

    return moments


#: A variance must be at least this many times the rounding of the second
#: moments it was computed from (see EMGaussianMixture._rounding_dominates):
#: its relative error, and that of the log-densities' determinants, then
#: stays below 1e-3.
_ROUNDING_SHARE_INVERSE = 1e3


# ---------------------------------------------------------------------- #
# M-step: covariances from summed statistics (float64)
# ---------------------------------------------------------------------- #
def _covariances_full(scatter, nk, means, reg_covar):
    scatter = 0.5 * (scatter + scatter.transpose(1, 2))
    covariances = scatter / nk[:, None, None] - means[:, :, None] * means[:, None, :]
    covariances.diagonal(dim1=1, dim2=2).add_(reg_covar)
    return covariances


def _covariances_tied(scatter, nk, means, reg_covar):
    scatter = 0.5 * (scatter + scatter.T)
    covariance = (scatter - (nk[:, None] * means).T @ means) / nk.sum()
    covariance.diagonal().add_(reg_covar)
    return covariance


def _covariances_diag(scatter, nk, means, reg_covar):
    return scatter / nk[:, None] - means.square() + reg_covar


def _covariances_spherical(scatter, nk, means, reg_covar):
    # The mean over features of the diagonal covariances, as scikit-learn's.
    n_features = means.shape[1]
    return (scatter / nk - means.square().sum(dim=1)) / n_features + reg_covar


def _precisions_cholesky(
    covariances: torch.Tensor, covariance_type: str
) -> torch.Tensor:
    """Upper-triangular ``P`` with ``P P^T`` the precision, from covariances."""
    if covariance_type in ("full", "tied"):
        cholesky, info = torch.linalg.cholesky_ex(covariances)
        if torch.any(info != 0) or not torch.all(torch.isfinite(cholesky)):
            raise ValueError(_ILL_DEFINED_COVARIANCE)
        identity = torch.eye(
            covariances.shape[-1], dtype=covariances.dtype, device=covariances.device
        ).expand_as(covariances)
        return torch.linalg.solve_triangular(cholesky, identity, upper=False).mT
    precisions_cholesky = covariances.rsqrt()
    # The log of rsqrt is finite exactly where the variance is positive and
    # finite, and a sum is finite only if every term is: two operations and
    # one read on the host.
    if not math.isfinite(precisions_cholesky.log().sum()):
        raise ValueError(_ILL_DEFINED_COVARIANCE)
    return precisions_cholesky


def _precisions_cholesky_from_precisions(
    precisions: torch.Tensor, covariance_type: str
) -> torch.Tensor:
    """Upper-triangular ``P`` with ``P P^T = precisions``.

    Cholesky of the row- and column-reversed matrix, reversed back (see
    scikit-learn #26415): it gives the upper factor the E-step needs.
    """
    if covariance_type in ("full", "tied"):
        return torch.linalg.cholesky(precisions.flip(-2, -1)).flip(-2, -1)
    return precisions.sqrt()


def _precisions(
    precisions_cholesky: torch.Tensor, covariance_type: str
) -> torch.Tensor:
    if covariance_type in ("full", "tied"):
        return precisions_cholesky @ precisions_cholesky.mT
    return precisions_cholesky**2


def _log_det_cholesky(
    precisions_cholesky: torch.Tensor, covariance_type: str, n_features: int
) -> torch.Tensor:
    """``log det P`` per component: minus half the log-det of the covariance."""
    if covariance_type in ("full", "tied"):
        return precisions_cholesky.diagonal(dim1=-2, dim2=-1).log().sum(dim=-1)
    if covariance_type == "diag":
        return precisions_cholesky.log().sum(dim=1)
    return n_features * precisions_cholesky.log()


# ---------------------------------------------------------------------- #
# E-step: log-densities of a chunk for all components at once
# ---------------------------------------------------------------------- #
def _log_prob_full(parameters, dtype, workspace=None):
    """``-1/2 ||x P_k - mu_k P_k||^2`` for all k as one (n, d) @ (d, k*d) product."""
    n_components, n_features = parameters.means.shape
    cholesky = parameters.precisions_cholesky
    stacked_cholesky = cholesky.permute(1, 0, 2).reshape(
        n_features, n_components * n_features
    )
    offset = -(parameters.means[:, None, :] @ cholesky).reshape(1, -1)
    constant = _log_prob_constant(parameters, "full")
    stacked_cholesky, offset, constant = (
        t.to(dtype) for t in (stacked_cholesky, offset, constant)
    )

    whitened_norms = offset.view(n_components, n_features).square().sum(dim=1)
    thin = _thin_components(whitened_norms, n_features)
    if thin is not None:
        thin_means, thin_cholesky = (
            t[thin].to(dtype) for t in (parameters.means, cholesky)
        )

    def log_prob(X: torch.Tensor) -> torch.Tensor:
        whitened = workspace_rows(
            workspace, _COMPONENT_ROWS, len(X), n_components * n_features, X
        )
        torch.addmm(offset, X, stacked_cholesky, out=whitened)
        # One read of the (rows, k*d) residuals; squaring then summing would
        # write them once more and read them twice.
        distance = torch.linalg.vector_norm(
            whitened.view(len(X), n_components, n_features), dim=2
        )
        if thin is not None:
            distance[:, thin] = torch.linalg.vector_norm(
                (X[None, :, :] - thin_means[:, None, :]) @ thin_cholesky, dim=2
            ).T
        return constant - 0.5 * distance.square_()

    return log_prob


#: Chunks computed densely, without bounds, after a chunk whose bounds left
#: too many pairs: a tenth of the bounds' cost on overlapping components, and
#: a chance to gather again every eight chunks. The count is kept in the
#: workspace, so it carries over from one pass to the next: data of a single
#: chunk try the bounds every eighth iteration, not every one.
_DENSE_CHUNKS_AFTER_FALLBACK = 7
_DENSE_CHUNKS_AHEAD = "dense chunks ahead"

#: Nats by which a pair's bound must clear the negligible log-ratio before
#: the pair is skipped, on top of the rounding slack of the bounds themselves.
_BOUND_MARGIN = 2.0


class _BoundTerms(NamedTuple):
    """What :func:`_log_prob_full_truncated` bounds distances with, in the compute dtype."""

    smallest_precision: torch.Tensor
    largest_precision: torch.Tensor
    constant: torch.Tensor
    means: torch.Tensor
    squared_means: torch.Tensor
    whitened_means: torch.Tensor
    cholesky: torch.Tensor

    @classmethod
    def of(cls, parameters: GaussianParameters, dtype: torch.dtype) -> _BoundTerms:
        cholesky = parameters.precisions_cholesky
        # The extreme eigenvalues of each precision P P^T (a symmetric
        # eigensolver: half the cost of the singular values of P).
        eigenvalues = torch.linalg.eigvalsh(cholesky @ cholesky.mT).clamp_(min=0.0)
        means = parameters.means.to(dtype)
        return cls(
            smallest_precision=eigenvalues[:, 0].to(dtype),
            largest_precision=eigenvalues[:, -1].to(dtype),
            constant=_log_prob_constant(parameters, "full").to(dtype),
            means=means,
            squared_means=means.square().sum(dim=1),
            whitened_means=(parameters.means[:, None, :] @ cholesky).to(dtype),
            cholesky=cholesky.to(dtype),
        )


def _log_prob_full_truncated(parameters, dtype, workspace, negligible_log_ratio):
    """:func:`_log_prob_full`, with ``-inf`` for pairs certainly negligible.

    The Mahalanobis distance ``||(x - mu_k) P_k||^2`` lies between the
    smallest and the largest eigenvalue of the precision ``P_k P_k^T`` times
    the Euclidean ``||x - mu_k||^2``, which costs ``d`` times less than the
    distance itself. Those bounds give, per row, an upper bound of every
    ``log pi_k p(x | k)`` and a lower bound of the row's largest; a pair whose
    upper bound trails that by more than ``-negligible_log_ratio`` (plus
    ``_BOUND_MARGIN`` and the bounds' rounding slack) would have its
    responsibility set to zero by the E-step anyway and is returned as
    ``-inf``. The remaining pairs are computed exactly, gathered by component
    (:func:`_rows_by_component`) into one batched product; chunks where too
    many pairs remain use the dense product. The row's most probable
    component always remains, so ``argmax`` is unchanged.
    """
    dense = _log_prob_full(parameters, dtype, workspace)
    n_components, n_features = parameters.means.shape
    # Every row keeps a component, so fewer than 1 / share components can
    # never be gathered: skip the bounds.
    if (
        parameters.means.device.type != "cpu"
        or n_components * _GATHERED_MAX_SHARE < 1
    ):
        return dense
    # Chunks left before the bounds are tried again (see
    # _DENSE_CHUNKS_AFTER_FALLBACK): after a chunk that the bounds could not
    # thin, the next few are likely alike (overlapping components), and the
    # bounds would add up to half the dense cost.
    memory = workspace.memory if workspace is not None else {}
    terms: _BoundTerms | None = None
    # The expanded |x|^2 - 2 x.mu + |mu|^2 is exact to about d roundings of
    # its largest terms.
    rounding = 4 * (n_features + 2) * torch.finfo(dtype).eps

    def log_prob(X: torch.Tensor) -> torch.Tensor:
        nonlocal terms
        if memory.get(_DENSE_CHUNKS_AHEAD, 0):
            memory[_DENSE_CHUNKS_AHEAD] -= 1
            return dense(X)
        if terms is None:
            # On the first chunk that tries the bounds, if one does: the
            # precisions' eigenvalues cost as much as a few chunks.
            terms = _BoundTerms.of(parameters, dtype)
        means, constant = terms.means, terms.constant
        scale = X.square().sum(dim=1, keepdim=True) + terms.squared_means
        euclidean = torch.addmm(scale, X, means.T, alpha=-2.0)
        slack = rounding * scale
        upper = constant - 0.5 * terms.smallest_precision * (
            euclidean - slack
        ).clamp_(min=0)
        lower = constant - 0.5 * terms.largest_precision * (euclidean + slack)
        threshold = lower.amax(dim=1, keepdim=True) + (
            negligible_log_ratio - _BOUND_MARGIN
        )
        groups = _rows_by_component(upper >= threshold)
        if groups is None:
            memory[_DENSE_CHUNKS_AHEAD] = _DENSE_CHUNKS_AFTER_FALLBACK
            return dense(X)
        gathered = X.index_select(0, groups.source_row).view(
            n_components, groups.largest, n_features
        )
        # Centred before the product, unlike the dense form: a d-th of its
        # cost, and exact however thin the component.
        distance = torch.linalg.vector_norm(
            (gathered - means[:, None, :]) @ terms.cholesky, dim=2
        )
        values = constant[:, None] - 0.5 * distance.square_()
        weighted_log_prob = X.new_full((len(X), n_components), -math.inf)
        weighted_log_prob.view(-1)[groups.row * n_components + groups.component] = (
            values.view(-1)[groups.slot]
        )
        if len(groups.wide):
            # Every row against the wide components, as _log_prob_full does.
            n_wide = len(groups.wide)
            whitened = torch.addmm(
                -terms.whitened_means[groups.wide].reshape(1, n_wide * n_features),
                X,
                terms.cholesky[groups.wide].transpose(0, 1).reshape(n_features, -1),
            )
            distance = torch.linalg.vector_norm(
                whitened.view(len(X), n_wide, n_features), dim=2
            )
            weighted_log_prob[:, groups.wide] = (
                constant[groups.wide] - 0.5 * distance.square_()
            )
        return weighted_log_prob

    return log_prob


def _log_prob_tied(parameters, dtype, workspace=None):
    """``||y - m_k||^2 = |y|^2 - 2 y.m_k + |m_k|^2`` with y = xP, m_k = mu_k P."""
    cholesky = parameters.precisions_cholesky.to(dtype)
    whitened_means = (parameters.means @ parameters.precisions_cholesky).to(dtype)
    constant = (
        _log_prob_constant(parameters, "tied")
        - 0.5 * (parameters.means @ parameters.precisions_cholesky).square().sum(dim=1)
    ).to(dtype)

    def log_prob(X: torch.Tensor) -> torch.Tensor:
        whitened = X @ cholesky
        norms = whitened.square().sum(dim=1, keepdim=True)
        return torch.addmm(constant - 0.5 * norms, whitened, whitened_means.T)

    return log_prob


#: Relative size of the cancelling terms above which the E-steps compute a
#: component's log-densities from ``x - mu`` rather than in their expanded
#: form (see _thin_components): four digits lost at most.
_EXPANDED_FORM_MAX_LOSS = 1e4


def _thin_components(squared_norms, n_features):
    """Components whose expanded log-densities lose too many digits.

    The expanded forms ``lambda x^2 - 2 lambda x mu + lambda mu^2`` ('diag',
    'spherical') and ``x P - mu P`` ('full') subtract terms of size
    ``squared_norms`` (``lambda mu^2``, or ``|mu P|^2``, per component) to
    give values of order ``n_features`` near ``mu``: their rounding is ``eps``
    times the terms. Where the terms exceed ``_EXPANDED_FORM_MAX_LOSS`` times
    ``n_features`` (a component whose variance is tiny beside its distance
    from the data's mean, e.g. collapsed onto a few points), the
    log-densities are computed from ``x - mu`` instead, in any dtype: in
    float32 the expanded form would keep three digits there, in float64
    eleven. Returns their indices, or None when there are none (the usual
    case, decided by one read of the largest term).
    """
    limit = _EXPANDED_FORM_MAX_LOSS * n_features
    if float(squared_norms.max()) <= limit:
        return None
    return (squared_norms > limit).nonzero().squeeze(1)


def _log_prob_diagonal(parameters, dtype, workspace=None):
    """``[x, x^2] @ [mu_k lambda_k, -lambda_k / 2] + const``: one product per chunk.

    Thin components (:func:`_thin_components`) are recomputed from ``x - mu``.
    """
    precisions = parameters.precisions_cholesky.square()
    log_constant = _log_prob_constant(parameters, "diag")
    scaled_means = parameters.means * precisions
    squared_norms = (scaled_means * parameters.means).sum(dim=1)
    constant = (log_constant - 0.5 * squared_norms).to(dtype)
    # A transposed view: BLAS reads it as it is, no copy needed.
    stacked = torch.cat([scaled_means, -0.5 * precisions], dim=1).T.to(dtype)
    thin = _thin_components(squared_norms, parameters.means.shape[1])
    if thin is not None:
        thin_means, thin_precisions, thin_constant = (
            t[thin].to(dtype) for t in (parameters.means, precisions, log_constant)
        )

    def log_prob(X: torch.Tensor) -> torch.Tensor:
        result = torch.addmm(constant, _rows_and_squares(X, workspace), stacked)
        if thin is not None:
            residuals = X[:, None, :] - thin_means
            result[:, thin] = thin_constant - 0.5 * (
                residuals.square_() * thin_precisions
            ).sum(dim=2)
        return result

    return log_prob


def _log_prob_spherical(parameters, dtype, workspace=None):
    """``[x, |x|^2] @ [mu_k lambda_k, -lambda_k / 2] + const``: one product per chunk.

    Thin components (:func:`_thin_components`) are recomputed from ``x - mu``.
    """
    precisions = parameters.precisions_cholesky.square()
    log_constant = _log_prob_constant(parameters, "spherical")
    squared_norms = precisions * parameters.means.square().sum(dim=1)
    constant = (log_constant - 0.5 * squared_norms).to(dtype)
    # A transposed view: BLAS reads it as it is, no copy needed.
    stacked = torch.cat(
        [parameters.means * precisions[:, None], -0.5 * precisions[:, None]], dim=1
    ).T.to(dtype)
    thin = _thin_components(squared_norms, parameters.means.shape[1])
    if thin is not None:
        thin_means, thin_half_precisions, thin_constant = (
            t[thin].to(dtype)
            for t in (parameters.means, -0.5 * precisions, log_constant)
        )

    def log_prob(X: torch.Tensor) -> torch.Tensor:
        result = torch.addmm(constant, _rows_and_squared_norms(X, workspace), stacked)
        if thin is not None:
            distances = (X[:, None, :] - thin_means).square_().sum(dim=2)
            result[:, thin] = thin_constant + thin_half_precisions * distances
        return result

    return log_prob


def _log_prob_constant(parameters: GaussianParameters, covariance_type: str):
    """``log pi_k + log det P_k - d/2 log(2 pi)`` per component."""
    n_features = parameters.means.shape[1]
    return (
        parameters.weights.log()
        + _log_det_cholesky(parameters.precisions_cholesky, covariance_type, n_features)
        - 0.5 * n_features * math.log(2 * math.pi)
    )


_MOMENTS = {
    "full": _moments_full,
    "tied": _moments(_scatter_tied),
    "diag": _moments_diagonal,
    "spherical": _moments_spherical,
}
_COVARIANCES = {
    "full": _covariances_full,
    "tied": _covariances_tied,
    "diag": _covariances_diag,
    "spherical": _covariances_spherical,
}
_LOG_PROB: dict[str, Callable[..., WeightedLogProb]] = {
    "full": _log_prob_full,
    "tied": _log_prob_tied,
    "diag": _log_prob_diagonal,
    "spherical": _log_prob_spherical,
}


class EMGaussianMixture(BaseEMMixture):
    """Gaussian mixture fitted by EM in torch: a drop-in GaussianMixture.

    Takes the parameters of :class:`sklearn.mixture.GaussianMixture` with the
    same names, defaults and meaning, and sets the same fitted attributes, plus
    ``device`` and ``batch_size``. The E-step and the M-step run in torch on
    ``device``, chunk by chunk: memory is one chunk's temporaries plus the
    data, never O(n_samples x n_components x n_features). ``fit`` and
    ``score`` accept ``sample_weight``; ``transform`` returns the
    responsibilities, so the mixture can be a Pipeline step. With 'full'
    covariances on the CPU, fitting and ``predict`` skip the (sample,
    component) pairs that eigenvalue bounds prove negligible, which makes
    well-separated mixtures several times cheaper per iteration without
    changing the result beyond rounding (see the user guide).

    Dtypes: float32 input is computed in float32 (fast), every other input in
    float64. The sufficient statistics are summed across chunks in float64 and
    the M-step (covariances, Cholesky factors) runs in float64 in both cases,
    so float32 fits keep an accurate lower bound. Fitted attributes and the
    outputs of ``score_samples``, ``predict_proba``, ``transform`` and
    ``sample`` come back in the input dtype, as in scikit-learn.

    Parameters
    ----------
    n_components : int, default=1
        The number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        'full': each component has its own general covariance matrix;
        'tied': all components share one general covariance matrix;
        'diag': each component has its own diagonal covariance matrix;
        'spherical': each component has its own single variance.
    tol : float, default=1e-3
        Convergence threshold: EM stops when the lower bound (mean
        log-likelihood per sample) improves by less than ``tol``.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the diagonal of covariances.
    max_iter : int, default=100
        The number of EM iterations to perform.
    n_init : int, default=1
        The number of initialisations; the best result is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, \
            default='kmeans'
        How the initial responsibilities are drawn, as in scikit-learn.
    weights_init : array-like of shape (n_components,), default=None
        User-provided initial weights.
    means_init : array-like of shape (n_components, n_features), default=None
        User-provided initial means.
    precisions_init : array-like, default=None
        User-provided initial precisions (inverse covariances), of shape
        (n_components,) for 'spherical', (n_features, n_features) for
        'tied', (n_components, n_features) for 'diag' and
        (n_components, n_features, n_features) for 'full'.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and :meth:`sample`.
    warm_start : bool, default=False
        If True, each ``fit`` continues from the previous solution and
        ``n_init`` is ignored after the first call.
    verbose : int, default=0
        1 prints each initialisation and iteration; 2 also prints timings and
        lower-bound changes.
    verbose_interval : int, default=10
        Number of iterations between messages.
    device : str or torch.device, default='cpu'
        Where to compute: 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.
    batch_size : int or 'auto', default='auto'
        Rows per chunk of the E- and M-steps. 'auto' sizes chunks so that one
        chunk's temporaries stay cache-sized.
    stepwise_decay : float, default=0.7
        ``alpha`` in (0.5, 1] of :meth:`partial_fit`'s step sizes
        ``eta_t = (t + 2) ** -alpha``: how fast stepwise EM forgets earlier
        batches (smaller forgets faster). Unused by :meth:`fit`.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        The weight of each component.
    means_ : ndarray of shape (n_components, n_features)
        The mean of each component.
    covariances_ : ndarray
        The covariance of each component; shape as for ``precisions_init``.
    precisions_ : ndarray
        The inverse covariances; same shape as ``covariances_``.
    precisions_cholesky_ : ndarray
        Upper-triangular ``P`` with ``P P^T = precisions_`` (square roots for
        'diag' and 'spherical').
    converged_ : bool
        True when the best initialisation converged.
    n_iter_ : int
        Number of EM iterations of the best initialisation.
    lower_bound_ : float
        Lower bound on the mean log-likelihood of the training data (nats per
        sample) of the best initialisation.
    lower_bounds_ : list of float of length ``n_iter_``
        The lower bound at each iteration of the best initialisation; after
        :meth:`partial_fit`, the mean log-likelihood of each batch before its
        update.
    n_steps_ : int
        Number of :meth:`partial_fit` updates since the last :meth:`fit` (0
        after :meth:`fit`).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when all are strings.

    See Also
    --------
    sklearn.mixture.GaussianMixture : The NumPy estimator this one replaces.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_vae import EMGaussianMixture
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
    >>> gm = EMGaussianMixture(n_components=2, random_state=0).fit(X)
    >>> gm.means_.round(6)
    array([[10.,  2.],
           [ 1.,  2.]])
    >>> gm.predict([[0, 0], [12, 3]])
    array([1, 0])
    >>> gm.transform([[0, 0]]).round(3)
    array([[0., 1.]])
    """

    _parameter_constraints: dict = {
        **BaseEMMixture._parameter_constraints,
        "covariance_type": [StrOptions({"full", "tied", "diag", "spherical"})],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        device: str | torch.device = "cpu",
        batch_size: int | str = "auto",
        stepwise_decay: float = 0.7,
    ) -> None:
        super().__init__(
            n_components=n_components,
            tol=tol,
            reg_covar=reg_covar,
            max_iter=max_iter,
            n_init=n_init,
            init_params=init_params,
            random_state=random_state,
            warm_start=warm_start,
            verbose=verbose,
            verbose_interval=verbose_interval,
            device=device,
            batch_size=batch_size,
            stepwise_decay=stepwise_decay,
        )
        self.covariance_type = covariance_type
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init

    def _check_initial_parameters(self, n_features: int) -> dict[str, np.ndarray]:
        initial = {}
        if self.weights_init is not None:
            initial["weights"] = _check_weights(self.weights_init, self.n_components)
        if self.means_init is not None:
            initial["means"] = _check_means(
                self.means_init, self.n_components, n_features
            )
        if self.precisions_init is not None:
            initial["precisions"] = _check_precisions(
                self.precisions_init,
                self.covariance_type,
                self.n_components,
                n_features,
            )
        return initial

    def _parameters_from_init(
        self,
        estimated: GaussianParameters | None,
        initial: dict[str, np.ndarray],
        shift: torch.Tensor,
    ) -> GaussianParameters:
        device = shift.device

        def user(name: str) -> torch.Tensor:
            return to_tensor(initial[name], device, ACCUMULATION_DTYPE)

        weights = user("weights") if "weights" in initial else estimated.weights
        means = user("means") - shift if "means" in initial else estimated.means
        if "precisions" in initial:
            precisions = user("precisions")
            covariances = (
                torch.linalg.inv(precisions)
                if self.covariance_type in ("full", "tied")
                else 1.0 / precisions
            )
            precisions_cholesky = _precisions_cholesky_from_precisions(
                precisions, self.covariance_type
            )
        else:
            covariances = estimated.covariances
            precisions_cholesky = estimated.precisions_cholesky
        return GaussianParameters(weights, means, covariances, precisions_cholesky)

    def _weighted_log_prob_function(
        self,
        parameters: GaussianParameters,
        dtype: torch.dtype,
        workspace: ChunkWorkspace | None = None,
        negligible_log_ratio: float | None = None,
    ) -> WeightedLogProb:
        if self.covariance_type == "full" and negligible_log_ratio is not None:
            # Only 'full' costs n k d^2; the others' E-steps cost n k d.
            return _log_prob_full_truncated(
                parameters, dtype, workspace, negligible_log_ratio
            )
        return _LOG_PROB[self.covariance_type](parameters, dtype, workspace)

    def _e_step_flops(self, n_samples: int, n_features: int) -> int:
        flops = super()._e_step_flops(n_samples, n_features)
        return flops * n_features if self.covariance_type == "full" else flops

    def _weighted_moments(
        self,
        X: torch.Tensor,
        weighted_resp: torch.Tensor,
        workspace: ChunkWorkspace | None = None,
        parameters: GaussianParameters | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Only 'full' sums its second moments about the current means.
        reference = (
            parameters.means.to(X.dtype)
            if parameters is not None and self.covariance_type == "full"
            else None
        )
        return _MOMENTS[self.covariance_type](X, weighted_resp, workspace, reference)

    def _rounding_dominates(
        self,
        statistics: SufficientStatistics,
        estimate: GaussianParameters,
        dtype: torch.dtype,
    ) -> bool:
        # 'full' sums its scatter about the current means (_moments_full); the
        # others subtract N mu^2 from second moments summed about the data's
        # mean, whose rounding, eps * sum v x^2, must stay a small share of
        # every variance (plus reg_covar, as in the estimate's covariances).
        if dtype == ACCUMULATION_DTYPE or self.covariance_type == "full":
            return False
        nk = statistics.component_weight + 10 * torch.finfo(ACCUMULATION_DTYPE).eps
        scatter = statistics.weighted_scatter
        covariances = estimate.covariances
        if self.covariance_type == "tied":
            second, covariances = scatter.diagonal() / nk.sum(), covariances.diagonal()
        elif self.covariance_type == "diag":
            second = scatter / nk[:, None]
        else:
            # The spherical variance is the mean of the d diagonal ones.
            second, covariances = scatter / nk, covariances * estimate.means.shape[1]
        limit = _ROUNDING_SHARE_INVERSE * torch.finfo(dtype).eps
        return bool(torch.any(covariances < limit * second))

    def _m_step(self, statistics: SufficientStatistics) -> GaussianParameters:
        # scikit-learn's guard against empty components, kept so that results
        # match its GaussianMixture.
        nk = statistics.component_weight + 10 * torch.finfo(ACCUMULATION_DTYPE).eps
        means = statistics.weighted_sum / nk[:, None]
        covariances = _COVARIANCES[self.covariance_type](
            statistics.weighted_scatter, nk, means, self.reg_covar
        )
        return GaussianParameters(
            weights=nk / nk.sum(),
            means=means,
            covariances=covariances,
            precisions_cholesky=_precisions_cholesky(covariances, self.covariance_type),
        )

    def _shift_means(
        self, parameters: GaussianParameters, offset: torch.Tensor
    ) -> GaussianParameters:
        return parameters._replace(means=parameters.means + offset)

    def _fitted_parameters(self, device: torch.device) -> GaussianParameters:
        return GaussianParameters(
            *(
                to_tensor(getattr(self, name), device, ACCUMULATION_DTYPE)
                for name in (
                    "weights_",
                    "means_",
                    "covariances_",
                    "precisions_cholesky_",
                )
            )
        )

    def _set_fitted_parameters(
        self, parameters: GaussianParameters, dtype: np.dtype
    ) -> None:
        precisions = _precisions(parameters.precisions_cholesky, self.covariance_type)
        with np.errstate(over="ignore"):
            arrays = [
                to_numpy(t).astype(dtype, copy=False) for t in (*parameters, precisions)
            ]
        if not all(np.isfinite(array).all() for array in arrays):
            # The M-step runs in float64; its result must fit the input dtype.
            raise ValueError(
                "Fitting the mixture model failed because some components have "
                f"ill-defined empirical covariance in {np.dtype(dtype)}: the fitted "
                f"parameters overflow {np.dtype(dtype)}. Try to scale the input data "
                "(e.g. with StandardScaler) or fit on float64 data."
            )
        (
            self.weights_,
            self.means_,
            self.covariances_,
            self.precisions_cholesky_,
            self.precisions_,
        ) = arrays

    def _component_cholesky(self, device: torch.device) -> torch.Tensor:
        covariances = to_tensor(self.covariances_, device, ACCUMULATION_DTYPE)
        n_features = self.means_.shape[1]
        if self.covariance_type == "full":
            return torch.linalg.cholesky(covariances)
        if self.covariance_type == "tied":
            return torch.linalg.cholesky(covariances).expand(
                self.n_components, n_features, n_features
            )
        if self.covariance_type == "spherical":
            covariances = covariances[:, None].expand(self.n_components, n_features)
        return torch.diag_embed(covariances.sqrt())

    def _n_parameters(self) -> int:
        """Return the number of free parameters in the model."""
        n_features = self.means_.shape[1]
        covariance_parameters = {
            "full": self.n_components * n_features * (n_features + 1) / 2.0,
            "diag": self.n_components * n_features,
            "tied": n_features * (n_features + 1) / 2.0,
            "spherical": self.n_components,
        }[self.covariance_type]
        mean_parameters = n_features * self.n_components
        return int(covariance_parameters + mean_parameters + self.n_components - 1)
