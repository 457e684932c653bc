"""Tests of VAETransformer: API, faults, persistence, properties and quality."""

import io
import os
import pickle
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris, make_blobs
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_vae import VAETransformer
from sklearn_vae.exceptions import NonFiniteLossError, PosteriorCollapseWarning
from sklearn_vae.neural import _objectives
from sklearn_vae.neural._engine import Callback
from sklearn_vae.neural._modules import GaussianDecoder
from sklearn_vae.neural._objectives import ELBO

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SMALL = dict(hidden_layer_sizes=(16,), max_iter=5, n_importance_samples=10, random_state=0)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # These networks are tiny: a second intra-op thread saves nothing alone
    # and, on a 2-core machine shared with other test processes, its spin-waits
    # make training 10-100x slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=120, n_features=6, centers=3, random_state=0)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def fitted(blobs):
    return VAETransformer(**SMALL).fit(blobs[0])


# -- API ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_keep_the_input_dtype_and_shapes(blobs, dtype):
    X = blobs[0].astype(dtype)
    vae = VAETransformer(n_components=3, **SMALL).fit(X)
    assert next(vae.encoder_.parameters()).dtype == (
        torch.float32 if dtype == np.float32 else torch.float64
    )
    Z = vae.transform(X)
    assert Z.shape == (120, 3) and Z.dtype == dtype
    X_back = vae.inverse_transform(Z)
    assert X_back.shape == X.shape and X_back.dtype == dtype
    log_likelihood = vae.score_samples(X)
    assert log_likelihood.shape == (120,) and log_likelihood.dtype == dtype
    assert vae.sample(4, random_state=0).shape == (4, 6)
    assert np.isfinite(vae.score(X))


def test_fit_transform_equals_fit_then_transform(blobs):
    X = blobs[0]
    np.testing.assert_array_equal(
        VAETransformer(**SMALL).fit_transform(X), VAETransformer(**SMALL).fit(X).transform(X)
    )


def test_history_and_fitted_attributes(fitted):
    assert fitted.n_iter_ == len(fitted.history_) == len(fitted.loss_curve_) == 5
    assert fitted.loss_curve_ == [record["loss"] for record in fitted.history_]
    assert {"epoch", "loss", "reconstruction", "kl", "time", "learning_rate"} <= set(
        fitted.history_[0]
    )
    assert fitted.best_loss_ == min(fitted.loss_curve_)
    assert isinstance(fitted.encoder_, torch.nn.Module)
    assert isinstance(fitted.decoder_, torch.nn.Module)
    assert fitted.n_features_in_ == 6


def test_history_counts_the_active_latent_units(blobs):
    vae = VAETransformer(n_components=3, **SMALL).fit(blobs[0])
    for record in vae.history_:
        assert record["active_units"] in (0, 1, 2, 3)
    codes = vae.transform(blobs[0])
    # The count is taken on the first batch of training rows (all 120 here).
    assert vae.history_[-1]["active_units"] == int((codes.var(axis=0) > 0.01).sum())


def test_a_healthy_fit_does_not_warn_of_posterior_collapse(blobs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorCollapseWarning)
        vae = VAETransformer(n_components=2, **{**SMALL, "max_iter": 20}).fit(blobs[0])
    assert vae.history_[-1]["active_units"] == 2


def test_a_collapsed_posterior_warns_and_says_what_to_try(blobs):
    # A KL weight of 1000 makes the prior the best posterior for every row
    # (with the encoder trained throughout, so it can get there).
    with pytest.warns(PosteriorCollapseWarning, match=r"Only 0 of the 4 .*kl_warmup"):
        vae = VAETransformer(
            n_components=4,
            beta=1000.0,
            batch_size=20,
            shared_variance_epochs=0,
            **{**SMALL, "max_iter": 20},
        ).fit(blobs[0])
    assert vae.history_[-1]["active_units"] == 0
    assert issubclass(PosteriorCollapseWarning, UserWarning)


