"""Fault injection: a fit that fails midway leaves the estimator as it was.

Faults are injected where they happen in real use: in the training step (the
loss turning NaN after a diverging update, an error from inside the
objective, Ctrl-C in the middle of an epoch), in a callback of the engine
(the internal ``_callbacks`` hook), and in the EM loop (a non-finite
log-likelihood, an ill-defined covariance, Ctrl-C). After the fault, a fresh
estimator is still unfitted, and a fitted one (refitted, warm-started or
``partial_fit``) has the same attributes, network weights, optimiser state
and predictions as before; only Ctrl-C during the joint training keeps the
best weights seen, with a warning.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from _estimators import (
    ESTIMATORS,
    assert_same_attributes,
    assert_same_predictions,
    clean_data,
    fitted_attributes,
    is_fitted,
    predictions,
)
from torch import nn

from sklearn_vae.mixture._data import EMRows
from sklearn_vae.neural._engine import (
    Callback,
    NonFiniteLossError,
    Objective,
    TrainingConfig,
    TrainingData,
    TrainingEngine,
)
from sklearn_vae.neural._mixture_objectives import NeighborEmbeddingPretraining

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

NEURAL = ("VAETransformer", "VariationalGMMPrior")

#: 30 rows in batches of 10: three steps per epoch, so step 5 is in the middle
#: of epoch 2, and step 2 in the middle of partial_fit's one epoch.
TRAINING = {"batch_size": 10, "max_iter": 4}
MID_EPOCH_STEP = 5
MID_PARTIAL_FIT_STEP = 2


class InjectedError(RuntimeError):
    """The error the injected faults raise (a RuntimeError, as torch's are)."""


# ---------------------------------------------------------------------------
# Fault injectors
# ---------------------------------------------------------------------------
def in_joint_training(engine: TrainingEngine) -> bool:
    """Not VariationalGMMPrior's pretraining engine."""
    return not isinstance(engine.objective, NeighborEmbeddingPretraining)


def fail_at_step(monkeypatch, step, fault, engines=in_joint_training):
    """Make the ``step``-th training step of the chosen engines run ``fault``."""
    original = TrainingEngine.train_step
    count = {"steps": 0}

    def train_step(engine, batch):
        if engines(engine):
            count["steps"] += 1
            if count["steps"] == step:
                return fault(engine, lambda: original(engine, batch))
        return original(engine, batch)

    monkeypatch.setattr(TrainingEngine, "train_step", train_step)


def diverge(engine, step):
    """Take the step, then corrupt a weight: every later loss is NaN."""
    terms = step()
    with torch.no_grad():
        next(engine.model.parameters()).fill_(math.nan)
    return terms


def raise_error(engine, step):
    step()  # the weights have already moved when the error comes
    raise InjectedError("injected failure inside a training step")


def interrupt(engine, step):
    step()
    raise KeyboardInterrupt


class RaisingCallback(Callback):
    """Raise from one hook of the engine: at the second epoch of the call
    (the first of a one-epoch ``partial_fit``), or at the end of training."""

    def __init__(self, hook: str) -> None:
        self.hook, self.epochs = hook, 0

    def on_epoch_begin(self, engine, epoch):
        self._maybe_raise("on_epoch_begin", engine)

    def on_epoch_end(self, engine, record):
        self._maybe_raise("on_epoch_end", engine)
        self.epochs += 1

    def on_train_end(self, engine, result):
        self._maybe_raise("on_train_end", engine)

    def _maybe_raise(self, hook, engine):
        at_epoch = min(1, engine.config.max_epochs - 1)
        if hook == self.hook and (hook == "on_train_end" or self.epochs == at_epoch):
            raise InjectedError(f"injected failure in {hook}")


def fail_in_callback(monkeypatch, estimator_class, hook):
    original = estimator_class._callbacks
    monkeypatch.setattr(
        estimator_class,
        "_callbacks",
        lambda self: [*original(self), RaisingCallback(hook)],
    )


NEURAL_FAULTS = {
    # name: (install(monkeypatch, estimator_class, step), error, message)
    "loss turns NaN mid-epoch": (
        lambda mp, cls, step: fail_at_step(mp, step, diverge),
        NonFiniteLossError,
        r"not finite.*restored to its state before this fit",
    ),
    "error inside a training step": (
        lambda mp, cls, step: fail_at_step(mp, step, raise_error),
        InjectedError,
        "inside a training step",
    ),
    "callback raises at epoch begin": (
        lambda mp, cls, step: fail_in_callback(mp, cls, "on_epoch_begin"),
        InjectedError,
        "on_epoch_begin",
    ),
    "callback raises at epoch end": (
        lambda mp, cls, step: fail_in_callback(mp, cls, "on_epoch_end"),
        InjectedError,
        "on_epoch_end",
    ),
    "callback raises at train end": (
        lambda mp, cls, step: fail_in_callback(mp, cls, "on_train_end"),
        InjectedError,
        "on_train_end",
    ),
}


def _scenarios(name):
    estimator = ESTIMATORS[name]()
    scenarios = ["fit a new estimator", "refit a fitted one", "warm-start refit"]
    if hasattr(estimator, "partial_fit"):
        scenarios.append("partial_fit a fitted one")
    return scenarios


NEURAL_CASES = [
    pytest.param(name, scenario, fault, id=f"{name}-{scenario}-{fault}")
    for name in NEURAL
    for scenario in _scenarios(name)
    for fault in NEURAL_FAULTS
]


def _fitted(name, **params):
    return ESTIMATORS[name](**TRAINING, **params).fit(clean_data())


# ---------------------------------------------------------------------------
# Neural estimators
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, scenario, fault", NEURAL_CASES)
def test_neural_fit_that_fails_leaves_the_estimator_as_it_was(
    name, scenario, fault, monkeypatch
):
    X = clean_data()
    refit = X[::-1].copy()  # other data for the refit, same shape
    install, error, message = NEURAL_FAULTS[fault]
    if scenario == "fit a new estimator":
        estimator = ESTIMATORS[name](**TRAINING)
        install(monkeypatch, type(estimator), MID_EPOCH_STEP)
        with pytest.raises(error, match=message):
            estimator.fit(X)
        assert not is_fitted(estimator), sorted(vars(estimator))
        return

    estimator = _fitted(name, warm_start=scenario == "warm-start refit")
    attributes, before = fitted_attributes(estimator), predictions(estimator, X)
    incremental = scenario.startswith("partial_fit")
    install(monkeypatch, type(estimator), MID_PARTIAL_FIT_STEP if incremental else MID_EPOCH_STEP)
    method = estimator.partial_fit if incremental else estimator.fit
    with pytest.raises(error, match=message):
        method(refit)
    assert_same_attributes(attributes, estimator)
    assert_same_predictions(before, estimator, X)


@pytest.mark.parametrize("name", NEURAL)
def test_a_failed_warm_start_does_not_change_the_next_one(name, monkeypatch):
    """Adam's moments too are as they were: the next warm start is bit-identical."""
    X = clean_data()
    first = _fitted(name, warm_start=True)
    second = copy.deepcopy(first)
    with monkeypatch.context() as patch:
        fail_at_step(patch, MID_EPOCH_STEP, raise_error)
        with pytest.raises(InjectedError):
            first.fit(X)
    first.fit(X)
    second.fit(X)
    for method, value in predictions(second, X).items():
        np.testing.assert_array_equal(predictions(first, X)[method], value, err_msg=method)


@pytest.mark.parametrize("name", NEURAL)
def test_ctrl_c_mid_epoch_keeps_the_best_weights_and_warns(name, monkeypatch):
    X = clean_data()
    states = []

    class RecordStates(Callback):
        def on_epoch_end(self, engine, record):
            states.append(
                (record["loss"], copy.deepcopy(engine.model.state_dict()))
            )

    cls = type(ESTIMATORS[name]())
    original = cls._callbacks
    monkeypatch.setattr(cls, "_callbacks", lambda self: [*original(self), RecordStates()])
    # Step 8 is the second step of epoch 3, after two complete epochs.
    fail_at_step(monkeypatch, 8, interrupt)
    # Every epoch is monitored: the VAE's shared-variance epochs, which the
    # stopping rule ignores (their losses are not comparable), are turned off.
    monitored = {"shared_variance_epochs": 0} if name == "VAETransformer" else {}
    estimator = ESTIMATORS[name](**{**TRAINING, "max_iter": 10}, **monitored)
    with pytest.warns(UserWarning, match="interrupted by the user after 2 epoch"):
        estimator.fit(X)
    assert estimator.n_iter_ == 2 and len(estimator.history_) == 2
    best_state = min(states[:2], key=lambda pair: pair[0])[1]
    for key, value in estimator._fitted_model().state_dict().items():
        assert torch.equal(value, best_state[key]), key
    for method, value in predictions(estimator, X).items():
        assert np.all(np.isfinite(value)), method


def test_ctrl_c_during_pretraining_abandons_the_fit(monkeypatch):
    X = clean_data()
    fail_at_step(
        monkeypatch,
        2,
        interrupt,
        engines=lambda engine: isinstance(engine.objective, NeighborEmbeddingPretraining),
    )
    estimator = ESTIMATORS["VariationalGMMPrior"](**TRAINING, pretrain_epochs=3)
    with pytest.warns(UserWarning, match="interrupted"):
        with pytest.raises(KeyboardInterrupt, match="during pretraining"):
            estimator.fit(X)
    assert not is_fitted(estimator)


@pytest.mark.parametrize("fault", ["loss turns NaN mid-epoch", "error inside a training step"])
def test_a_fault_in_pretraining_leaves_a_new_estimator_unfitted(fault, monkeypatch):
    fault_function = diverge if fault.startswith("loss") else raise_error
    fail_at_step(
        monkeypatch,
        MID_EPOCH_STEP,
        fault_function,
        engines=lambda engine: isinstance(engine.objective, NeighborEmbeddingPretraining),
    )
    estimator = ESTIMATORS["VariationalGMMPrior"](**TRAINING, pretrain_epochs=3)
    with pytest.raises((NonFiniteLossError, InjectedError)):
        estimator.fit(clean_data())
    assert not is_fitted(estimator)


# ---------------------------------------------------------------------------
# The engine itself
# ---------------------------------------------------------------------------
class _MeanSquare(Objective):
    def loss_terms(self, model, batch, context):
        return {"loss": model(batch.X).square().mean()}


def _engine(callbacks=(), optimizer_state=None, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    engine = TrainingEngine(
        model,
        _MeanSquare(),
        TrainingConfig(batch_size=10, max_epochs=4),
        seed=seed,
        optimizer_state=optimizer_state,
        callbacks=callbacks,
    )
    return model, engine


@pytest.mark.parametrize("hook", ["on_epoch_begin", "on_epoch_end"])
def test_engine_restores_the_initial_weights_when_a_callback_raises(hook):
    model, engine = _engine([RaisingCallback(hook)])
    initial = copy.deepcopy(model.state_dict())
    with pytest.raises(InjectedError):
        engine.fit(TrainingData(torch.as_tensor(clean_data())))
    for key, value in model.state_dict().items():
        assert torch.equal(value, initial[key]), key


def test_engine_restores_the_initial_weights_when_a_step_raises(monkeypatch):
    model, engine = _engine()
    initial = copy.deepcopy(model.state_dict())
    fail_at_step(monkeypatch, MID_EPOCH_STEP, raise_error, engines=lambda engine: True)
    with pytest.raises(InjectedError):
        engine.fit(TrainingData(torch.as_tensor(clean_data())))
    for key, value in model.state_dict().items():
        assert torch.equal(value, initial[key]), key


def test_engine_does_not_change_the_optimizer_state_it_resumes_from():
    data = TrainingData(torch.as_tensor(clean_data()))
    _, engine = _engine()
    saved = engine.fit(data).optimizer_state
    snapshot = copy.deepcopy(saved)
    _, resumed = _engine(optimizer_state=saved)
    resumed.fit(data)
    for name, state in snapshot.items():
        for index, moments in state["state"].items():
            for key, value in moments.items():
                assert torch.equal(saved[name]["state"][index][key], value), key


# ---------------------------------------------------------------------------
# EM
# ---------------------------------------------------------------------------
def _poison_e_step(monkeypatch, at_call, fault):
    # Every E-step is one sum of chunk statistics over the rows of the fit.
    original = EMRows.sum_statistics
    count = {"calls": 0}

    def e_step(self, *args, **kwargs):
        count["calls"] += 1
        statistics = original(self, *args, **kwargs)
        if count["calls"] == at_call:
            return fault(statistics)
        return statistics

    monkeypatch.setattr(EMRows, "sum_statistics", e_step)


def _nan_likelihood(statistics):
    return dataclasses.replace(
        statistics, log_likelihood=torch.full_like(statistics.log_likelihood, math.nan)
    )


def _collapsed_scatter(statistics):
    # Second moments equal to the squared means: zero covariances, which
    # reg_covar=0 leaves singular.
    means = statistics.weighted_sum / statistics.component_weight[:, None]
    scatter = statistics.component_weight[:, None, None] * means[:, :, None] * means[:, None, :]
    return dataclasses.replace(statistics, weighted_scatter=scatter)


def _ctrl_c(statistics):
    raise KeyboardInterrupt


EM_FAULTS = {
    "non-finite log-likelihood": (
        _nan_likelihood,
        ValueError,
        r"non-finite log-likelihood.*(at iteration 3|on this batch)",
    ),
    "ill-defined covariance": (_collapsed_scatter, ValueError, r"ill-defined empirical covariance.*increase reg_covar"),
    "Ctrl-C": (_ctrl_c, KeyboardInterrupt, ""),
}
EM_SCENARIOS = ["fit a new estimator", "refit a fitted one", "warm-start refit", "fit_predict"]
if hasattr(ESTIMATORS["EMGaussianMixture"](), "partial_fit"):
    EM_SCENARIOS.append("partial_fit a fitted one")


@pytest.mark.parametrize("scenario", EM_SCENARIOS)
@pytest.mark.parametrize("fault", EM_FAULTS)
def test_em_fit_that_fails_midway_leaves_the_estimator_as_it_was(fault, scenario, monkeypatch):
    X = clean_data(n_samples=60)
    refit = np.vstack([X[:30] + 3.0, X[30:] - 3.0])
    poison, error, message = EM_FAULTS[fault]
    if fault == "ill-defined covariance" and scenario.startswith("partial_fit"):
        # Not a fault there: stepwise EM blends the batch's singular second
        # moments with the running ones, and the blend stays positive.
        pytest.skip("a singular batch cannot make stepwise EM's covariance singular")
    params = {"reg_covar": 0.0, "tol": 0.0, "max_iter": 6}
    if scenario == "fit a new estimator":
        estimator = ESTIMATORS["EMGaussianMixture"](**params)
        _poison_e_step(monkeypatch, 3, poison)
        with pytest.raises(error, match=message):
            estimator.fit(X)
        assert not is_fitted(estimator)
        return
    estimator = ESTIMATORS["EMGaussianMixture"](
        **params, warm_start=scenario == "warm-start refit"
    ).fit(X)
    attributes, before = fitted_attributes(estimator), predictions(estimator, X)
    method = {"fit_predict": estimator.fit_predict}.get(scenario, estimator.fit)
    if scenario.startswith("partial_fit"):
        method = estimator.partial_fit  # one E-step per call
    _poison_e_step(monkeypatch, 1 if scenario.startswith("partial_fit") else 3, poison)
    with pytest.raises(error, match=message):
        method(refit)
    assert_same_attributes(attributes, estimator)
    assert_same_predictions(before, estimator, X)

