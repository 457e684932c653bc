"""The EM template shared by every mixture estimator.

Modelled on ``sklearn/mixture/_base.py``: the base class owns validation, the
``n_init`` restarts, warm start, the EM loop, convergence, warnings and the final
E-step that makes ``fit_predict(X)`` equal ``fit(X).predict(X)``. A subclass
fills small template methods with the math of its component family.

What differs from scikit-learn is the data flow of one EM iteration. The data
are moved to the device once, centred on their weighted mean (so second-moment
expansions such as ``sum x x^T - N mu mu^T`` do not cancel catastrophically),
and visited in row chunks. Each chunk's E-step produces its
:class:`SufficientStatistics` directly, the chunks' statistics are summed, and
the M-step reads only the sums. The lower bound comes from the same pass. So an
iteration is one pass over the data, the responsibilities of all rows are never
stored, and peak memory is one chunk's temporaries.
"""

from __future__ import annotations

import math
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from numbers import Integral, Real
from time import time
from typing import Any

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    DensityMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from .._backend import (
    DEVICE_CONSTRAINT,
    check_finite_rows,
    compute_dtype,
    iter_row_chunks,
    limited_threads,
    map_row_chunks,
    numpy_dtype,
    resolve_device,
    to_numpy,
    to_tensor,
    unchanged_on_error,
)
from .._distributed import (
    agree_on_errors,
    all_gather_objects,
    broadcast_object,
    current_process_group,
    is_main_process,
)
from ._data import (
    ChunkEStep,
    EMRows,
    InMemoryRows,
    StreamedRows,
    exp_floor,
    is_memory_mapped,
)
from ._statistics import (
    ACCUMULATION_DTYPE,
    SufficientStatistics,
    stepwise_step_size,
    sum_statistics,
)

__all__ = ["BaseEMMixture", "ChunkWorkspace", "workspace_rows"]

#: A log-probability function: a (rows, n_features) chunk to the
#: (rows, n_components) matrix ``log pi_k + log p(x | component k)``.
WeightedLogProb = Callable[[torch.Tensor], torch.Tensor]

#: Bytes of the largest per-chunk temporary, (rows, n_components * n_features),
#: that 'auto' aims for. Smaller chunks stay in cache, but every chunk costs
#: about ten parallel regions, each a thread barrier; on a busy machine a
#: barrier waits for a descheduled thread, so chunks must not be too many.
#: Measured on 2 cores, 8 MiB beats 4 MiB by 4-25% per E-step in every
#: covariance type and dtype of benchmarks/bench_gmm.py.
_AUTO_CHUNK_BYTES = 2**23
_AUTO_CHUNK_ROWS = (256, 16384)

#: An E-step of fewer multiply-adds than this runs on one thread (see
#: ``_threads_for``): about a millisecond of arithmetic, comparable to the
#: cost of a few dozen parallel regions on a loaded machine.
_SMALL_PROBLEM_FLOPS = 2**24

#: In-memory data larger than this share of the free GPU memory is streamed
#: to the GPU chunk by chunk instead of copied there whole.
_DEVICE_SHARE = 0.5


def is_dask_array(X: Any) -> bool:
    """True for a :class:`dask.array.Array` (without importing dask).

    Parameters
    ----------
    X : object

    Returns
    -------
    bool
    """
    return type(X).__module__.startswith("dask.") and hasattr(X, "map_blocks")


class ChunkWorkspace:
    """Buffers of shape (rows, columns) reused from one row chunk to the next.

    A fresh multi-megabyte tensor per chunk costs page faults and cache misses
    comparable to the arithmetic done in it; a pass over the data asks for the
    same shapes chunk after chunk.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        #: Small values an E-step carries from one chunk, and one pass, to the
        #: next (e.g. how many chunks to compute without bounds).
        self.memory: dict[str, Any] = {}

    def rows(self, name: str, n_rows: int, n_columns: int, like: torch.Tensor):
        """Return an uninitialised (n_rows, n_columns) view of buffer ``name``.

        Parameters
        ----------
        name : str
            Which buffer; callers sharing a name share (and overwrite) it.
        n_rows, n_columns : int
        like : torch.Tensor
            Gives dtype and device.

        Returns
        -------
        torch.Tensor
        """
        buffer = self._buffers.get(name)
        if (
            buffer is None
            or buffer.shape[0] < n_rows
            or buffer.shape[1] != n_columns
            or buffer.dtype != like.dtype
        ):
            buffer = like.new_empty((n_rows, n_columns))
            self._buffers[name] = buffer
        return buffer[:n_rows]

    def ones(self, n_rows: int, like: torch.Tensor) -> torch.Tensor:
        """Return a column of ``n_rows`` ones (a product with it sums rows).

        Parameters
        ----------
        n_rows : int
        like : torch.Tensor
            Gives dtype and device.

        Returns
        -------
        torch.Tensor of shape (n_rows, 1)
        """
        ones = self._buffers.get("ones")
        if ones is None or ones.shape[0] != n_rows or ones.dtype != like.dtype:
            ones = like.new_ones((n_rows, 1))
            self._buffers["ones"] = ones
        return ones


def _widened(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float64; tested first, as even a no-op cast costs a dispatch."""
    return tensor if tensor.dtype == ACCUMULATION_DTYPE else tensor.to(ACCUMULATION_DTYPE)