@pytest.fixture
def variance_trace(monkeypatch):
    """Record the decoder's variance at each epoch's start, and the residuals the switch uses."""
    trace = {"variances": [], "residuals": []}

    class Record(Callback):
        def on_epoch_begin(self, engine, epoch):
            trace["variances"].append(engine.model.decoder.variance().detach().clone())

    callbacks = VAETransformer._callbacks
    monkeypatch.setattr(VAETransformer, "_callbacks", lambda self: [*callbacks(self), Record()])
    residuals = _objectives._mean_squared_residuals

    def record_residuals(engine):
        trace["residuals"].append(residuals(engine))
        return trace["residuals"][-1]

    monkeypatch.setattr(_objectives, "_mean_squared_residuals", record_residuals)
    return trace


def _scaled_blobs(blobs):
    # Features on different scales: their own variances differ.
    return blobs[0] * np.array([1.0, 1.0, 0.5, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_set_variance_takes_one_value_or_one_per_feature(dtype):
    decoder = GaussianDecoder(2, 3, (4,), "relu").to(dtype)
    decoder.set_variance(0.25)
    np.testing.assert_allclose(decoder.variance().detach().numpy(), [0.25] * 3, rtol=1e-6)
    decoder.set_variance(torch.tensor([1.0, 0.01, 0.0], dtype=torch.float64))
    variance = decoder.variance().detach()
    assert variance.dtype == dtype and decoder.log_variance.shape == (3,)
    # A zero variance lands at the floor, never at log(0).
    np.testing.assert_allclose(variance.numpy()[:2], [1.0, 0.01], rtol=1e-5)
    assert 0 < variance[2] < 1e-5
    with pytest.raises(RuntimeError):
        decoder.set_variance(torch.ones(4))


def test_decoder_variance_is_fixed_and_shared_then_set_per_feature_from_the_residuals(
    blobs, variance_trace
):
    X = _scaled_blobs(blobs)
    vae = VAETransformer(shared_variance_epochs=3, **SMALL).fit(X)
    variances = [v.numpy() for v in variance_trace["variances"]]
    assert len(variances) == 5 and len(variance_trace["residuals"]) == 1
    for epoch in (0, 1, 2):  # held at one value for every feature
        np.testing.assert_allclose(variances[epoch], 0.136 * X.var(axis=0).mean(), rtol=1e-5)
    # Epoch 3 starts from the maximum-likelihood variances, one per feature,
    # and learns from there.
    np.testing.assert_allclose(variances[3], variance_trace["residuals"][0].numpy(), rtol=1e-5)
    assert variances[3].max() > 10 * variances[3].min()
    assert not np.allclose(variances[4], variances[3])
    # The fitted networks are left trainable.
    assert all(p.requires_grad for p in [*vae.encoder_.parameters(), *vae.decoder_.parameters()])


def test_after_the_shared_epochs_only_the_decoder_trains(blobs, monkeypatch):
    snapshots = []

    class Record(Callback):
        def on_epoch_begin(self, engine, epoch):
            model = engine.model
            snapshots.append(
                [p.detach().clone() for p in (*model.encoder.parameters(), *model.decoder.parameters())]
            )

    callbacks = VAETransformer._callbacks
    monkeypatch.setattr(VAETransformer, "_callbacks", lambda self: [*callbacks(self), Record()])
    vae = VAETransformer(shared_variance_epochs=2, **SMALL).fit(_scaled_blobs(blobs))
    n_encoder = len(list(vae.encoder_.parameters()))
    final = [p.detach() for p in (*vae.encoder_.parameters(), *vae.decoder_.parameters())]

    def changed(before, after, rows):
        return [not torch.equal(before[i], after[i]) for i in rows]

    encoder, decoder = range(n_encoder), range(n_encoder, len(final))
    assert all(changed(snapshots[0], snapshots[1], encoder))  # shared epochs: everything trains
    assert not any(changed(snapshots[2], final, encoder))  # then the encoder is held
    assert all(changed(snapshots[2], final, decoder))


def test_without_shared_epochs_each_feature_starts_at_its_own_variance(blobs, variance_trace):
    X = _scaled_blobs(blobs)
    VAETransformer(shared_variance_epochs=0, **SMALL).fit(X)
    np.testing.assert_allclose(variance_trace["variances"][0].numpy(), X.var(axis=0), atol=1e-5)
    assert variance_trace["residuals"] == []


def test_auto_shares_the_variance_for_three_quarters_of_max_iter(blobs, variance_trace):
    VAETransformer(**{**SMALL, "max_iter": 8}).fit(_scaled_blobs(blobs))
    shared = [bool(np.all(v.numpy() == v.numpy()[0])) for v in variance_trace["variances"]]
    assert shared == [True] * 6 + [False] * 2
    assert len(variance_trace["residuals"]) == 1


def test_warm_start_continues_the_variance_schedule(blobs, variance_trace):
    X = _scaled_blobs(blobs)
    vae = VAETransformer(shared_variance_epochs=3, warm_start=True, **{**SMALL, "max_iter": 2}).fit(X)
    variance = vae.decoder_.variance().detach().numpy()
    assert np.all(variance == variance[0])
    vae.fit(X)  # global epochs 2 and 3: the switch comes at the start of epoch 3
    assert len(variance_trace["residuals"]) == 1
    variance = vae.decoder_.variance().detach().numpy()
    assert variance.max() > 10 * variance.min()
    encoder = [p.detach().clone() for p in vae.encoder_.parameters()]
    vae.fit(X)  # past the switch, a warm start still holds the encoder
    assert all(torch.equal(a, b) for a, b in zip(encoder, vae.encoder_.parameters()))
    assert len(variance_trace["residuals"]) == 1


def test_the_stopping_rule_ignores_the_shared_variance_epochs(blobs):
    # Any epoch after the first monitored one counts as no improvement.
    params = {**SMALL, "max_iter": 20, "tol": 1e9, "n_iter_no_change": 1}
    assert VAETransformer(shared_variance_epochs=0, **params).fit(blobs[0]).n_iter_ == 2
    assert VAETransformer(shared_variance_epochs=6, **params).fit(blobs[0]).n_iter_ == 8


def test_bernoulli_likelihood_has_no_variance_schedule(monkeypatch):
    switches = []
    monkeypatch.setattr(_objectives, "_mean_squared_residuals", switches.append)
    X = load_digits().data[:100] / 16
    VAETransformer(likelihood="bernoulli", shared_variance_epochs=2, **SMALL).fit(X)
    assert switches == []


def test_kl_warmup_weights_the_kl_term_linearly(blobs):
    vae = VAETransformer(beta=2.0, kl_warmup=4, **SMALL).fit(blobs[0])
    for epoch, record in enumerate(vae.history_):
        weight = min(1.0, (epoch + 1) / 4)
        assert record["loss"] == pytest.approx(
            record["reconstruction"] + weight * 2.0 * record["kl"], rel=1e-10
        )


def test_sample_is_reproducible_and_validated(fitted):
    np.testing.assert_array_equal(fitted.sample(3, random_state=1), fitted.sample(3, random_state=1))
    assert not np.array_equal(fitted.sample(3, random_state=1), fitted.sample(3, random_state=2))
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)


def test_inverse_transform_checks_the_latent_width(fitted):
    with pytest.raises(ValueError, match="n_components=2"):
        fitted.inverse_transform(np.zeros((3, 5)))


def test_unfitted_methods_raise(blobs):
    vae = VAETransformer()
    for method in (vae.transform, vae.score_samples, vae.score, vae.inverse_transform):
        with pytest.raises(NotFittedError):
            method(blobs[0])
    with pytest.raises(NotFittedError):
        vae.sample()


def test_pandas_output_and_feature_names(blobs):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(blobs[0], columns=[f"f{i}" for i in range(6)])
    vae = VAETransformer(**SMALL).set_output(transform="pandas").fit(frame)
    Z = vae.transform(frame)
    assert list(Z.columns) == ["vaetransformer0", "vaetransformer1"]
    assert list(vae.feature_names_in_) == list(frame.columns)
    assert list(vae.get_feature_names_out()) == list(Z.columns)


def test_pipeline_scaler_vae_logistic_regression():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(
        StandardScaler(),
        VAETransformer(n_components=2, hidden_layer_sizes=(32,), max_iter=40, random_state=0),
        LogisticRegression(),
    )
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    assert pipe.fit(X_train, y_train).score(X_test, y_test) > 0.7  # chance is 1/3


def test_grid_search_over_n_components_and_beta(blobs):
    search = GridSearchCV(
        VAETransformer(**SMALL), {"n_components": [1, 2], "beta": [0.5, 1.0]}, cv=2
    ).fit(blobs[0])
    assert search.best_params_["n_components"] in (1, 2)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


def test_clone_keeps_parameters_and_drops_fitted_state(fitted):
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "encoder_")


