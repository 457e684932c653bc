"""Tests of the shared training engine on a small VAE and toy objectives."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_vae._backend import seeded_module_init
from sklearn_vae.neural._engine import (
    Callback,
    NonFiniteLossError,
    Objective,
    TrainingConfig,
    TrainingData,
    TrainingEngine,
    UpdateStep,
)
from sklearn_vae.neural._modules import (
    GaussianDecoder,
    GaussianEncoder,
    VariationalAutoencoder,
)
from sklearn_vae.neural._objectives import ELBO


def make_model(seed=0, n_features=4):
    with seeded_module_init(seed):
        model = VariationalAutoencoder(
            GaussianEncoder(n_features, 2, (8,), "tanh"),
            GaussianDecoder(2, n_features, (8,), "tanh"),
        )
    return model.double()


def make_data(n_samples=64, n_features=4, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_samples, 2))
    X = np.tanh(latent @ rng.normal(size=(2, n_features))) + 0.05 * rng.normal(
        size=(n_samples, n_features)
    )
    return TrainingData(torch.from_numpy(X))


def train(config, *, seed=0, objective=None, callbacks=(), data=None, model=None):
    model = make_model() if model is None else model
    engine = TrainingEngine(
        model, objective or ELBO(), config, seed=seed, callbacks=callbacks
    )
    return model, engine.fit(make_data() if data is None else data)


class StateRecorder(Callback):
    """Keeps a copy of the weights and the record after every epoch."""

    def __init__(self):
        self.states, self.records = [], []

    def on_epoch_end(self, engine, record):
        self.states.append(
            {k: v.clone() for k, v in engine.model.state_dict().items()}
        )
        self.records.append(dict(record))


def assert_same_state(model, state):
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_training_lowers_the_loss_and_logs_every_term():
    _, result = train(TrainingConfig(batch_size=16, max_epochs=30, n_iter_no_change=30))
    losses = [record["loss"] for record in result.history]
    assert result.n_epochs == 30 == len(result.history)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert {"epoch", "loss", "reconstruction", "kl", "learning_rate", "time"} <= set(
        result.history[0]
    )
    assert [r["epoch"] for r in result.history] == list(range(1, 31))
    assert all(r["time"] >= 0 for r in result.history)


def test_same_seed_is_bit_identical_and_global_rng_untouched():
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()
    config = TrainingConfig(batch_size=10, max_epochs=3, early_stopping=True)
    model_a, result_a = train(config, seed=5)
    model_b, result_b = train(config, seed=5)
    model_c, _ = train(config, seed=6)
    assert_same_state(model_a, model_b.state_dict())
    assert [r["loss"] for r in result_a.history] == [r["loss"] for r in result_b.history]
    assert not torch.equal(model_a.encoder.network[0].weight, model_c.encoder.network[0].weight)
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert np.array_equal(numpy_state, np.random.get_state()[1])


def test_validation_split_is_reproducible_disjoint_and_complete():
    config = TrainingConfig(early_stopping=True, validation_fraction=0.25)
    engine = TrainingEngine(make_model(), ELBO(), config, seed=3)
    train_rows, validation_rows = engine.split_validation(40)
    again = TrainingEngine(make_model(), ELBO(), config, seed=3).split_validation(40)
    assert len(validation_rows) == 10
    assert torch.equal(train_rows, again[0]) and torch.equal(validation_rows, again[1])
    rows = torch.cat([train_rows, validation_rows]).sort().values
    assert torch.equal(rows, torch.arange(40))


def test_validation_split_too_small_raises():
    engine = TrainingEngine(
        make_model(), ELBO(), TrainingConfig(early_stopping=True, validation_fraction=0.5), seed=0
    )
    with pytest.raises(ValueError, match="validation_fraction"):
        engine.split_validation(1)


def test_early_stopping_stops_and_restores_the_best_weights():
    recorder = StateRecorder()
    config = TrainingConfig(
        batch_size=16,
        max_epochs=300,
        learning_rate=0.03,
        early_stopping=True,
        n_iter_no_change=3,
        tol=0.0,
    )
    model, result = train(config, callbacks=[recorder])
    assert result.converged and result.n_epochs < 300
    validation = [r["val_loss"] for r in recorder.records]
    best_epoch = int(np.argmin(validation))
    assert result.best_loss == validation[best_epoch]
    assert best_epoch == result.n_epochs - 1 - config.n_iter_no_change
    assert_same_state(model, recorder.states[best_epoch])


def test_monitor_from_epoch_delays_the_stopping_rule():
    config = TrainingConfig(max_epochs=8, n_iter_no_change=1, tol=1e9, monitor_from_epoch=5)
    _, result = train(config)
    # The first monitored epoch (index 5) sets the best loss; with tol=1e9 the
    # next one counts as no improvement and stops training.
    assert result.converged and result.n_epochs == 7


class ScaledLoss(Objective):
    """ELBO times a factor the test changes between epochs."""

    def __init__(self):
        self.elbo, self.factor = ELBO(), 1.0

    def loss_terms(self, model, batch, context):
        terms = self.elbo.loss_terms(model, batch, context)
        return {**terms, "loss": terms["loss"] * self.factor}


class BreakAt(Callback):
    def __init__(self, epoch, action):
        self.epoch, self.action = epoch, action

    def on_epoch_begin(self, engine, epoch):
        if epoch == self.epoch:
            self.action()


def test_non_finite_loss_raises_and_restores_the_initial_weights():
    objective = ScaledLoss()
    model = make_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def poison():
        objective.factor = math.nan

    with pytest.raises(NonFiniteLossError, match="learning rate.*StandardScaler"):
        train(TrainingConfig(max_epochs=5), objective=objective, model=model,
              callbacks=[BreakAt(2, poison)])
    assert_same_state(model, initial)


def test_keyboard_interrupt_keeps_the_best_weights_and_warns():
    recorder = StateRecorder()

    def interrupt():
        raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted"):
        model, result = train(
            TrainingConfig(batch_size=16, max_epochs=10, n_iter_no_change=10),
            callbacks=[recorder, BreakAt(4, interrupt)],
        )
    assert result.interrupted and result.n_epochs == 4
    losses = [r["loss"] for r in recorder.records]
    assert_same_state(model, recorder.states[int(np.argmin(losses))])


def test_gradient_clipping_bounds_the_norm_seen_by_the_optimiser():
    norms = []

    class Spy(Callback):
        def on_train_begin(self, engine):
            def record(optimizer, args, kwargs):
                grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
                norms.append(float(torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(g) for g in grads if g is not None]))))
            for optimizer in engine.optimizers.values():
                optimizer.register_step_pre_hook(record)

    train(TrainingConfig(batch_size=16, max_epochs=2, max_grad_norm=0.01), callbacks=[Spy()])
    assert len(norms) == 8
    assert max(norms) <= 0.01 * (1 + 1e-6)


class ConstantLoss(Objective):
    """A loss that never improves: only the schedule can react to it."""

    def loss_terms(self, model, batch, context):
        return {"loss": 0.0 * sum(p.sum() for p in model.parameters()) + 1.0}


def test_adaptive_schedule_divides_the_rate_by_five_on_a_plateau():
    config = TrainingConfig(
        max_epochs=6, learning_rate=1e-2, learning_rate_schedule="adaptive",
        n_iter_no_change=100,
    )
    _, result = train(config, objective=ConstantLoss())
    # The rate each epoch trained with: the first epoch sets the best loss,
    # every second epoch without improvement after it divides the rate by 5.
    rates = [r["learning_rate"] for r in result.history]
    assert rates == pytest.approx([1e-2, 1e-2, 1e-2, 2e-3, 2e-3, 4e-4])


class Adversary(Objective):
    """A toy two-player objective: a critic scalar fits the mean of the codes,
    the model moves its codes away from the critic. Exercises two optimisers."""

    def update_steps(self, model):
        return [
            UpdateStep("critic", "critic_loss", (model.critic,)),
            UpdateStep("model", "loss", tuple(model.vae.parameters())),
        ]

    def loss_terms(self, model, batch, context):
        mean, _ = model.vae.encoder(batch.X)
        critic_loss = (model.critic - mean.detach()).square().mean()
        loss = -(model.critic.detach() - mean).square().mean()
        neighbour = batch.data.X[batch.take("neighbor")]
        return {
            "loss": loss,
            "critic_loss": critic_loss,
            "neighbor_gap": (neighbour - batch.X).abs().mean(),
        }


class AdversarialModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.vae = make_model()
        self.critic = nn.Parameter(torch.zeros(2, dtype=torch.float64))


def test_two_update_steps_each_step_their_own_parameters_and_log_all_terms():
    data = make_data(n_samples=32)
    shift = torch.roll(torch.arange(32), 1)
    data = TrainingData(data.X, neighbor=shift)
    model = AdversarialModel()
    decoder_before = {k: v.clone() for k, v in model.vae.decoder.state_dict().items()}
    engine = TrainingEngine(model, Adversary(), TrainingConfig(batch_size=8, max_epochs=3), seed=0)
    result = engine.fit(data)
    assert set(engine.optimizers) == {"critic", "model"}
    assert {"loss", "critic_loss", "neighbor_gap"} <= set(result.history[-1])
    assert not torch.equal(model.critic, torch.zeros(2, dtype=torch.float64))
    # The decoder gets no gradient from this objective: untouched.
    assert_same_state(model.vae.decoder, decoder_before)
    expected_gap = float((data.X[shift] - data.X).abs().mean())
    assert result.history[-1]["neighbor_gap"] == pytest.approx(expected_gap)
    assert engine.optimizers["critic"].state_dict()["state"][0]["step"] == 12


def test_resuming_from_optimizer_state_continues_adam():
    model, result = train(TrainingConfig(batch_size=16, max_epochs=2))
    engine = TrainingEngine(
        model, ELBO(), TrainingConfig(batch_size=16, max_epochs=1), seed=1,
        start_epoch=2, optimizer_state=result.optimizer_state,
    )
    resumed = engine.fit(make_data())
    assert resumed.history[0]["epoch"] == 3
    assert int(resumed.optimizer_state["model"]["state"][0]["step"]) == 12


def test_verbose_shows_a_progress_bar(capsys):
    train(TrainingConfig(max_epochs=2, verbose=1))
    err = capsys.readouterr().err
    assert "epochs" in err and "2/2" in err
    train(TrainingConfig(max_epochs=2, verbose=0))
    assert capsys.readouterr().err == ""


def test_per_row_arrays_must_match_the_number_of_rows():
    with pytest.raises(ValueError, match="neighbor"):
        TrainingData(torch.zeros(5, 2), neighbor=torch.zeros(4, dtype=torch.long))


class Diagnosed(ELBO):
    """ELBO that logs, once per epoch, which rows its diagnostics saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def diagnostics(self, model, batch, context):
        assert not torch.is_grad_enabled() and not context.training
        self.seen.append(batch.indices.clone())
        return {"first_row": batch.indices[0].double()}


def test_diagnostics_run_once_per_epoch_on_a_fixed_batch():
    objective = Diagnosed()
    _, result = train(
        TrainingConfig(batch_size=16, max_epochs=3, early_stopping=True), objective=objective
    )
    assert len(objective.seen) == 3
    assert all(torch.equal(rows, objective.seen[0]) for rows in objective.seen)
    assert len(objective.seen[0]) == 16
    assert [r["first_row"] for r in result.history] == [float(objective.seen[0][0])] * 3
