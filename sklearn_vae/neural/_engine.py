"""The one training engine every neural estimator trains with.

API summary
-----------
A *model* is any ``torch.nn.Module`` (encoder, decoder and whatever extra
networks an objective needs, such as a critic or a discriminator). An
*objective* is a strategy object (a subclass of :class:`Objective`) that turns
the model and a :class:`Batch` into a dict of named loss terms::

    terms = objective.loss_terms(model, batch, context)
    # {"loss": total to minimise, "reconstruction": ..., "kl": ..., ...}

Every term is a scalar tensor, a mean per sample in nats; every term is
logged in ``history`` under its name. Adversarial objectives declare more than
one :class:`UpdateStep` (``objective.update_steps(model)``): each step has its
own parameters, its own optimiser and the name of the term it minimises; one
training step runs them in order, each with a fresh forward pass
(``context.step`` tells the objective which one is running)::

    [UpdateStep("discriminator", "discriminator_loss", disc_params),
     UpdateStep("model", "loss", vae_params)]

:class:`TrainingEngine` owns the loop and is split into small overridable
steps, in call order::

    fit(data, n_epochs)
      configure_optimizers() / configure_schedulers()   (in __init__)
      split_validation(n_samples)                       (if early stopping)
      callbacks: on_train_begin(engine)
      per epoch:
        callbacks: on_epoch_begin(engine, epoch)
        train_epoch(data, indices) -> iter_batches() -> train_step(batch)
        diagnose(data, indices)    -> objective.diagnostics(...) on one fixed
                                      batch, for costly per-epoch estimates
        validate(data, indices)    -> validation_step(batch)
        callbacks: on_epoch_end(engine, record)   (may edit the model, add keys
                                                   to record, set stop_training)
        end_epoch(record): stopping rule, best weights (as the callbacks left
                           them), LR schedule
      callbacks: on_train_end(engine, result)

``train_step`` is the only place that runs forward, backward, gradient
clipping and the optimiser step.

Data-parallel training: inside an initialised ``torch.distributed`` process
group (a script launched with ``torchrun``) the rows given to ``fit`` are
this rank's shard. The engine then broadcasts rank 0's weights when ``fit``
starts, averages the gradients over the ranks in ``train_step`` (one
all-reduce per update step), gives every rank the same number of steps per
epoch (a rank with fewer rows repeats some, as torch's ``DistributedSampler``
pads), and all-reduces the logged terms, so the history, the early-stopping
decision and the weights are the same on every rank. Only rank 0 shows a
progress bar. ``batch_size`` is per rank.

Batches are built from index tensors (:meth:`TrainingData.batch`): ``batch.X``
holds the rows, ``batch.indices`` their row numbers in the full data set, and
``batch.take(name)`` fetches any other per-row array registered on the
:class:`TrainingData` (for example neighbour indices), so an objective can
encode other rows, ``data.X[neighbours]``, within a step.

Randomness: the engine derives three ``torch.Generator`` s from ``seed`` (batch
order, the validation split, the objective's noise). The global torch RNG is
never read, so the same seed gives bit-identical training on CPU and the
caller's random state is untouched.

Faults: a non-finite loss raises :class:`NonFiniteLossError`, and any other
exception raised during training (by the objective or a callback) propagates,
after putting the model back to its state at the start of ``fit``;
``KeyboardInterrupt`` stops training, restores the best weights seen so far and
warns.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._backend import TaskCancelled, make_generator
from .._distributed import (
    all_reduce_max,
    all_reduce_sum,
    broadcast_tensors_,
    current_process_group,
    is_main_process,
)

__all__ = [
    "Batch",
    "Callback",
    "NonFiniteLossError",
    "Objective",
    "StepContext",
    "StopWhenCancelled",
    "TrainingConfig",
    "TrainingData",
    "TrainingEngine",
    "TrainingResult",
    "UpdateStep",
]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss.

    Raised by :meth:`TrainingEngine.fit` after the model has been restored to
    its state at the start of the call.
    """