def test_verbose_prints_a_progress_bar(blobs, capsys):
    VAETransformer(**{**SMALL, "max_iter": 2}, verbose=1).fit(blobs[0])
    assert "2/2" in capsys.readouterr().err


# -- training control ---------------------------------------------------------
def test_early_stopping_monitors_a_validation_split(blobs):
    vae = VAETransformer(
        **{**SMALL, "max_iter": 300},
        early_stopping=True,
        n_iter_no_change=2,
        learning_rate_init=0.02,
    ).fit(blobs[0])
    assert vae.n_iter_ < 300
    validation = [record["val_loss"] for record in vae.history_]
    assert vae.best_loss_ == min(validation)


def test_early_stopping_with_too_few_samples_says_what_to_change():
    with pytest.raises(ValueError, match="validation_fraction"):
        VAETransformer(**SMALL, early_stopping=True).fit(np.zeros((1, 3)))


def test_max_iter_without_convergence_warns(blobs):
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        VAETransformer(**SMALL).fit(blobs[0])


def test_warm_start_continues_and_cold_start_restarts(blobs):
    X = blobs[0]
    vae = VAETransformer(**SMALL, warm_start=True).fit(X)
    # The decoder: past the shared-variance epochs the encoder is held.
    weights = vae.decoder_.network[0].weight.detach().clone()
    vae.fit(X)
    assert vae.n_iter_ == 10 and [r["epoch"] for r in vae.history_] == list(range(1, 11))
    assert not torch.equal(weights, vae.decoder_.network[0].weight)
    cold = vae.set_params(warm_start=False).fit(X)
    assert cold.n_iter_ == 5
    np.testing.assert_array_equal(cold.transform(X), VAETransformer(**SMALL).fit(X).transform(X))


