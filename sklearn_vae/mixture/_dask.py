"""Exact EM on a Dask array: each E-step runs where the blocks live.

Each EM iteration maps a streamed pass (:class:`~._data.StreamedRows`) over
every block on the workers, so each block becomes its
:class:`~._statistics.SufficientStatistics`, and sums those in a tree of
additions on the workers; only the sum, a few kilobytes, reaches the client,
which makes the M-step. The rows never leave the workers, except the sample
of at most ``INITIALIZATION_ROWS`` rows the initialisation is computed from.
The model is the one an in-memory fit reaches from the same initial
parameters, up to the order of floating-point additions.

Prediction, scoring and transformation map the fitted estimator over the
blocks lazily and return Dask arrays. Dask is imported only here, and only
when a Dask array is passed (the ``dask`` extra).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import _check_feature_names, _check_n_features

from .._backend import compute_dtype, numpy_dtype, resolve_device, to_tensor
from ._data import (
    ChunkFunction,
    InitializationRows,
    StreamedRows,
    initialization_sample_size,
)
from ._statistics import ACCUMULATION_DTYPE, SufficientStatistics

__all__ = ["DaskRows", "dask_average", "map_dask_blocks"]

def _import_dask() -> Any:
    try:
        import dask
        import dask.array
    except ImportError as error:  # pragma: no cover - the test extra has dask
        raise ImportError(
            "Fitting on a Dask array needs dask; install it with "
            "pip install 'sklearn-vae[dask]'."
        ) from error
    return dask


def _checked_array(estimator: Any, X: Any, reset: bool) -> Any:
    """Check a Dask array's shape and dtype as validate_data would, lazily."""
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2D Dask array, got {X.ndim}D with shape {X.shape}. "
            "Reshape your data, e.g. with X.reshape(-1, 1) for a single feature."
        )
    if X.dtype.kind not in "biuf":
        raise ValueError(
            f"Expected a numeric Dask array, got dtype {X.dtype}; convert it with "
            "X.astype('float64')."
        )
    if np.isnan(X.shape[0]):
        X = X.compute_chunk_sizes()
    if X.shape[0] == 0:
        raise ValueError("Found a Dask array with 0 sample(s) while a minimum of 1 is required.")
    _check_n_features(estimator, X, reset=reset)
    _check_feature_names(estimator, X, reset=reset)
    dtype = numpy_dtype(compute_dtype(X.dtype))
    return X.astype(dtype).rechunk({1: -1})


def _block_statistics(
    X: np.ndarray,
    sample_weight: np.ndarray,
    shift: np.ndarray,
    function: ChunkFunction,
    device: str,
    chunk_size: int,
) -> SufficientStatistics:
    """A streamed pass over one block, on a worker; statistics on the CPU."""
    device = resolve_device(device)
    rows = StreamedRows(
        X,
        sample_weight,
        device,
        compute_dtype(X),
        chunk_size,
        shift=torch.as_tensor(shift, dtype=ACCUMULATION_DTYPE),
    )
    return SufficientStatistics.from_numpy(rows.local_statistics(function).to_numpy())


def _block_moments(X: np.ndarray, sample_weight: np.ndarray) -> np.ndarray:
    """``[sum w, count of w > 0, 1 if finite else 0, sum w x ...]`` of one block."""
    X64 = X.astype(np.float64, copy=False)
    head = [sample_weight.sum(), np.count_nonzero(sample_weight), float(np.isfinite(X64).all())]
    return np.concatenate([head, sample_weight @ X64])