class TrainingData:
    """The rows to train on, on the training device, plus per-row extras.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Already on the device and in the compute dtype.
    **arrays : torch.Tensor
        Other per-row tensors (first axis ``n_samples``), such as a neighbour
        graph, fetched for a batch by :meth:`Batch.take`.

    Attributes
    ----------
    X : torch.Tensor
    arrays : dict of str to torch.Tensor
    """

    def __init__(self, X: torch.Tensor, **arrays: torch.Tensor) -> None:
        for name, array in arrays.items():
            if array.shape[0] != X.shape[0]:
                raise ValueError(
                    f"Per-row array {name!r} has {array.shape[0]} rows, X has "
                    f"{X.shape[0]}."
                )
        self.X = X
        self.arrays = dict(arrays)

    def __len__(self) -> int:
        return self.X.shape[0]

    @property
    def device(self) -> torch.device:
        """The device the rows live on."""
        return self.X.device

    def batch(self, indices: torch.Tensor) -> Batch:
        """Return the batch of the rows ``indices`` (a 1-D int64 tensor)."""
        return Batch(indices=indices, X=self.X[indices], data=self)


@dataclass
class Batch:
    """A mini-batch: rows of the training data and their row numbers.

    Attributes
    ----------
    indices : torch.Tensor of shape (batch_size,)
        Row numbers in the full :class:`TrainingData`.
    X : torch.Tensor of shape (batch_size, n_features)
    data : TrainingData
        The full data set, so objectives can reach other rows.
    """

    indices: torch.Tensor
    X: torch.Tensor
    data: TrainingData

    def __len__(self) -> int:
        return self.indices.shape[0]

    def take(self, name: str) -> torch.Tensor:
        """Return this batch's rows of the per-row array ``name``."""
        return self.data.arrays[name][self.indices]


@dataclass
class StepContext:
    """What an objective may need besides the model and the batch.

    Attributes
    ----------
    epoch : int
        Zero-based epoch counted over every ``fit`` of the estimator (so a KL
        warm-up continues across ``warm_start`` and ``partial_fit``).
    generator : torch.Generator
        The only source of noise an objective may use (on the batch's device).
    training : bool
        False while computing validation terms (under ``torch.no_grad``).
    step : str or None
        Name of the :class:`UpdateStep` being taken; None during validation.
    """

    epoch: int
    generator: torch.Generator
    training: bool
    step: str | None


@dataclass(frozen=True)
class UpdateStep:
    """One optimiser's share of a training step.

    Attributes
    ----------
    name : str
        Names the optimiser (and its entry in saved optimiser state).
    loss : str
        The term of ``loss_terms`` this step minimises.
    parameters : tuple of torch.nn.Parameter
        What this step updates.
    """

    name: str
    loss: str
    parameters: tuple[nn.Parameter, ...]