@pytest.mark.parametrize(
    "fitted_objective, objective", [("avb", "elbo"), ("avb", "iwae"), ("avb", "mine"), ("elbo", "avb")]
)
def test_resuming_across_the_implicit_encoder_raises(blobs, fitted_objective, objective):
    X = blobs[0]
    vae = VAETransformer(objective=fitted_objective, warm_start=True, **{**SMALL, "max_iter": 2}).fit(X)
    codes = vae.transform(X)
    vae.set_params(objective=objective)
    with pytest.raises(ValueError, match="encoder.*warm_start=False"):
        vae.fit(X)
    with pytest.raises(ValueError, match="encoder"):
        vae.partial_fit(X)
    assert vae.n_iter_ == 2
    np.testing.assert_array_equal(vae.transform(X), codes)
    vae.set_params(warm_start=False).fit(X)  # a cold start builds the right networks
    assert vae.n_iter_ == 2


def test_partial_fit_trains_one_epoch_per_call(blobs):
    X = blobs[0]
    vae = VAETransformer(**SMALL)
    vae.partial_fit(X[:60])
    vae.partial_fit(X[60:])
    assert vae.n_iter_ == 2 and len(vae.history_) == 2
    with pytest.raises(ValueError, match="features"):
        vae.partial_fit(X[:, :3])


def test_non_finite_loss_raises_and_keeps_the_last_good_state(blobs):
    huge = np.full((20, 4), 1e100)
    fresh = VAETransformer(**SMALL)
    with pytest.raises(NonFiniteLossError, match="learning_rate_init.*StandardScaler"):
        fresh.fit(huge)
    assert not hasattr(fresh, "n_features_in_") and not hasattr(fresh, "encoder_")

    X = blobs[0]
    vae = VAETransformer(**SMALL).fit(X)
    before = vae.transform(X)
    with pytest.raises(NonFiniteLossError):
        vae.fit(huge)
    assert vae.n_features_in_ == 6
    np.testing.assert_array_equal(vae.transform(X), before)

    vae.set_params(warm_start=True)
    with pytest.raises(NonFiniteLossError):
        vae.fit(np.full((20, 6), 1e100))
    assert vae.n_iter_ == 5
    np.testing.assert_array_equal(vae.transform(X), before)


