"""What every neural estimator shares: parameters, the fit template, pickling,
batched inference.

A subclass fills four template methods and inherits the rest:

* ``_build_model(n_features)``: the ``nn.Module`` to train (built on CPU in
  float64 under a fixed seed; the base class moves and casts it);
* ``_build_objective()``: the :class:`~sklearn_vae.neural._engine.Objective`;
* ``_store_model(model)``: set the fitted attributes (``encoder_``, ...);
* ``_fitted_model()``: the model assembled from those attributes.

Optional hooks: ``_check_training_input(X)`` (domain checks such as values in
[0, 1]), ``_training_data(X, device, dtype)`` (per-row extras such as a
neighbour graph), ``_initialize_model(model, data, seed)`` (data-dependent
initialisation or pretraining of a new model), ``_monitor_from_epoch()`` and
``_callbacks()``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from .._backend import (
    DEVICE_CONSTRAINT,
    check_finite_rows,
    compute_dtype,
    iter_row_chunks,
    map_row_chunks,
    resolve_device,
    seed_from_random_state,
    seeded_module_init,
    to_tensor,
    unchanged_on_error,
)
from .._distributed import agree_on_errors, broadcast_object
from ._engine import Callback, Objective, TrainingConfig, TrainingData, TrainingEngine
from ._modules import ACTIVATIONS

__all__ = ["NeuralEstimatorBase", "derive_seed"]

# Inference runs in row chunks whose widest intermediate tensor holds at most
# this many elements (64 MiB in float64), whatever the number of rows.
_INFERENCE_BUDGET_ELEMENTS = 2**23

# scikit-learn's MLP: mini-batches of min(200, n_samples) for batch_size='auto'.
_AUTO_BATCH_SIZE = 200

# Largest feature standard deviations outside this range make a Gaussian fit
# warn (see _check_feature_scale).
_UNIT_SCALE_RANGE = (0.1, 10.0)


def derive_seed(seed: int, *keys: int) -> int:
    """Return a 63-bit seed derived from ``seed`` and integer ``keys``.

    Distinct keys give independent streams (``numpy.random.SeedSequence``),
    e.g. one per ``partial_fit`` call or one for inference noise.

    Parameters
    ----------
    seed : int
    *keys : int

    Returns
    -------
    int

    Examples
    --------
    >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2)
    True
    """
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> 1)


def _holds_torch(value: Any) -> bool:
    if isinstance(value, (nn.Module, torch.Tensor)):
        return True
    if isinstance(value, dict):
        return any(_holds_torch(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_torch(v) for v in value)
    return False


def _check_feature_scale(estimator: BaseEstimator, X: np.ndarray) -> None:
    """Refuse training data that overflow; warn about features far from unit scale.

    The networks train well on features of standard deviation about 1 and the
    Gaussian likelihood floors its variance at 1e-6 in the units of X: on
    blobs with a 16-unit network, features scaled by 30 cost VAETransformer
    9 nats per row and by 100 gave absurd scores (-8e20), and features scaled
    by 0.1 took VariationalGMMPrior from a perfect clustering (ARI 1.0) to
    0.55. Standardising internally would change what ``encoder_`` and
    ``decoder_`` compute, so the user is told to standardise instead.
    """
    name = type(estimator).__name__
    largest = max(float(X.max()), -float(X.min()))
    # Squared distances between rows (neighbour graphs, Gaussian likelihoods)
    # reach 4 * n_features * largest**2.
    if largest > np.sqrt(np.finfo(X.dtype).max / (4 * X.shape[1])):
        raise ValueError(
            f"X has values up to {largest:.3g} in absolute value: their squares "
            f"overflow {X.dtype}, so {name} cannot be trained on them. "
            f"Standardise the features first, e.g. make_pipeline(StandardScaler(), "
            f"{name}(...))."
        )
    if getattr(estimator, "likelihood", None) != "gaussian" or largest == 0:
        return  # Bernoulli data lie in [0, 1] by definition.
    # In units of the largest value, so that tiny data do not underflow.
    mean = X.mean(axis=0) / largest
    squares = sum(
        np.square(X[rows] / largest - mean).sum(axis=0)
        for rows in iter_row_chunks(len(X), 4096)
    )
    spread = largest * float(np.sqrt(np.max(squares) / len(X)))
    low, high = _UNIT_SCALE_RANGE
    if spread > high or 0 < spread < low:
        warnings.warn(
            f"The features of X are far from unit scale (the largest standard "
            f"deviation is {spread:.3g}): {name}'s networks train well on "
            "features of standard deviation about 1, and its Gaussian "
            "likelihood floors the variance at 1e-6, so this fit may diverge or "
            "stop far from a good model. Standardise X first, e.g. "
            f"make_pipeline(StandardScaler(), {name}(...)).",
            UserWarning,
            # User code, fit's scikit-learn wrapper, fit, _fit, here.
            stacklevel=5,
        )


class NeuralEstimatorBase(BaseEstimator):
    """Base class of the estimators trained by the shared training engine.

    Not for direct use. Subclasses list it after their mixins and extend
    ``_parameter_constraints``.

    The parameters it validates (names follow scikit-learn's MLP):
    ``hidden_layer_sizes``, ``activation``, ``learning_rate_init``,
    ``learning_rate``, ``batch_size``, ``max_iter``, ``max_grad_norm``,
    ``early_stopping``, ``validation_fraction``, ``n_iter_no_change``, ``tol``,
    ``alpha``, ``device``, ``random_state``, ``verbose``, ``warm_start``.
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "learning_rate": [StrOptions({"constant", "adaptive"})],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "device": DEVICE_CONSTRAINT,
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    # -- template methods -------------------------------------------------
    def _build_model(self, n_features: int) -> nn.Module:
        raise NotImplementedError

    def _build_objective(self) -> Objective:
        raise NotImplementedError

    def _store_model(self, model: nn.Module) -> None:
        raise NotImplementedError

    def _fitted_model(self) -> nn.Module:
        raise NotImplementedError

    def _check_training_input(self, X: np.ndarray) -> None:
        """Raise ValueError if ``X`` is outside the model's domain."""

    def _monitor_from_epoch(self) -> int:
        return 0

    def _callbacks(self) -> list[Callback]:
        return []

    def _training_data(
        self, X: np.ndarray, device: torch.device, dtype: torch.dtype
    ) -> TrainingData:
        """Return the engine's data: ``X`` plus any per-row arrays (a graph)."""
        return TrainingData(to_tensor(X, device=device, dtype=dtype))

    def _initialize_model(self, model: nn.Module, data: TrainingData, seed: int) -> None:
        """Prepare a freshly built model before training (e.g. pretraining).

        Not called when a fit resumes (``warm_start``, ``partial_fit``).
        """

    # -- fitting ----------------------------------------------------------
    def _hidden_layer_sizes(self) -> tuple[int, ...]:
        sizes = np.atleast_1d(np.asarray(self.hidden_layer_sizes))
        if sizes.ndim != 1 or not np.issubdtype(sizes.dtype, np.integer) or (
            sizes.size and sizes.min() < 1
        ):
            raise ValueError(
                "hidden_layer_sizes must be a positive int or a sequence of "
                f"positive ints, got {self.hidden_layer_sizes!r}."
            )
        return tuple(int(size) for size in sizes)

    def _training_config(self, n_samples: int, *, incremental: bool) -> TrainingConfig:
        batch_size = (
            min(_AUTO_BATCH_SIZE, n_samples)
            if self.batch_size == "auto"
            else self.batch_size
        )
        return TrainingConfig(
            learning_rate=self.learning_rate_init,
            weight_decay=self.alpha,
            batch_size=batch_size,
            max_epochs=1 if incremental else self.max_iter,
            max_grad_norm=self.max_grad_norm,
            learning_rate_schedule=self.learning_rate,
            # partial_fit sees one chunk once: nothing to hold out or monitor.
            early_stopping=self.early_stopping and not incremental,
            validation_fraction=self.validation_fraction,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            monitor_from_epoch=self._monitor_from_epoch(),
            verbose=self.verbose,
        )

    def _fit(self, X: Any, *, incremental: bool) -> NeuralEstimatorBase:
        """Train from scratch, or continue if fitted and warm/incremental."""
        resume = hasattr(self, "n_iter_") and (incremental or self.warm_start)
        with unchanged_on_error(self):
            # Under a process group a bad shard fails every rank (see
            # sklearn_vae._distributed); in one process this is plain.
            X = agree_on_errors(lambda: self._validated_training_input(X, resume))
            if resume:
                model = self._fitted_model()
                base_seed, start_epoch = self._seed, self.n_iter_
                history, optimizer_state = list(self.history_), self._optimizer_state
            else:
                # Every rank draws its batches and noise from rank 0's seed.
                base_seed = broadcast_object(
                    seed_from_random_state(check_random_state(self.random_state))
                )
                start_epoch, history, optimizer_state = 0, [], None
                with seeded_module_init(base_seed):
                    model = self._build_model(X.shape[1]).double()
                model.to(device=resolve_device(self.device), dtype=compute_dtype(X))
            parameter = next(model.parameters())
            engine = TrainingEngine(
                model,
                self._build_objective(),
                self._training_config(X.shape[0], incremental=incremental),
                seed=derive_seed(base_seed, start_epoch),
                start_epoch=start_epoch,
                optimizer_state=optimizer_state,
                callbacks=self._callbacks(),
            )
            data = self._training_data(X, parameter.device, parameter.dtype)
            if not resume:
                self._initialize_model(model, data, base_seed)
            result = engine.fit(data)
        self._store_model(model)
        self._seed = base_seed
        self._device = str(parameter.device)
        self._optimizer_state = result.optimizer_state
        self.history_ = history + result.history
        self.loss_curve_ = [record["loss"] for record in self.history_]
        self.n_iter_ = start_epoch + result.n_epochs
        self.best_loss_ = result.best_loss
        if not (incremental or result.converged or result.interrupted):
            warnings.warn(
                f"Maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _validated_training_input(self, X: Any, resume: bool) -> np.ndarray:
        X = validate_data(self, X, reset=not resume, dtype=[np.float64, np.float32])
        self._check_training_input(X)
        _check_feature_scale(self, X)
        return X

    # -- inference --------------------------------------------------------
    def _check_inference_input(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    def _map_rows(
        self,
        function: Callable[[nn.Module, torch.Tensor], torch.Tensor],
        X: np.ndarray,
        *,
        elements_per_row: int,
        log_density: bool = False,
    ) -> np.ndarray:
        """Apply ``function(model, rows)`` to ``X`` in chunks; keep X's dtype.

        ``elements_per_row`` is the size of the widest intermediate tensor per
        input row; it sets the chunk size so memory does not grow with the
        number of rows. Rows with a non-finite result (too far from the
        training data for the dtype) raise a ValueError, unless
        ``log_density``: their log-density (or bound) is then -inf.
        """
        model = self._fitted_model().eval()
        parameter = next(model.parameters())
        out = map_row_chunks(
            lambda rows: function(model, rows),
            X,
            device=parameter.device,
            dtype=parameter.dtype,
            chunk_size=max(1, _INFERENCE_BUDGET_ELEMENTS // max(1, elements_per_row)),
        )
        out = out.astype(X.dtype, copy=False)
        if log_density:
            # Finite inputs and weights: a NaN is inf - inf from an overflow
            # of a row far outside the data, whose log-density is -inf.
            return np.where(np.isnan(out), -np.inf, out)
        check_finite_rows(np.isfinite(out.reshape(len(out), -1)).all(axis=1), X, self)
        return out

    def _decode_latent(self, Z: Any, n_latent: int, parameter_name: str) -> np.ndarray:
        """``inverse_transform``'s work: validate latent points, return ``E[x|z]``.

        ``n_latent`` is the latent width the estimator's ``parameter_name``
        sets; the result keeps the dtype of ``Z``.
        """
        check_is_fitted(self)
        Z = check_array(Z, dtype=[np.float64, np.float32])
        if Z.shape[1] != n_latent:
            raise ValueError(
                f"X has {Z.shape[1]} features, but {type(self).__name__}."
                f"inverse_transform is expecting {parameter_name}={n_latent} "
                "latent features as input."
            )
        return self._map_rows(
            lambda model, rows: model.decoder.mean(rows),
            Z,
            elements_per_row=self._widest_layer(n_latent),
        )

    def _widest_layer(self, n_latent: int) -> int:
        """Width of the widest tensor a row passes through (for chunking)."""
        return max(self.n_features_in_, n_latent, *self._hidden_layer_sizes())

    # -- pickling ---------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # Torch objects are saved with torch.save so that they can be mapped
        # to another device when loaded (skorch's approach).
        # object.__getstate__ may return the instance's own __dict__: copy it.
        state = dict(super().__getstate__())
        torch_state = {k: state.pop(k) for k in list(state) if _holds_torch(state[k])}
        if torch_state:
            buffer = io.BytesIO()
            torch.save(torch_state, buffer)
            state["_torch_state"] = buffer.getvalue()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        payload = state.pop("_torch_state", None)
        if payload is not None:
            device = self._loadable_device(state.get("_device", "cpu"))
            state["_device"] = str(device)
            state.update(
                torch.load(io.BytesIO(payload), map_location=device, weights_only=False)
            )
        super().__setstate__(state)

    @staticmethod
    def _loadable_device(saved: str) -> torch.device:
        try:
            return resolve_device(saved)
        except ValueError:
            warnings.warn(
                f"This estimator was fitted on device {saved!r}, which is not "
                "available here; its networks were loaded on the CPU.",
                UserWarning,
                stacklevel=4,
            )
            return torch.device("cpu")