class Objective:
    """Base class of the training objectives (strategies of the engine).

    Subclasses implement :meth:`loss_terms`; objectives with adversarial parts
    also override :meth:`update_steps`.
    """

    def update_steps(self, model: nn.Module) -> list[UpdateStep]:
        """Return the optimiser steps of one training step, in order.

        The default is one step that minimises ``"loss"`` over every
        parameter of the model.
        """
        return [UpdateStep("model", "loss", tuple(model.parameters()))]

    def loss_terms(
        self, model: nn.Module, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        """Return the named scalar loss terms of ``batch``.

        Must contain the ``loss`` name of every update step. During validation
        (``context.training`` is False) the terms should be comparable across
        epochs, e.g. without annealing weights.
        """
        raise NotImplementedError

    def diagnostics(
        self, model: nn.Module, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        """Return quantities to log once per epoch (none by default).

        Called under ``torch.no_grad`` after each training epoch on the same
        fixed batch of training rows, so an expensive estimate (e.g. of the
        mutual information I(x; z)) costs one evaluation per epoch instead of
        one per step.
        """
        return {}


class Callback:
    """Hooks around the training loop; every method is a no-op by default."""

    def on_train_begin(self, engine: TrainingEngine) -> None:
        """Called once before the first epoch of a ``fit`` call."""

    def on_epoch_begin(self, engine: TrainingEngine, epoch: int) -> None:
        """Called before each epoch (``epoch`` is the global zero-based index)."""

    def on_epoch_end(self, engine: TrainingEngine, record: dict[str, Any]) -> None:
        """Called after each epoch with its history record (editable).

        Set ``engine.stop_training = True`` to stop after this epoch.
        """

    def on_train_end(self, engine: TrainingEngine, result: TrainingResult) -> None:
        """Called once after training stopped, best weights restored."""


class StopWhenCancelled(Callback):
    """Abandon training before an epoch once ``cancelled`` is set.

    For a fit that runs as one task of
    :func:`~sklearn_vae._backend.run_concurrently`: when another task fails,
    or the caller is interrupted, this one stops within an epoch. It raises
    :class:`~sklearn_vae._backend.TaskCancelled`, so the engine puts the
    model back as the call found it, as for any other failure.

    Parameters
    ----------
    cancelled : threading.Event
    """

    def __init__(self, cancelled: threading.Event) -> None:
        self.cancelled = cancelled

    def on_epoch_begin(self, engine: TrainingEngine, epoch: int) -> None:
        if self.cancelled.is_set():
            raise TaskCancelled(f"training cancelled before epoch {epoch + 1}")


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of the training loop.

    Attributes
    ----------
    learning_rate : float
        Adam's initial step size.
    weight_decay : float
        L2 penalty on weight matrices (not biases), as Adam's weight decay:
        adds ``weight_decay / 2 * ||W||^2`` to the per-sample loss.
    batch_size : int
        Rows per training step (clipped to the number of training rows).
    max_epochs : int
        Epochs in one ``fit`` call.
    max_grad_norm : float or None
        Clip the gradient norm of each update step to this; None disables.
    learning_rate_schedule : {'constant', 'adaptive'}
        'adaptive' divides the learning rate by 5 whenever the monitored loss
        fails to improve by ``tol`` for two consecutive epochs (scikit-learn's
        MLP rule).
    early_stopping : bool
        Monitor the loss on a held-out ``validation_fraction`` and restore the
        best weights at the end; otherwise monitor the training loss.
    validation_fraction : float
    n_iter_no_change : int
        Stop after this many epochs without an improvement larger than ``tol``.
    tol : float
    monitor_from_epoch : int
        Epochs (global index) before which the stopping rule is not applied,
        e.g. during a KL warm-up whose loss is not comparable across epochs.
    verbose : int
        0 is silent; otherwise a progress bar over epochs shows the losses.
    """

    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 200
    max_epochs: int = 200
    max_grad_norm: float | None = None
    learning_rate_schedule: str = "constant"
    early_stopping: bool = False
    validation_fraction: float = 0.1
    n_iter_no_change: int = 10
    tol: float = 1e-4
    monitor_from_epoch: int = 0
    verbose: int = 0


@dataclass
class TrainingResult:
    """What one ``fit`` call of the engine produced.

    Attributes
    ----------
    history : list of dict
        One record per completed epoch: ``epoch`` (1-based, global), every
        training term by name, ``val_<term>`` for validation terms,
        ``learning_rate`` and ``time`` (seconds), plus keys callbacks added.
    n_epochs : int
        Epochs completed in this call.
    best_loss : float
        Best monitored loss (validation loss under early stopping, otherwise
        training loss); ``inf`` if no epoch was monitored.
    converged : bool
        Whether the stopping rule (or a callback) ended training before
        ``max_epochs``.
    interrupted : bool
        Whether a ``KeyboardInterrupt`` ended training.
    optimizer_state : dict
        ``state_dict()`` of each optimiser by update-step name, for resuming.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    n_epochs: int = 0
    best_loss: float = math.inf
    converged: bool = False
    interrupted: bool = False
    optimizer_state: dict[str, Any] = field(default_factory=dict)


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _split_decay(parameters: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    # scikit-learn's MLP penalises weights, not biases: only matrices decay.
    # Without decay one group suffices, and each extra group costs a pass of
    # the optimiser's Python loop per step.
    parameters = list(parameters)
    if weight_decay == 0:
        return [{"params": parameters, "weight_decay": 0.0}]
    matrices = [p for p in parameters if p.ndim >= 2]
    vectors = [p for p in parameters if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": weight_decay}]
    if vectors:
        groups.append({"params": vectors, "weight_decay": 0.0})
    return groups


class TrainingEngine:
    """Mini-batch training of a model under an objective.

    Parameters
    ----------
    model : torch.nn.Module
        Already on ``device``, in the compute dtype. Trained in place.
    objective : Objective
    config : TrainingConfig
    seed : int
        From :func:`sklearn_vae._backend.seed_from_random_state`.
    start_epoch : int, default=0
        Global index of the first epoch (epochs already trained).
    optimizer_state : mapping, default=None
        ``TrainingResult.optimizer_state`` of an earlier call, to resume Adam's
        moments (``warm_start``, ``partial_fit``).
    callbacks : sequence of Callback, default=()

    Attributes
    ----------
    optimizers : dict of str to torch.optim.Optimizer
        One per update step.
    schedulers : list
        Learning-rate schedulers (empty for a constant rate).
    stop_training : bool
        Set by callbacks to end training after the current epoch.
    epoch : int
        Global zero-based index of the current epoch.
    data : TrainingData or None
        The data of the running :meth:`fit` call (for callbacks that need a
        pass over it); None before the first.
    train_indices : torch.Tensor or None
        The rows of ``data`` trained on (all but the validation rows).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        config: TrainingConfig,
        *,
        seed: int,
        start_epoch: int = 0,
        optimizer_state: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.model = model
        self.objective = objective
        self.config = config
        self.callbacks = list(callbacks)
        self.device = next(model.parameters()).device
        self.process_group = current_process_group()
        # Each rank shuffles, splits and draws noise independently; rank 0
        # (and a single process) keeps the single-process streams.
        rank = 0 if self.process_group is None else self.process_group.rank
        entropy = seed if rank == 0 else [seed, rank]
        shuffle_seed, split_seed, noise_seed, validation_seed = (
            np.random.SeedSequence(entropy).generate_state(4, dtype=np.uint64) >> 1
        ).tolist()
        self._shuffle_generator = make_generator(shuffle_seed, "cpu")
        self._split_seed = split_seed
        self._validation_seed = validation_seed
        self.generator = make_generator(noise_seed, self.device)
        self.epoch = start_epoch
        self.stop_training = False
        self.data: TrainingData | None = None
        self.train_indices: torch.Tensor | None = None
        self.update_steps = objective.update_steps(model)
        self.optimizers = self.configure_optimizers()
        if optimizer_state:
            for name, optimizer in self.optimizers.items():
                # load_state_dict keeps the caller's moment tensors and Adam
                # then updates them in place: a fit that fails would corrupt
                # the state the estimator resumes from next time.
                optimizer.load_state_dict(copy.deepcopy(optimizer_state[name]))
        self.schedulers = self.configure_schedulers()

    # -- construction -----------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Build one Adam optimiser per update step."""
        return {
            # foreach: torch's multi-tensor update, one kernel per operation
            # for all parameters instead of one per parameter.
            step.name: torch.optim.Adam(
                _split_decay(step.parameters, self.config.weight_decay),
                lr=self.config.learning_rate,
                foreach=True,
            )
            for step in self.update_steps
        }

    def configure_schedulers(self) -> list[Any]:
        """Build the learning-rate schedulers the config asks for."""
        if self.config.learning_rate_schedule == "constant":
            return []
        return [
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=0.2,
                patience=1,
                threshold=self.config.tol,
                threshold_mode="abs",
            )
            for optimizer in self.optimizers.values()
        ]

    # -- batching ---------------------------------------------------------
    def split_validation(self, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Split row numbers into training and validation, reproducibly.

        Returns
        -------
        train_indices, validation_indices : torch.Tensor
            On the training device.

        Raises
        ------
        ValueError
            If either part would be empty.
        """
        n_validation = math.ceil(self.config.validation_fraction * n_samples)
        if n_validation < 1 or n_samples - n_validation < 1:
            raise ValueError(
                f"early_stopping needs at least one training and one validation "
                f"sample, but validation_fraction={self.config.validation_fraction}"
                f" of n_samples={n_samples} leaves {n_validation} validation and "
                f"{n_samples - n_validation} training samples. Use more samples, "
                "another validation_fraction, or early_stopping=False."
            )
        order = torch.randperm(
            n_samples, generator=make_generator(self._split_seed, "cpu")
        ).to(self.device)
        return order[n_validation:], order[:n_validation]

    def iter_batches(
        self, indices: torch.Tensor, *, shuffle: bool
    ) -> Iterator[torch.Tensor]:
        """Yield index tensors of at most ``batch_size`` rows covering ``indices``."""
        if shuffle:
            order = torch.randperm(len(indices), generator=self._shuffle_generator)
            indices = indices[order.to(indices.device)]
        yield from indices.split(max(1, self.config.batch_size))

    # -- one step ---------------------------------------------------------
    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Run every update step on ``batch``; return the detached terms."""
        logged: dict[str, torch.Tensor] = {}
        for step in self.update_steps:
            context = StepContext(self.epoch, self.generator, True, step.name)
            terms = self.objective.loss_terms(self.model, batch, context)
            optimizer = self.optimizers[step.name]
            optimizer.zero_grad(set_to_none=True)
            terms[step.loss].backward()
            self.average_gradients(step.parameters)
            if self.config.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(step.parameters, self.config.max_grad_norm)
            optimizer.step()
            logged.update((name, value.detach()) for name, value in terms.items())
        return logged

    def average_gradients(self, parameters: Sequence[nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks (no-op in one process).

        Every rank runs the same objective, so the same parameters have
        gradients on every rank; they travel in one flattened buffer.
        """
        if self.process_group is None:
            return
        gradients = [p.grad for p in parameters if p.grad is not None]
        if not gradients:
            return
        flat = torch.cat([gradient.reshape(-1) for gradient in gradients])
        flat = all_reduce_sum(flat) / self.process_group.world_size
        offset = 0
        for gradient in gradients:
            size = gradient.numel()
            gradient.copy_(flat[offset : offset + size].view(gradient.shape))
            offset += size

    def validation_step(
        self, batch: Batch, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Return the objective's validation terms of ``batch``."""
        context = StepContext(self.epoch, generator, False, None)
        return self.objective.loss_terms(self.model, batch, context)

    # -- one epoch --------------------------------------------------------
    def train_epoch(
        self, data: TrainingData, indices: torch.Tensor
    ) -> dict[str, float]:
        """Train on every row of ``indices`` once; return mean terms."""
        self.model.train()
        batches = list(self.iter_batches(indices, shuffle=True))
        # Under a process group every rank takes as many steps as the rank
        # with the most batches: the others go round their shard again.
        n_steps = all_reduce_max(len(batches))
        batches = [batches[step % len(batches)] for step in range(n_steps)]
        return _mean_terms(
            (len(batch_indices), self.train_step(data.batch(batch_indices)))
            for batch_indices in batches
        )

    def validate(self, data: TrainingData, indices: torch.Tensor) -> dict[str, float]:
        """Return the mean validation terms over ``indices``.

        The noise is re-seeded identically every epoch (common random numbers),
        so epoch-to-epoch changes reflect the model, not the draws.
        """
        self.model.eval()
        generator = make_generator(self._validation_seed, self.device)
        with torch.no_grad():
            terms = _mean_terms(
                (len(batch_indices), self.validation_step(data.batch(batch_indices), generator))
                for batch_indices in self.iter_batches(indices, shuffle=False)
            )
        return {f"val_{name}": value for name, value in terms.items()}

    def diagnose(self, data: TrainingData, indices: torch.Tensor) -> dict[str, float]:
        """Return the objective's diagnostics on the first batch of ``indices``.

        The rows and the noise are the same every epoch, so the logged values
        follow the model rather than the draws.
        """
        self.model.eval()
        context = StepContext(
            self.epoch, make_generator(self._validation_seed, self.device), False, None
        )
        with torch.no_grad():
            terms = self.objective.diagnostics(
                self.model, data.batch(indices[: self.config.batch_size]), context
            )
        # The mean over the ranks' batches, the same on every rank.
        return _mean_terms([(1, terms)])

    # -- the loop ---------------------------------------------------------
    def fit(
        self, data: TrainingData, *, n_epochs: int | None = None
    ) -> TrainingResult:
        """Train for up to ``n_epochs`` (default ``config.max_epochs``) epochs.

        Parameters
        ----------
        data : TrainingData
        n_epochs : int, default=None

        Returns
        -------
        TrainingResult

        Raises
        ------
        NonFiniteLossError
            If a loss is NaN or infinite; the model is first restored to its
            state at the start of this call, as for any other exception raised
            during training (``KeyboardInterrupt`` excepted: it stops training
            and keeps the best weights).
        """
        n_epochs = self.config.max_epochs if n_epochs is None else n_epochs
        self.data = data
        all_rows = torch.arange(len(data), device=data.device)
        if self.config.early_stopping:
            train_indices, validation_indices = self.split_validation(len(data))
        else:
            train_indices, validation_indices = all_rows, None
        self.train_indices = train_indices
        # Every rank starts from rank 0's weights (a no-op in one process).
        broadcast_tensors_(list(self.model.state_dict().values()))
        initial_state = _copy_state(self.model)
        result = TrainingResult()
        self._best_state: dict[str, torch.Tensor] | None = None
        self._no_improvement = 0
        self.stop_training = False
        for callback in self.callbacks:
            callback.on_train_begin(self)
        progress = _progress_bar(n_epochs, self.config.verbose and is_main_process())
        try:
            for _ in range(n_epochs):
                for callback in self.callbacks:
                    callback.on_epoch_begin(self, self.epoch)
                started = time.perf_counter()
                record: dict[str, Any] = {"epoch": self.epoch + 1}
                record.update(self.train_epoch(data, train_indices))
                record.update(self.diagnose(data, train_indices))
                if validation_indices is not None:
                    record.update(self.validate(data, validation_indices))
                _check_finite(record, self.model, initial_state)
                record["learning_rate"] = self._learning_rate()
                record["time"] = time.perf_counter() - started
                # Callbacks first: the best weights must include what they
                # set (a closed-form M-step of a mixture prior, say).
                for callback in self.callbacks:
                    callback.on_epoch_end(self, record)
                self.end_epoch(record, result)
                result.history.append(record)
                result.n_epochs += 1
                self.epoch += 1
                if progress is not None:
                    progress.update()
                    progress.set_postfix(_postfix(record), refresh=False)
                if self.stop_training:
                    result.converged = True
                    break
        except KeyboardInterrupt:
            result.interrupted = True
            warnings.warn(
                f"Training interrupted by the user after {result.n_epochs} "
                f"epoch(s) of this fit; keeping the best weights seen so far.",
                UserWarning,
                stacklevel=2,
            )
        except Exception:
            # Any other failure (a callback, the objective, the data) leaves
            # the model as this call found it, not half-trained in place.
            self.model.load_state_dict(initial_state)
            raise
        finally:
            if progress is not None:
                progress.close()
        if self._best_state is not None and (
            self.config.early_stopping or result.interrupted
        ):
            self.model.load_state_dict(self._best_state)
        result.optimizer_state = {
            name: copy.deepcopy(optimizer.state_dict())
            for name, optimizer in self.optimizers.items()
        }
        for callback in self.callbacks:
            callback.on_train_end(self, result)
        return result

    def end_epoch(self, record: dict[str, Any], result: TrainingResult) -> None:
        """Apply the stopping rule, track the best weights, step the schedule.

        scikit-learn's MLP rule: an epoch counts as no improvement when the
        monitored loss is not at least ``tol`` below the best so far; training
        stops after ``n_iter_no_change`` such epochs in a row.
        """
        if self.epoch < self.config.monitor_from_epoch:
            return
        monitored = record["val_loss" if self.config.early_stopping else "loss"]
        if monitored > result.best_loss - self.config.tol:
            self._no_improvement += 1
        else:
            self._no_improvement = 0
        if monitored < result.best_loss:
            result.best_loss = monitored
            self._best_state = _copy_state(self.model)
        for scheduler in self.schedulers:
            scheduler.step(monitored)
        if self._no_improvement >= self.config.n_iter_no_change:
            self.stop_training = True

    def _learning_rate(self) -> float:
        first = next(iter(self.optimizers.values()))
        return float(first.param_groups[0]["lr"])


def _mean_terms(
    weighted_terms: Iterable[tuple[int, Mapping[str, torch.Tensor]]],
) -> dict[str, float]:
    # Sums stay on the device until the end of the epoch: one synchronisation
    # per epoch instead of one per step (and, under a process group, one
    # all-reduce of every term with the row count).
    totals: dict[str, torch.Tensor] = {}
    n_rows = 0
    for n, terms in weighted_terms:
        n_rows += n
        for name, value in terms.items():
            if name in totals:
                totals[name].add_(value, alpha=n)
            else:
                totals[name] = value * n
    if not totals:
        return {}
    names = sorted(totals)
    summed = all_reduce_sum(
        torch.stack(
            [totals[name].detach().to(torch.float64).reshape(()) for name in names]
            + [torch.tensor(float(n_rows), dtype=torch.float64, device=totals[names[0]].device)]
        )
    ).tolist()
    return {name: total / summed[-1] for name, total in zip(names, summed)}


def _check_finite(
    record: Mapping[str, Any],
    model: nn.Module,
    initial_state: Mapping[str, torch.Tensor],
) -> None:
    bad = sorted(name for name, value in record.items() if not math.isfinite(value))
    if not bad:
        return
    model.load_state_dict(initial_state)
    raise NonFiniteLossError(
        f"Training stopped at epoch {record['epoch']}: the loss terms {bad} are "
        "not finite. Likely causes: a learning rate that is too large (lower "
        "learning_rate_init), unscaled input features (standardise them, e.g. "
        "with StandardScaler), or inputs outside the likelihood's support. The "
        "model was restored to its state before this fit."
    )


def _progress_bar(n_epochs: int, verbose: int) -> Any:
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n_epochs, desc="epochs", unit="epoch")


def _postfix(record: Mapping[str, Any]) -> dict[str, str]:
    return {
        name: f"{value:.4g}"
        for name, value in record.items()
        if name not in ("epoch", "time", "learning_rate") and isinstance(value, float)
    }