def _tree_sum(dask: Any, parts: list[Any]) -> Any:
    """Add delayed values pairwise, so no one task receives them all."""
    while len(parts) > 1:
        parts = [
            dask.delayed(operator.add)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


class DaskRows:
    """The rows of an EM fit as a Dask array (see the module docstring).

    Built by :meth:`from_estimator`; offers what the EM loop uses of
    :class:`~._data.EMRows`.
    """

    def __init__(self, X, sample_weight, device, chunk_size, shift, moments) -> None:
        self.dask = _import_dask()
        self.X = X
        self.sample_weight = sample_weight
        self.device = device
        self.dtype = compute_dtype(X.dtype)
        self.X_dtype = np.dtype(X.dtype)
        self.chunk_size = chunk_size
        self.n_samples = int(X.shape[0])
        self.n_features = int(X.shape[1])
        self.total_weight = float(moments[0])
        self.n_positive_weights = int(moments[1])
        if shift is None:
            shift = torch.as_tensor(moments[3:] / self.total_weight, dtype=ACCUMULATION_DTYPE)
        self.shift = shift.to(device)

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any,
        sample_weight: Any,
        *,
        reset: bool,
        shift: torch.Tensor | None,
    ) -> DaskRows:
        """Validate a Dask array and its weights; persist both on the workers.

        EM reads the data once per iteration, so they are persisted: a lazily
        computed array would otherwise be recomputed at every iteration.

        Raises
        ------
        ValueError
            For a non-2-D or non-numeric array, a wrong number of features,
            non-finite values or negative weights.
        """
        dask = _import_dask()
        X = _checked_array(estimator, X, reset)
        row_chunks = X.chunks[0]
        if sample_weight is None:
            weights = dask.array.ones(X.shape[0], chunks=(row_chunks,), dtype=np.float64)
        else:
            weights = dask.array.asarray(sample_weight).astype(np.float64)
            if weights.ndim != 1 or weights.shape[0] != X.shape[0]:
                raise ValueError(
                    f"sample_weight.shape == {weights.shape}, expected ({X.shape[0]},)!"
                )
            weights = weights.rechunk((row_chunks,))
        X, weights = dask.persist(X, weights)
        blocks = zip(X.to_delayed().ravel(), weights.to_delayed().ravel())
        moments, minimum = dask.compute(
            _tree_sum(dask, [dask.delayed(_block_moments)(x, w) for x, w in blocks]),
            weights.min(),
        )
        # Every block is finite iff the finite flags sum to the block count.
        if moments[2] < len(row_chunks):
            raise ValueError(
                "Input X contains NaN or infinity; drop or impute those rows first."
            )
        if minimum < 0:
            raise ValueError("Negative values in data passed to `sample_weight`")
        device = resolve_device(estimator.device)
        chunk_size = estimator._chunk_size(X.shape[1], compute_dtype(X.dtype))
        return cls(X, weights, device, chunk_size, shift, moments)

    def sum_statistics(self, function: ChunkFunction) -> SufficientStatistics:
        """Sum ``function`` over every block, on the workers."""
        dask = self.dask
        function = dask.delayed(function, pure=True)
        shift = dask.delayed(self.shift.cpu().numpy(), pure=True)
        device = str(self.device)
        parts = [
            dask.delayed(_block_statistics)(x, w, shift, function, device, self.chunk_size)
            for x, w in zip(self.X.to_delayed().ravel(), self.sample_weight.to_delayed().ravel())
        ]
        total = dask.compute(_tree_sum(dask, parts))[0]
        return SufficientStatistics.from_numpy(total.to_numpy(), self.device)

    def initialization_rows(
        self, n_components: int, random_state: np.random.RandomState
    ) -> InitializationRows:
        """All rows if few, else a uniform sample of them, pulled to the client."""
        n_rows = initialization_sample_size(n_components)
        if self.n_samples <= n_rows:
            X, sample_weight = self.dask.compute(self.X, self.sample_weight)
        else:
            chosen = np.sort(random_state.choice(self.n_samples, size=n_rows, replace=False))
            X, sample_weight = self.dask.compute(self.X[chosen], self.sample_weight[chosen])
        X_centred = to_tensor(X, self.device, ACCUMULATION_DTYPE) - self.shift
        weights = torch.as_tensor(sample_weight, dtype=ACCUMULATION_DTYPE, device=self.device)
        return InitializationRows(X, sample_weight, X_centred.to(self.dtype), weights)


def map_dask_blocks(
    estimator: Any,
    X: Any,
    function: Callable[[np.ndarray], np.ndarray],
    *,
    n_columns: int | None,
    integer: bool,
) -> Any:
    """Apply ``function`` (an inference method on numpy rows) to every block.

    Parameters
    ----------
    estimator : fitted mixture
    X : dask.array.Array of shape (n_samples, n_features)
    function : callable
        numpy block -> ndarray of shape (rows,) or (rows, n_columns).
    n_columns : int or None
        Width of the output; None for one value per row.
    integer : bool
        Whether the output holds labels (int64) instead of values in the
        dtype of ``X``.

    Returns
    -------
    dask.array.Array
        Lazy; one output row per input row, chunked like ``X``'s rows.
    """
    _import_dask()
    X = _checked_array(estimator, X, reset=False)
    dtype = np.dtype(np.int64) if integer else X.dtype
    shape = (0,) if n_columns is None else (0, n_columns)

    def apply(block: np.ndarray) -> np.ndarray:
        if block.shape[0] == 0:
            return np.empty(shape, dtype=dtype)
        return function(block)

    if n_columns is None:
        return X.map_blocks(apply, drop_axis=1, dtype=dtype, meta=np.empty(shape, dtype))
    return X.map_blocks(
        apply, chunks=(X.chunks[0], (n_columns,)), dtype=dtype, meta=np.empty(shape, dtype)
    )


def dask_average(values: Any, sample_weight: Any) -> float:
    """The (weighted) mean of a lazy Dask vector, computed.

    Parameters
    ----------
    values : dask.array.Array of shape (n_samples,)
    sample_weight : array-like of shape (n_samples,) or None

    Returns
    -------
    float
    """
    dask = _import_dask()
    if sample_weight is not None:
        sample_weight = dask.array.asarray(sample_weight).rechunk((values.chunks[0],))
    return float(dask.compute(dask.array.average(values, weights=sample_weight))[0])