@contextmanager
def _em_context(n_threads: int | None) -> Iterator[None]:
    """What EM runs under: ``limited_threads(n_threads)`` and no autograd.

    EM differentiates nothing, and under ``torch.inference_mode`` each torch
    operation skips its autograd bookkeeping: a fifth of the cost of the
    dozens of operations on (n_components, n_features) tensors that every
    iteration makes, which is most of an iteration on small data.
    """
    with limited_threads(n_threads), torch.inference_mode():
        yield


def workspace_rows(
    workspace: ChunkWorkspace | None,
    name: str,
    n_rows: int,
    n_columns: int,
    like: torch.Tensor,
) -> torch.Tensor:
    """A buffer from ``workspace``, or a new tensor when there is none."""
    if workspace is None:
        return like.new_empty((n_rows, n_columns))
    return workspace.rows(name, n_rows, n_columns, like)


class BaseEMMixture(
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    DensityMixin,
    BaseEstimator,
    metaclass=ABCMeta,
):
    """Base class for mixture models fitted by EM in torch.

    Not for direct use: subclasses define the component family through the
    template methods ``_check_initial_parameters``, ``_parameters_from_init``,
    ``_weighted_log_prob_function``, ``_weighted_moments``, ``_m_step``,
    ``_shift_means``, ``_fitted_parameters``, ``_set_fitted_parameters``,
    ``_component_cholesky`` and ``_n_parameters``.
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [
            StrOptions({"kmeans", "random", "random_from_data", "k-means++"})
        ],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "device": DEVICE_CONSTRAINT,
        "batch_size": [
            Interval(Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "stepwise_decay": [Interval(Real, 0.5, 1.0, closed="right")],
    }

    def __init__(
        self,
        n_components: int,
        tol: float,
        reg_covar: float,
        max_iter: int,
        n_init: int,
        init_params: str,
        random_state: Any,
        warm_start: bool,
        verbose: int,
        verbose_interval: int,
        device: str | torch.device,
        batch_size: int | str,
        stepwise_decay: float,
    ) -> None:
        self.n_components = n_components
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.device = device
        self.batch_size = batch_size
        self.stepwise_decay = stepwise_decay

    # ------------------------------------------------------------------ #
    # Template methods
    # ------------------------------------------------------------------ #
    @abstractmethod
    def _check_initial_parameters(self, n_features: int) -> dict[str, np.ndarray]:
        """Validate the user's ``*_init`` arrays; return them by name."""

    @abstractmethod
    def _parameters_from_init(
        self,
        estimated: Any | None,
        initial: dict[str, np.ndarray],
        shift: torch.Tensor,
    ) -> Any:
        """Override estimated initial parameters with the user's ``*_init``.

        ``estimated`` is ``None`` when the user gave every initial parameter;
        ``shift`` is the centring offset to subtract from user means.
        """

    @abstractmethod
    def _weighted_log_prob_function(
        self,
        parameters: Any,
        dtype: torch.dtype,
        workspace: ChunkWorkspace | None = None,
        negligible_log_ratio: float | None = None,
    ) -> WeightedLogProb:
        """Return a function computing ``log pi_k + log p(x | k)`` per chunk.

        With ``negligible_log_ratio``, entries certainly below the row's
        largest by more than ``-negligible_log_ratio`` nats may come back as
        ``-inf``: the E-step zeroes their responsibilities anyway, and
        ``argmax`` does not see them. Without it, every entry is exact.
        """

    @abstractmethod
    def _weighted_moments(
        self,
        X: torch.Tensor,
        weighted_resp: torch.Tensor,
        workspace: ChunkWorkspace | None = None,
        parameters: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """First- and second-moment sums of one chunk (see SufficientStatistics).

        With a workspace, called right after the log-probabilities of the
        same chunk were computed with it, so buffers the E-step filled may be
        read. ``parameters``, on the chunk's device, are those the
        responsibilities came from (None for initial responsibilities): their
        means are points near which second moments can be summed accurately.
        """

    def _rounding_dominates(
        self, statistics: SufficientStatistics, estimate: Any, dtype: torch.dtype
    ) -> bool:
        """True if statistics summed in ``dtype`` are too coarse for an M-step.

        ``estimate`` is the M-step's result from ``statistics``. Statistics
        summed in float64 are taken as exact. Subclasses whose M-step
        subtracts large sums from each other say where the rounding of
        ``dtype`` would dominate the result; the fit then redoes the pass in
        float64.
        """
        return False

    @abstractmethod
    def _m_step(self, statistics: SufficientStatistics) -> Any:
        """Return the parameters that maximise the expected log-likelihood."""

    @abstractmethod
    def _shift_means(self, parameters: Any, offset: torch.Tensor) -> Any:
        """Return the parameters with ``offset`` added to every mean."""

    @abstractmethod
    def _fitted_parameters(self, device: torch.device) -> Any:
        """Read the fitted attributes back as float64 parameters."""

    @abstractmethod
    def _set_fitted_parameters(self, parameters: Any, dtype: np.dtype) -> None:
        """Store parameters as the public numpy attributes, in ``dtype``."""

    @abstractmethod
    def _component_cholesky(self, device: torch.device) -> torch.Tensor:
        """Cholesky factors of the fitted covariances, (k, d, d) float64."""

    @abstractmethod
    def _n_parameters(self) -> int:
        """Return the number of free parameters in the model."""

    # ------------------------------------------------------------------ #
    # Fitting
    # ------------------------------------------------------------------ #
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> BaseEMMixture:
        """Estimate model parameters with the EM algorithm.

        The model is fitted ``n_init`` times and the parameters with the
        largest lower bound are kept. Each trial alternates E- and M-steps
        until the lower bound changes by less than ``tol`` or ``max_iter``
        iterations have run; otherwise a
        :class:`~sklearn.exceptions.ConvergenceWarning` is raised. With
        ``warm_start=True``, ``n_init`` is ignored after the first call and
        fitting continues from the previous solution.

        ``X`` may also be a ``numpy.memmap`` (read chunk by chunk, never
        copied), a :class:`dask.array.Array` (exact EM where its blocks
        live), or, inside an initialised ``torch.distributed`` process group,
        this rank's shard of the data (the statistics are all-reduced, so
        every rank ends with the model of all the shards); see the user
        guide's section on scaling out.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : Ignored
            Not used, present for API consistency by convention.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples. An integer weight ``m`` has
            the effect of repeating the row ``m`` times.

        Returns
        -------
        self : object
            The fitted mixture.
        """
        with unchanged_on_error(self):
            self._fit(X, sample_weight, predict=False)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_predict(
        self, X: Any, y: Any = None, sample_weight: Any = None
    ) -> np.ndarray:
        """Estimate model parameters using X and predict the labels for X.

        Runs :meth:`fit` and returns the most probable component of each
        sample; always equal to ``fit(X).predict(X)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : Ignored
            Not used, present for API consistency by convention.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Component labels (a Dask array for Dask input).
        """
        with unchanged_on_error(self):
            if is_dask_array(X):
                self._fit(X, sample_weight, predict=False)
                return self.predict(X)
            return self._fit(X, sample_weight, predict=True)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(
        self, X: Any, y: Any = None, sample_weight: Any = None
    ) -> BaseEMMixture:
        """Update the model with one mini-batch by stepwise (online) EM.

        The first call (on an unfitted mixture) initialises the parameters
        from its batch with ``init_params`` (or the ``*_init`` arrays).
        Every call then makes one E-step on the batch and moves the running
        sufficient statistics towards the batch's, per unit of weight::

            s <- (1 - eta_t) s + eta_t s_batch,    eta_t = (t + 2) ** -stepwise_decay

        with ``t`` the number of updates so far (``n_steps_``), followed by
        the M-step from ``s`` (Cappe & Moulines 2009; Liang & Klein 2009).
        After :meth:`fit`, it continues from the fitted model and the
        statistics of its last E-step. ``n_init`` and ``max_iter`` do not
        apply; one pass over a stream in batches of 10,000 rows of
        well-separated clusters ends close to the full-batch fit (see the
        user guide).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The batch. The first batch needs at least ``n_components`` rows.
        y : Ignored
            Not used, present for API consistency by convention.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the batch's samples.

        Returns
        -------
        self : object
            The updated mixture.
        """
        with unchanged_on_error(self), _em_context(self._threads_for(X)):
            self._partial_fit(X, sample_weight)
        return self

    def _partial_fit(self, X: Any, sample_weight: Any) -> None:
        first = not hasattr(self, "means_")
        if first:
            rows = self._fit_rows(X, sample_weight, reset=True)
            initial = self._check_initial_parameters(rows.n_features)
            random_state = broadcast_object(check_random_state(self.random_state))
            parameters, running = self._initial_parameters(rows, initial, random_state)
            n_steps, lower_bounds = 0, []
        else:
            shift = to_tensor(self._running_shift, resolve_device(self.device), ACCUMULATION_DTYPE)
            rows = self._fit_rows(X, sample_weight, reset=False, shift=shift)
            parameters = self._shift_means(self._fitted_parameters(rows.device), -rows.shift)
            running = (
                None
                if self._running_statistics is None
                else SufficientStatistics.from_numpy(self._running_statistics, rows.device)
            )
            n_steps, lower_bounds = self.n_steps_, list(self.lower_bounds_)
        batch = rows.sum_statistics(ChunkEStep(self, parameters, rows.dtype))
        if rows.dtype != ACCUMULATION_DTYPE and self._batch_too_coarse(batch, rows.dtype):
            batch = rows.sum_statistics(
                ChunkEStep(self, parameters, ACCUMULATION_DTYPE)
            )
        lower_bound = batch.mean_log_likelihood
        if not np.isfinite(lower_bound):
            raise ValueError(
                f"EM produced a non-finite log-likelihood ({lower_bound}) on this "
                "batch. Scale the input data, increase reg_covar, or decrease "
                "n_components."
            )
        batch = batch.per_unit_weight()
        if running is None:
            running = batch
        else:
            running = running.blend(batch, stepwise_step_size(n_steps, self.stepwise_decay))
        parameters = self._m_step(running)
        # Every attribute is set after the last step that can fail.
        self._set_fitted_parameters(self._shift_means(parameters, rows.shift), rows.X_dtype)
        self._store_running_statistics(running, rows.shift)
        self.n_steps_ = n_steps + 1
        self.lower_bound_ = lower_bound
        self.lower_bounds_ = lower_bounds + [lower_bound]

    def _batch_too_coarse(self, batch: SufficientStatistics, dtype: torch.dtype) -> bool:
        """Whether a partial_fit batch's statistics need summing in float64.

        Judged on the batch's own M-step; a batch whose covariances would not
        be positive on its own (collinear features in float32) is redone too.
        """
        try:
            return self._rounding_dominates(batch, self._m_step(batch), dtype)
        except ValueError:
            return True

    def _fit(self, X: Any, sample_weight: Any, predict: bool) -> np.ndarray | None:
        """Fit; with ``predict``, also return the labels of the training rows."""
        with _em_context(self._threads_for(X)):
            return self._fit_em(X, sample_weight, predict)

    def _fit_em(self, X: Any, sample_weight: Any, predict: bool) -> np.ndarray | None:
        rows = self._fit_rows(X, sample_weight, reset=True)
        initial = self._check_initial_parameters(rows.n_features)
        do_init = not (self.warm_start and hasattr(self, "means_"))
        n_init = self.n_init if do_init else 1
        # Every rank must draw the same initialisation.
        random_state = broadcast_object(check_random_state(self.random_state))
        workspace = ChunkWorkspace()

        best: dict[str, Any] | None = None
        for init in range(n_init):
            self._print_verbose_msg_init_beg(init)
            if do_init:
                parameters, _ = self._initial_parameters(rows, initial, random_state)
                lower_bound = -np.inf
            else:
                parameters = self._shift_means(
                    self._fitted_parameters(rows.device), -rows.shift
                )
                lower_bound = self.lower_bound_
            parameters, lower_bounds, converged, statistics = self._run_em(
                rows, parameters, lower_bound, workspace
            )
            if self.max_iter == 0:
                # As in scikit-learn: 0 iterations returns the initialisation.
                best = dict(
                    parameters=parameters,
                    lower_bound=-np.inf,
                    lower_bounds=[],
                    n_iter=0,
                    converged=False,
                    statistics=None,
                )
                continue
            lower_bound = lower_bounds[-1]
            self._print_verbose_msg_init_end(lower_bound, converged)
            if best is None or lower_bound > best["lower_bound"]:
                best = dict(
                    parameters=parameters,
                    lower_bound=lower_bound,
                    lower_bounds=lower_bounds,
                    n_iter=len(lower_bounds),
                    converged=converged,
                    statistics=statistics,
                )

        if not best["converged"] and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. "
                "Try different init parameters, or increase max_iter, "
                "tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        # The final E-step makes fit_predict(X) == fit(X).predict(X) for any
        # max_iter and tol; it runs before any attribute changes so a failure
        # leaves the estimator as it was. fit needs no labels and skips it.
        labels = None
        if predict:
            log_prob = self._weighted_log_prob_function(
                best["parameters"], rows.dtype, workspace, exp_floor(rows.dtype)[0]
            )
            labels = rows.map_chunks(lambda chunk: log_prob(chunk).argmax(dim=1))
        self._set_fitted_parameters(
            self._shift_means(best["parameters"], rows.shift), rows.X_dtype
        )
        self.converged_ = best["converged"]
        self.n_iter_ = best["n_iter"]
        self.lower_bound_ = best["lower_bound"]
        self.lower_bounds_ = best["lower_bounds"]
        # partial_fit continues from the statistics of the last E-step.
        statistics = best["statistics"]
        self._store_running_statistics(
            None if statistics is None else statistics.per_unit_weight(), rows.shift
        )
        self.n_steps_ = 0
        return labels

    def _fit_rows(
        self,
        X: Any,
        sample_weight: Any,
        *,
        reset: bool,
        shift: torch.Tensor | None = None,
    ) -> EMRows:
        """Validate the rows of a fit and place them (see ``_data.py``).

        Under a process group every rank validates its shard, and an error on
        any rank is raised on all of them, so that no rank waits forever in
        a collective the failed one never reaches.
        """
        device = resolve_device(self.device)
        if is_dask_array(X):
            from ._dask import DaskRows

            rows = DaskRows.from_estimator(self, X, sample_weight, reset=reset, shift=shift)
        else:
            streamed = is_memory_mapped(X)
            X, sample_weight = agree_on_errors(
                lambda: self._validated_shard(X, sample_weight, reset, shift)
            )
            rows = self._place_rows(X, sample_weight, device, streamed, shift)
        # A first fit needs n_components rows; later partial_fit batches do not.
        if shift is None:
            n_positive = rows.n_positive_weights
            if rows.n_samples < self.n_components:
                raise ValueError(
                    "Expected n_samples >= n_components "
                    f"but got n_components = {self.n_components}, "
                    f"n_samples = {rows.n_samples}. Fit on more samples or decrease "
                    "n_components."
                )
            if n_positive < self.n_components:
                raise ValueError(
                    f"sample_weight has {n_positive} non-zero entries but "
                    f"n_components={self.n_components}; give at least "
                    "n_components samples a positive weight."
                )
        return rows

    def _validated_shard(
        self, X: Any, sample_weight: Any, reset: bool, shift: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """This process's rows and weights, validated; no collective inside."""
        one_process = current_process_group() is None
        X = validate_data(
            self,
            X,
            dtype=[np.float64, np.float32],
            reset=reset,
            # A shard may hold a single row; the whole data set is checked
            # for n_components rows after the reduction.
            ensure_min_samples=2 if one_process and shift is None else 1,
        )
        sample_weight = _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True
        )
        return X, sample_weight

    def _place_rows(
        self,
        X: np.ndarray,
        sample_weight: np.ndarray,
        device: torch.device,
        streamed: bool,
        shift: torch.Tensor | None,
    ) -> EMRows:
        """Copy validated rows to the device, or stream them (see ``_data.py``)."""
        widths = set(all_gather_objects(X.shape[1]))
        if len(widths) > 1:
            raise ValueError(
                f"The ranks' shards have different numbers of features {sorted(widths)}; "
                "every rank must pass the same columns."
            )
        dtype = compute_dtype(X)
        if not streamed and device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            streamed = X.shape[0] * X.shape[1] * dtype.itemsize > _DEVICE_SHARE * free
        rows_class = StreamedRows if streamed else InMemoryRows
        return rows_class(
            X,
            sample_weight,
            device,
            dtype,
            self._chunk_size(X.shape[1], dtype, len(X)),
            shift,
        )

    def _chunk_size(
        self, n_features: int, dtype: torch.dtype, n_samples: int | None = None
    ) -> int:
        """Rows per chunk: ``batch_size``, or what 'auto' aims for.

        Data of at most two 'auto' chunks are one chunk: every chunk costs
        a fixed dozen operations, which dominate small fits.
        """
        if self.batch_size != "auto":
            return int(self.batch_size)
        row_bytes = self.n_components * n_features * dtype.itemsize
        rows = int(np.clip(_AUTO_CHUNK_BYTES // row_bytes, *_AUTO_CHUNK_ROWS))
        if n_samples is not None and n_samples <= 2 * rows:
            return max(1, n_samples)
        return rows

    def _threads_for(self, X: Any) -> int | None:
        """Intra-op threads for a fit on ``X``: one for small problems.

        Each torch operation on a small chunk is shorter than waking a thread
        pool; with more threads than idle cores, OpenMP's spinning workers
        then make small fits many times slower. None keeps torch's setting.
        """
        shape = getattr(X, "shape", None)
        if (
            is_dask_array(X)
            or shape is None
            or len(shape) != 2
            or resolve_device(self.device).type != "cpu"
        ):
            return None
        work = self._e_step_flops(shape[0], shape[1])
        return 1 if work < _SMALL_PROBLEM_FLOPS else None

    def _e_step_flops(self, n_samples: int, n_features: int) -> int:
        """Multiply-adds of one E-step, to within a constant factor."""
        return n_samples * self.n_components * n_features

    def _run_em(
        self,
        rows: EMRows,
        parameters: Any,
        lower_bound: float,
        workspace: ChunkWorkspace,
    ) -> tuple[Any, list[float], bool, SufficientStatistics | None]:
        """Iterate EM from ``parameters``.

        Returns the parameters, the bounds, whether EM converged, and the
        statistics of the last E-step.
        """
        lower_bounds: list[float] = []
        statistics = None
        dtype = rows.dtype
        for n_iter in range(1, self.max_iter + 1):
            previous = lower_bound
            statistics = rows.sum_statistics(ChunkEStep(self, parameters, dtype, workspace))
            lower_bound = statistics.mean_log_likelihood
            if not np.isfinite(lower_bound):
                raise ValueError(
                    f"EM produced a non-finite log-likelihood ({lower_bound}) at "
                    f"iteration {n_iter}. Scale the input data, increase "
                    "reg_covar, or decrease n_components."
                )
            try:
                estimate = self._m_step(statistics)
            except ValueError:
                if dtype == ACCUMULATION_DTYPE:
                    raise
                estimate = None
            if estimate is None or self._rounding_dominates(
                statistics, estimate, dtype
            ):
                # float32 second moments lose about 1e-7 of their size, which
                # can be most of a thin component's variance (one on a few
                # points, collinear features) or leave its covariance not
                # positive: redo the pass, and the rest of the fit, in float64.
                dtype = ACCUMULATION_DTYPE
                statistics = rows.sum_statistics(
                    ChunkEStep(self, parameters, dtype, workspace)
                )
                lower_bound = statistics.mean_log_likelihood
                estimate = self._m_step(statistics)
            parameters = estimate
            lower_bounds.append(lower_bound)
            change = lower_bound - previous
            self._print_verbose_msg_iter_end(n_iter, change)
            if abs(change) < self.tol:
                return parameters, lower_bounds, True, statistics
        return parameters, lower_bounds, False, statistics

    def _chunk_statistics(
        self,
        X: torch.Tensor,
        weighted_resp: torch.Tensor,
        log_likelihood: torch.Tensor,
        total_weight: torch.Tensor,
        workspace: ChunkWorkspace | None = None,
        parameters: Any = None,
    ) -> SufficientStatistics:
        weighted_sum, weighted_scatter = self._weighted_moments(
            X, weighted_resp, workspace, parameters
        )
        # The log-likelihood and total weight are float64 sums already.
        return SufficientStatistics(
            component_weight=_widened(weighted_resp.sum(dim=0)),
            weighted_sum=_widened(weighted_sum),
            weighted_scatter=_widened(weighted_scatter),
            log_likelihood=log_likelihood,
            total_weight=total_weight,
        )

    def _store_running_statistics(
        self, statistics: SufficientStatistics | None, shift: torch.Tensor
    ) -> None:
        """Keep what partial_fit continues from, as numpy (plain to pickle)."""
        self._running_shift = to_numpy(shift)
        self._running_statistics = None if statistics is None else statistics.to_numpy()

    def _initial_parameters(
        self,
        rows: EMRows,
        initial: dict[str, np.ndarray],
        random_state: np.random.RandomState,
    ) -> tuple[Any, SufficientStatistics | None]:
        """Initial parameters: the user's, completed from initial responsibilities.

        Also returns the per-unit-weight statistics of those responsibilities
        (None when the user gave every parameter), where stepwise EM starts.
        """
        if len(initial) == 3:
            return self._parameters_from_init(None, initial, rows.shift), None
        start = rows.initialization_rows(self.n_components, random_state)
        resp = to_tensor(
            self._initial_responsibilities(start.X, start.sample_weight, random_state),
            rows.device,
            ACCUMULATION_DTYPE,
        )
        resp *= start.weights[:, None]
        # In float64 even for float32 data: k-means++ and random_from_data
        # start from single points, whose covariance is reg_covar alone, and
        # float32 second moments would round it to a non-positive matrix.
        statistics = sum_statistics(
            self._chunk_statistics(
                start.X_centred[chunk].to(ACCUMULATION_DTYPE),
                resp[chunk],
                start.weights.new_zeros(()),
                start.weights[chunk].sum(),
            )
            for chunk in iter_row_chunks(
                len(start.X),
                self._chunk_size(rows.n_features, ACCUMULATION_DTYPE, len(start.X)),
            )
        )
        parameters = self._parameters_from_init(self._m_step(statistics), initial, rows.shift)
        return parameters, statistics.per_unit_weight()

    def _initial_responsibilities(
        self,
        X: np.ndarray,
        sample_weight: np.ndarray,
        random_state: np.random.RandomState,
    ) -> np.ndarray:
        """Responsibilities from ``init_params``, drawn as scikit-learn draws them.

        The draws from ``random_state`` are the same as scikit-learn's
        GaussianMixture makes, so an unweighted fit starts where it starts.
        """
        n_samples = X.shape[0]
        unweighted = bool(np.all(sample_weight == 1.0))
        resp = np.zeros((n_samples, self.n_components), dtype=X.dtype)
        if self.init_params == "kmeans":
            labels = (
                KMeans(
                    n_clusters=self.n_components, n_init=1, random_state=random_state
                )
                .fit(X, sample_weight=None if unweighted else sample_weight)
                .labels_
            )
            resp[np.arange(n_samples), labels] = 1
        elif self.init_params == "random":
            resp = random_state.uniform(size=(n_samples, self.n_components))
            resp /= resp.sum(axis=1, keepdims=True)
        elif self.init_params == "random_from_data":
            indices = random_state.choice(
                n_samples,
                size=self.n_components,
                replace=False,
                p=None if unweighted else sample_weight / sample_weight.sum(),
            )
            resp[indices, np.arange(self.n_components)] = 1
        else:
            _, indices = kmeans_plusplus(
                X,
                self.n_components,
                random_state=random_state,
                sample_weight=None if unweighted else sample_weight,
            )
            resp[indices, np.arange(self.n_components)] = 1
        return resp

    # ------------------------------------------------------------------ #
    # Inference
    # ------------------------------------------------------------------ #
    def _map_chunks(
        self,
        X: Any,
        reduce: Callable[[torch.Tensor], torch.Tensor],
        argmax_only: bool = False,
        n_columns: int | None = None,
        log_density: bool = False,
    ) -> np.ndarray:
        """Apply ``reduce`` to the weighted log-probabilities of each chunk.

        With ``argmax_only``, ``reduce`` only takes the argmax, so negligible
        entries may be skipped (see ``_weighted_log_prob_function``). Rows
        whose log-probability is -inf in every component (too far from the
        mixture for the dtype) raise a ValueError, unless ``log_density``:
        their log-density is then -inf. ``n_columns`` is the width of
        ``reduce``'s output (None for one value per row); a Dask array gives a
        Dask array of that shape, lazily.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            from ._dask import map_dask_blocks

            return map_dask_blocks(
                self,
                X,
                lambda block: self._map_chunks(block, reduce, argmax_only, None, log_density),
                n_columns=n_columns,
                integer=argmax_only,
            )
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        device = resolve_device(self.device)
        dtype = compute_dtype(X)
        # Rows are centred on the training data's mean, as during the fit:
        # the expanded distances (|x|^2 - 2 x.mu + |mu|^2) would otherwise
        # cancel for data far from the origin relative to their spread.
        shift = getattr(self, "_running_shift", None)
        shift = to_tensor(
            np.zeros(X.shape[1]) if shift is None else shift, device, ACCUMULATION_DTYPE
        )
        log_prob = self._weighted_log_prob_function(
            self._shift_means(self._fitted_parameters(device), -shift),
            dtype,
            ChunkWorkspace(),
            exp_floor(dtype)[0] if argmax_only else None,
        )

        def reduce_chunk(chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            weighted_log_prob = log_prob((chunk.to(ACCUMULATION_DTYPE) - shift).to(dtype))
            # Inputs and parameters are finite: a NaN is inf - inf from a
            # distance that overflowed, a log-probability of -inf.
            weighted_log_prob.masked_fill_(weighted_log_prob.isnan(), -math.inf)
            return reduce(weighted_log_prob), weighted_log_prob.amax(dim=1)

        with limited_threads(self._threads_for(X)):
            result, largest = map_row_chunks(
                reduce_chunk,
                X,
                device=device,
                dtype=dtype,
                chunk_size=self._chunk_size(X.shape[1], dtype, X.shape[0]),
            )
        if not log_density:
            check_finite_rows(np.isfinite(largest), X, self)
        return result

    def score_samples(self, X: Any) -> np.ndarray:
        """Compute the log-likelihood of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
            ``log p(x)`` of each sample under the model, in nats, in the
            dtype of ``X`` (float32 stays float32, all else float64); -inf
            for a sample so far from every component that its log-density is
            below the dtype's range.
        """
        return self._map_chunks(
            X, lambda log_prob: torch.logsumexp(log_prob, dim=1), log_density=True
        )

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Compute the per-sample average log-likelihood of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.
        y : Ignored
            Not used, present for API consistency by convention.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples in the average.

        Returns
        -------
        log_likelihood : float
            Weighted mean of :meth:`score_samples`, in nats per sample.
        """
        log_prob = self.score_samples(X)
        if is_dask_array(log_prob):
            from ._dask import dask_average

            return dask_average(log_prob, sample_weight)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, log_prob[:, None], ensure_non_negative=True
            )
        # Unweighted, this is scikit-learn's mean in the dtype of X.
        return float(np.average(log_prob, weights=sample_weight))

    def predict(self, X: Any) -> np.ndarray:
        """Predict the most probable component of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Component labels.
        """
        return self._map_chunks(
            X, lambda log_prob: log_prob.argmax(dim=1), argmax_only=True
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior probability of each component given each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)
            The responsibilities ``p(k | x)``; each row sums to 1.
        """
        return self._map_chunks(
            X, lambda log_prob: torch.softmax(log_prob, dim=1), n_columns=self.n_components
        )

    def transform(self, X: Any) -> np.ndarray:
        """Represent each sample by its component responsibilities.

        The same as :meth:`predict_proba`, so a mixture can be a step of a
        :class:`~sklearn.pipeline.Pipeline`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)
            The responsibilities ``p(k | x)``.
        """
        return self.predict_proba(X)

    @property
    def _n_features_out(self) -> int:
        return self.n_components

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Generate random samples from the fitted mixture.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples to generate.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The samples, in the dtype the model was fitted in.
        y : ndarray of shape (n_samples,)
            Their component labels, sorted by component.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling "
                "requires at least one sample: pass an int >= 1."
            )
        rng = check_random_state(self.random_state)
        weights = self.weights_.astype(np.float64)
        counts = rng.multinomial(n_samples, weights / weights.sum())
        labels = np.repeat(np.arange(self.n_components), counts)
        device = resolve_device(self.device)
        generator = torch.Generator(device=device)
        generator.manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        means = to_tensor(self.means_, device, ACCUMULATION_DTYPE)
        cholesky = self._component_cholesky(device)
        labels_tensor = torch.as_tensor(labels, device=device)
        pieces = []
        for rows in iter_row_chunks(
            n_samples, self._chunk_size(means.shape[1], ACCUMULATION_DTYPE)
        ):
            chunk_labels = labels_tensor[rows]
            noise = torch.randn(
                (len(chunk_labels), means.shape[1]),
                generator=generator,
                dtype=ACCUMULATION_DTYPE,
                device=device,
            )
            pieces.append(
                means[chunk_labels]
                + torch.einsum("nij,nj->ni", cholesky[chunk_labels], noise)
            )
        return to_numpy(torch.cat(pieces)).astype(self.means_.dtype), labels

    def bic(self, X: Any, sample_weight: Any = None) -> float:
        """Bayesian information criterion of the model on X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples; the sample size is their sum.

        Returns
        -------
        bic : float
            ``-2 log L + n_parameters log N``; the lower the better.
        """
        return self._penalised_deviance(X, sample_weight, np.log)

    def aic(self, X: Any, sample_weight: Any = None) -> float:
        """Akaike information criterion of the model on X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples; the sample size is their sum.

        Returns
        -------
        aic : float
            ``-2 log L + 2 n_parameters``; the lower the better.
        """
        return self._penalised_deviance(X, sample_weight, lambda n_samples: 2.0)

    def _penalised_deviance(
        self, X: Any, sample_weight: Any, penalty: Callable[[float], float]
    ) -> float:
        """``-2 log L + penalty(N) * n_parameters``, N the (weighted) sample size."""
        n_samples = (
            float(len(X)) if sample_weight is None else float(np.sum(sample_weight))
        )
        deviance = -2 * self.score(X, sample_weight=sample_weight) * n_samples
        return deviance + penalty(n_samples) * self._n_parameters()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------ #
    # Verbose output, as scikit-learn prints it
    # ------------------------------------------------------------------ #
    def _print_verbose_msg_init_beg(self, n_init: int) -> None:
        if self.verbose >= 1 and is_main_process():
            print(f"Initialization {n_init}")
        if self.verbose >= 2:
            self._init_prev_time = time()
            self._iter_prev_time = self._init_prev_time

    def _print_verbose_msg_iter_end(self, n_iter: int, change: float) -> None:
        if n_iter % self.verbose_interval != 0 or not is_main_process():
            return
        if self.verbose == 1:
            print(f"  Iteration {n_iter}")
        elif self.verbose >= 2:
            now = time()
            print(
                f"  Iteration {n_iter}\t time lapse {now - self._iter_prev_time:.5f}s"
                f"\t ll change {change:.5f}"
            )
            self._iter_prev_time = now

    def _print_verbose_msg_init_end(self, lower_bound: float, converged: bool) -> None:
        message = "converged" if converged else "did not converge"
        if not is_main_process():
            return
        if self.verbose == 1:
            print(f"Initialization {message}.")
        elif self.verbose >= 2:
            elapsed = time() - self._init_prev_time
            print(
                f"Initialization {message}. time lapse {elapsed:.5f}s\t lower bound"
                f" {lower_bound:.5f}."
            )