def test_keyboard_interrupt_stops_cleanly_with_a_usable_estimator(blobs, monkeypatch):
    calls = {"n": 0}
    original = ELBO.loss_terms

    def interrupt_on_step_12(self, model, batch, context):
        calls["n"] += 1
        if calls["n"] == 12 and context.training:
            raise KeyboardInterrupt
        return original(self, model, batch, context)

    monkeypatch.setattr(ELBO, "loss_terms", interrupt_on_step_12)
    # 120 rows in batches of 40: the 12th step is the first of epoch 4.
    with pytest.warns(UserWarning, match="interrupted"):
        vae = VAETransformer(**{**SMALL, "max_iter": 50}, batch_size=40).fit(blobs[0])
    assert vae.n_iter_ == 3
    assert np.all(np.isfinite(vae.transform(blobs[0])))


# -- bad input ----------------------------------------------------------------
@pytest.mark.parametrize(
    "X, error, message",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), ValueError, "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), ValueError, "infinity"),
        (sp.random(10, 3, density=0.5, format="csr", random_state=0), TypeError, "dense"),
        (np.array([["a", "b"], ["c", "d"]]), ValueError, "float"),
        (np.zeros((0, 3)), ValueError, "0 sample"),
        (np.zeros(5), ValueError, "2D array"),
    ],
)
def test_bad_training_input_raises_sklearn_errors(X, error, message):
    with pytest.raises(error, match=message):
        VAETransformer(**SMALL).fit(X)


def test_wrong_feature_count_at_transform_time(fitted):
    with pytest.raises(ValueError, match="X has 2 features, but VAETransformer is expecting 6"):
        fitted.transform(np.zeros((3, 2)))


