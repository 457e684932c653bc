"""Where the rows of an EM fit live, and how a pass over them is made.

One EM iteration is a sum of per-chunk sufficient statistics. What differs
between a small array, a memory-mapped file larger than the device, the
shards of a ``torch.distributed`` process group and the blocks of a Dask
array is only how the chunks are produced and how their sums are combined:

* :class:`InMemoryRows`: the rows are copied to the device once, centred, and
  sliced into chunks;
* :class:`StreamedRows`: the rows stay where they are (a ``numpy.memmap``, or
  an array too large for the device); each chunk is converted, centred and
  moved when it is visited, so no full copy of the data is ever made;
* under a process group either of them is one rank's shard: every global
  quantity (the centring mean, the statistics, the row count) is all-reduced,
  and the rows that initialise the model are gathered from every rank;
* :class:`~sklearn_vae.mixture._dask.DaskRows` (in ``_dask.py``) maps a
  streamed pass over each block where the block lives.

The E-step itself is a :class:`ChunkEStep`: a picklable function from a chunk
to its statistics, so the same code runs in this process and on Dask workers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.base import clone

from .._backend import iter_row_chunks, to_numpy, to_tensor
from .._distributed import (
    all_gather_objects,
    all_reduce_sum,
    current_process_group,
)
from ._statistics import ACCUMULATION_DTYPE, SufficientStatistics, sum_statistics

__all__ = [
    "ChunkEStep",
    "EMRows",
    "InMemoryRows",
    "InitializationRows",
    "StreamedRows",
    "exp_floor",
    "initialization_sample_size",
    "is_memory_mapped",
]

#: Rows the initialisation sees when it cannot see them all (streamed data,
#: several ranks, Dask): k-means on this many rows drawn at random places
#: the components about as well as on millions, in well under a second.
INITIALIZATION_ROWS = 2**16

#: ... and at least this many rows per component.
_INITIALIZATION_ROWS_PER_COMPONENT = 64

def initialization_sample_size(n_components: int) -> int:
    """Rows drawn to initialise a fit that cannot see them all.

    Parameters
    ----------
    n_components : int

    Returns
    -------
    int
    """
    return max(INITIALIZATION_ROWS, _INITIALIZATION_ROWS_PER_COMPONENT * n_components)


#: A chunk function: centred rows and their sample weights to statistics.
ChunkFunction = Callable[[torch.Tensor, torch.Tensor], SufficientStatistics]


def exp_floor(dtype: torch.dtype) -> tuple[float, float]:
    """The floor of the E-step's log-ratios and the ratio zeroed below.

    ``exp`` of an argument at least ``log_floor`` is a normal number even
    after division by a few thousand; ratios at or below ``resp_floor``, the
    clamped ones included, are set to zero (they are below 1e-300 in float64
    and 1e-33 in float32, where scikit-learn's exp underflows too).

    Parameters
    ----------
    dtype : torch.dtype

    Returns
    -------
    log_floor, resp_floor : float
    """
    log_tiny = math.log(torch.finfo(dtype).tiny)
    return log_tiny + 10.0, math.exp(log_tiny + 11.0)


def is_memory_mapped(X: Any) -> bool:
    """True if ``X`` is, or is a view of, a memory-mapped file.

    Parameters
    ----------
    X : object

    Returns
    -------
    bool
    """
    import mmap

    while X is not None:
        if isinstance(X, (np.memmap, mmap.mmap)):
            return True
        X = getattr(X, "base", None)
    return False


class ChunkEStep:
    """The E-step of one row chunk under fixed parameters: its statistics.

    Picklable: it carries the mixture (for its hyper-parameters and template
    methods) and the parameters, and rebuilds its log-density function and
    buffers wherever it runs, so a Dask worker computes exactly what this
    process would.

    Parameters
    ----------
    mixture : BaseEMMixture
    parameters : object
        The mixture's parameters, float64 tensors, in the centred coordinates.
    dtype : torch.dtype
        The compute dtype of the chunks.
    workspace : ChunkWorkspace, default=None
        Buffers to reuse (not pickled).
    """

    def __init__(self, mixture: Any, parameters: Any, dtype: torch.dtype, workspace=None):
        self.mixture = mixture
        self.parameters = parameters
        self.dtype = dtype
        self.workspace = workspace
        self._log_prob = None
        self._device_parameters = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # Hyper-parameters only: a warm-started mixture's fitted arrays need
        # not travel to every worker.
        state["mixture"] = clone(self.mixture)
        state["workspace"] = None
        state["_log_prob"] = None
        state["_device_parameters"] = None
        return state

    def __call__(self, X: torch.Tensor, weights: torch.Tensor) -> SufficientStatistics:
        """Return the statistics of the centred rows ``X`` with ``weights``.

        Parameters
        ----------
        X : torch.Tensor of shape (rows, n_features)
            In the compute dtype.
        weights : torch.Tensor of shape (rows,)
            float64 sample weights on the device of ``X``.

        Returns
        -------
        SufficientStatistics
        """
        log_floor, resp_floor = exp_floor(self.dtype)
        # Rows of another dtype (float32 rows in a float64 retry) are cast.
        # Each cast is tested first: even a no-op costs a dispatch, and a
        # small fit's iteration is made of a few dozen operations.
        if X.dtype != self.dtype:
            X = X.to(self.dtype)
        if self._log_prob is None:
            from ._base import ChunkWorkspace

            if self.workspace is None:
                self.workspace = ChunkWorkspace()
            self._device_parameters = type(self.parameters)(
                *(
                    tensor if tensor.device == X.device else tensor.to(X.device)
                    for tensor in self.parameters
                )
            )
            self._log_prob = self.mixture._weighted_log_prob_function(
                self._device_parameters, self.dtype, self.workspace, log_floor
            )
        # A log-sum-exp whose exponentials are reused as responsibilities:
        # one pass of exp over the chunk instead of two.
        weighted_log_prob = self._log_prob(X)
        largest = weighted_log_prob.amax(dim=1, keepdim=True)
        # exp is ten to forty times slower where its result would be
        # subnormal or zero, which is most entries for well-separated
        # components: clamp the arguments into the fast range, then zero the
        # clamped entries (all below e**-77 of the row's largest).
        weighted_resp = torch.exp_(
            torch.sub(weighted_log_prob, largest).clamp_(min=log_floor)
        )
        torch.nn.functional.threshold_(weighted_resp, resp_floor, 0.0)
        # A product with ones: twice as fast as sum(dim=1) over few columns.
        normaliser = weighted_resp @ self.workspace.ones(weighted_resp.shape[1], X)
        log_norm = (largest + normaliser.log()).squeeze(1)
        weighted_resp *= weights.to(X.dtype)[:, None] / normaliser
        return self.mixture._chunk_statistics(
            X,
            weighted_resp,
            weights @ log_norm.to(ACCUMULATION_DTYPE),
            weights.sum(),
            self.workspace,
            self._device_parameters,
        )


class InitializationRows(NamedTuple):
    """The rows an initialisation is computed from, identical on every rank.

    ``X`` and ``sample_weight`` are numpy (for k-means); ``X_centred`` and
    ``weights`` the same rows as centred device tensors.
    """

    X: np.ndarray
    sample_weight: np.ndarray
    X_centred: torch.Tensor
    weights: torch.Tensor


class EMRows(ABC):
    """The rows of one fit: one rank's shard, on or off the device.

    Parameters
    ----------
    X : ndarray of shape (n_local_samples, n_features)
        Validated float32 or float64 rows of this process.
    sample_weight : ndarray of shape (n_local_samples,)
        Validated float64 weights.
    device : torch.device
    dtype : torch.dtype
        The compute dtype.
    chunk_size : int
        Rows per chunk.
    shift : torch.Tensor of shape (n_features,), default=None
        The centring offset (float64); None computes the weighted mean over
        every rank.

    Attributes
    ----------
    shift : torch.Tensor of shape (n_features,)
        float64 offset subtracted from every row.
    n_samples : int
        Rows over every rank.
    total_weight : float
        Sum of the weights over every rank.
    n_positive_weights : int
        Rows with a positive weight over every rank.
    """

    def __init__(
        self,
        X: np.ndarray,
        sample_weight: np.ndarray,
        device: torch.device,
        dtype: torch.dtype,
        chunk_size: int,
        shift: torch.Tensor | None = None,
    ) -> None:
        self.X = X
        self.sample_weight = sample_weight
        self.device = device
        self.dtype = dtype
        self.chunk_size = chunk_size
        self.weights = torch.as_tensor(sample_weight, dtype=ACCUMULATION_DTYPE, device=device)
        totals = all_reduce_sum(
            torch.tensor(
                [len(X), float(self.weights.sum()), np.count_nonzero(sample_weight)],
                dtype=ACCUMULATION_DTYPE,
                device=device,
            )
        )
        self.n_samples = int(totals[0])
        self.total_weight = float(totals[1])
        self.n_positive_weights = int(totals[2])
        self.shift = self._weighted_mean() if shift is None else shift.to(device)

    @property
    def n_features(self) -> int:
        """Number of columns."""
        return self.X.shape[1]

    @property
    def X_dtype(self) -> np.dtype:
        """The numpy dtype of the rows (of the fitted attributes)."""
        return self.X.dtype

    @property
    def n_local_samples(self) -> int:
        """Rows of this process."""
        return self.X.shape[0]

    # -- what subclasses provide ----------------------------------------
    @abstractmethod
    def iter_chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(centred rows, weights)`` of this process, chunk by chunk."""

    def _raw_chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Uncentred float64 chunks and weights, for the centring mean."""
        for rows in iter_row_chunks(self.n_local_samples, self.chunk_size):
            # Moved in their own dtype, widened on the device: half the
            # transfer for float32 rows.
            chunk = to_tensor(self.X[rows], self.device)
            yield chunk.to(ACCUMULATION_DTYPE), self.weights[rows]

    # -- passes ----------------------------------------------------------
    def _weighted_mean(self) -> torch.Tensor:
        local = sum(
            (weights @ X for X, weights in self._raw_chunks()),
            torch.zeros(self.n_features, dtype=ACCUMULATION_DTYPE, device=self.device),
        )
        return all_reduce_sum(local) / self.total_weight

    def local_statistics(self, function: ChunkFunction) -> SufficientStatistics:
        """Sum ``function`` over this process's chunks."""
        return sum_statistics(function(X, weights) for X, weights in self.iter_chunks())

    def sum_statistics(self, function: ChunkFunction) -> SufficientStatistics:
        """Sum ``function`` over every chunk of every rank.

        Parameters
        ----------
        function : callable
            ``(centred rows, weights) -> SufficientStatistics``.

        Returns
        -------
        SufficientStatistics
        """
        return self.local_statistics(function).all_reduce()

    def map_chunks(self, function: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        """Concatenate ``function`` of this process's centred chunks, as numpy."""
        return to_numpy(torch.cat([function(X) for X, _ in self.iter_chunks()]))

    # -- initialisation ---------------------------------------------------
    def initialization_rows(
        self, n_components: int, random_state: np.random.RandomState
    ) -> InitializationRows:
        """The rows to initialise from: all of them, or a random sample.

        With more rows than ``INITIALIZATION_ROWS`` (and 64 per component),
        a uniform sample of that many rows over every rank, the same on every
        rank: ``random_state`` must be in the same state on every rank.
        Otherwise every row, in rank order, so that a fit on shards starts
        where a fit on their concatenation does.
        """
        counts = [int(count) for count in all_gather_objects(self.n_local_samples)]
        n_rows = initialization_sample_size(n_components)
        if sum(counts) <= n_rows:
            local = np.arange(self.n_local_samples)
        else:
            chosen = np.sort(random_state.choice(sum(counts), size=n_rows, replace=False))
            group = current_process_group()
            offset = sum(counts[: group.rank]) if group is not None else 0
            mine = (chosen >= offset) & (chosen < offset + self.n_local_samples)
            local = chosen[mine] - offset
        pieces = all_gather_objects((np.asarray(self.X[local]), self.sample_weight[local]))
        X = np.concatenate([piece[0] for piece in pieces])
        sample_weight = np.concatenate([piece[1] for piece in pieces])
        weights = torch.as_tensor(sample_weight, dtype=ACCUMULATION_DTYPE, device=self.device)
        X_centred = to_tensor(X, self.device, ACCUMULATION_DTYPE) - self.shift
        return InitializationRows(X, sample_weight, X_centred.to(self.dtype), weights)


class InMemoryRows(EMRows):
    """Rows copied to the device once and centred there.

    The one copy is made in the compute dtype; when converting ``X`` to a
    tensor already copied it (another device or dtype), it is centred in
    place, so the device holds the data once.
    """

    def __init__(self, X, sample_weight, device, dtype, chunk_size, shift=None) -> None:
        super().__init__(X, sample_weight, device, dtype, chunk_size, shift)
        tensor = to_tensor(X, device, dtype)
        shares_memory = device.type == "cpu" and tensor.data_ptr() == np.asarray(
            X
        ).__array_interface__["data"][0]
        if dtype == ACCUMULATION_DTYPE:
            centred = tensor - self.shift if shares_memory else tensor.sub_(self.shift)
        else:
            # float32 rows are centred in float64, chunk by chunk, so no
            # float64 copy of the whole data set is made.
            centred = torch.empty_like(tensor) if shares_memory else tensor
            for rows in iter_row_chunks(len(tensor), chunk_size):
                centred[rows] = tensor[rows].to(ACCUMULATION_DTYPE) - self.shift
        self.X_centred = centred

    def iter_chunks(self):
        for rows in iter_row_chunks(self.n_local_samples, self.chunk_size):
            yield self.X_centred[rows], self.weights[rows]

    def initialization_rows(self, n_components, random_state):
        if current_process_group() is not None:
            return super().initialization_rows(n_components, random_state)
        # One process with every row in memory initialises from all of
        # them, exactly as scikit-learn does.
        return InitializationRows(self.X, self.sample_weight, self.X_centred, self.weights)


class StreamedRows(EMRows):
    """Rows left where they are and visited chunk by chunk.

    For a ``numpy.memmap`` or an array larger than the device: each chunk is
    read, widened to float64, centred, cast to the compute dtype and moved to
    the device when it is visited. Memory beyond the data is one chunk's
    temporaries.
    """

    def iter_chunks(self):
        for X, weights in self._raw_chunks():
            yield (X - self.shift).to(self.dtype), weights