def test_bernoulli_likelihood_requires_unit_interval():
    X = np.random.default_rng(0).uniform(size=(30, 4))
    vae = VAETransformer(likelihood="bernoulli", **SMALL).fit(X)
    assert np.all((vae.sample(5, random_state=0) >= 0) & (vae.sample(5, random_state=0) <= 1))
    with pytest.raises(ValueError, match=r"\[0, 1\].*MinMaxScaler"):
        vae.score_samples(X * 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VAETransformer(likelihood="bernoulli", **SMALL).fit(X - 0.5)


@pytest.mark.parametrize("sizes", [(0,), (3, -1), ((2, 2),), (1.5,)])
def test_invalid_hidden_layer_sizes(blobs, sizes):
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        VAETransformer(**{**SMALL, "hidden_layer_sizes": sizes}).fit(blobs[0])


# -- persistence --------------------------------------------------------------
def test_pickle_and_joblib_round_trip(blobs, device):
    X = blobs[0]
    vae = VAETransformer(**SMALL, device=device).fit(X)
    restored = pickle.loads(pickle.dumps(vae))
    np.testing.assert_array_equal(restored.transform(X), vae.transform(X))
    np.testing.assert_array_equal(restored.score_samples(X), vae.score_samples(X))
    buffer = io.BytesIO()
    joblib.dump(vae, buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(joblib.load(buffer).transform(X), vae.transform(X))
    # The optimiser state survives too: warm starting the copy matches the original.
    restored.set_params(warm_start=True).fit(X)
    vae.set_params(warm_start=True).fit(X)
    np.testing.assert_array_equal(restored.transform(X), vae.transform(X))


def test_unpickling_a_model_from_a_missing_device_maps_to_cpu(fitted, blobs):
    # Pretend the networks were fitted on a GPU this machine lacks.
    fitted_copy = pickle.loads(pickle.dumps(fitted))
    fitted_copy._device = "cuda:7"
    payload = pickle.dumps(fitted_copy)
    with pytest.warns(UserWarning, match="cuda:7.*CPU"):
        restored = pickle.loads(payload)
    assert restored._device == "cpu"
    np.testing.assert_array_equal(restored.transform(blobs[0]), fitted.transform(blobs[0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_fitted_model_loads_in_a_cpu_only_process(blobs, tmp_path):
    X = blobs[0]
    vae = VAETransformer(**SMALL, device="cuda").fit(X)
    path = tmp_path / "vae.joblib"
    joblib.dump(vae, path)
    np.save(tmp_path / "X.npy", X)
    script = (
        "import joblib, numpy as np, warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    vae = joblib.load({str(path)!r})\n"
        "assert any('CPU' in str(w.message) for w in caught)\n"
        f"np.save({str(tmp_path / 'Z.npy')!r}, vae.transform(np.load({str(tmp_path / 'X.npy')!r})))\n"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    np.testing.assert_allclose(np.load(tmp_path / "Z.npy"), vae.transform(X), atol=1e-6)


# -- properties -----------------------------------------------------------------
@st.composite
def datasets(draw):
    n_samples = draw(st.integers(2, 25))
    n_features = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    X = np.random.default_rng(seed).normal(size=(n_samples, n_features))
    return X * draw(st.sampled_from([0.1, 1.0, 10.0]))


@given(X=datasets(), n_components=st.integers(1, 3), random_state=st.integers(0, 100))
def test_property_shapes_finiteness_and_bound_order(X, n_components, random_state):
    vae = VAETransformer(
        n_components=n_components, hidden_layer_sizes=(4,), max_iter=2,
        n_importance_samples=8, random_state=random_state,
    ).fit(X)
    Z = vae.transform(X)
    iwae = vae.score_samples(X)
    assert Z.shape == (len(X), n_components) and np.all(np.isfinite(Z))
    assert vae.inverse_transform(Z).shape == X.shape
    assert np.all(np.isfinite(iwae))
    # ELBO <= IWAE bound, on average (here per row: both use the same draws).
    assert vae.score(X) <= iwae.mean() + 1e-9


@given(X=datasets(), random_state=st.integers(0, 100), data=st.data())
def test_property_determinism_and_row_independence(X, random_state, data):
    torch_state = torch.random.get_rng_state()
    params = dict(hidden_layer_sizes=(4,), max_iter=2, n_importance_samples=8,
                  random_state=random_state)
    first = VAETransformer(**params).fit(X)
    second = VAETransformer(**params).fit(X)
    assert torch.equal(torch_state, torch.random.get_rng_state())
    np.testing.assert_array_equal(first.transform(X), second.transform(X))
    np.testing.assert_array_equal(first.score_samples(X), second.score_samples(X))
    order = np.asarray(data.draw(st.permutations(range(len(X)))))
    np.testing.assert_allclose(first.score_samples(X[order]), first.score_samples(X)[order], rtol=1e-12)
    np.testing.assert_allclose(first.transform(X[order[:1]]), first.transform(X)[order[:1]], rtol=1e-12)


# -- quality on digits -----------------------------------------------------------
@pytest.fixture(scope="module")
def digits_split():
    digits = load_digits()
    # Dequantise the 17 grey levels into [0, 1) so a density on them is finite.
    noise = np.random.default_rng(0).uniform(size=digits.data.shape)
    X = (digits.data + noise) / 17
    return train_test_split(X, digits.target, test_size=0.25, random_state=0)


def test_digits_held_out_likelihood_improves_and_beats_a_diagonal_gaussian(digits_split):
    X_train, X_test, _, _ = digits_split
    vae = VAETransformer(
        n_components=8, hidden_layer_sizes=(128,), max_iter=2, batch_size=64,
        learning_rate_init=3e-3, warm_start=True, random_state=0,
    ).fit(X_train)
    early = vae.score_samples(X_test).mean()
    vae.set_params(max_iter=18).fit(X_train)
    late = vae.score_samples(X_test).mean()
    baseline = GaussianMixture(1, covariance_type="diag", random_state=0).fit(X_train)
    assert late > early
    assert late > baseline.score(X_test)


def test_digits_two_dimensional_codes_separate_classes(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    vae = VAETransformer(
        n_components=2, hidden_layer_sizes=(128,), likelihood="bernoulli",
        max_iter=15, batch_size=64, learning_rate_init=3e-3, random_state=0,
    ).fit(X_train)
    knn = KNeighborsClassifier(10).fit(vae.transform(X_train), y_train)
    assert knn.score(vae.transform(X_test), y_test) > 0.5  # chance is about 0.1
