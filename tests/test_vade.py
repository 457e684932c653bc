"""Tests for VariationalGMMPrior (VaDE deep clustering)."""

import collections
import concurrent.futures
import pickle
import threading
import time
import warnings
from types import SimpleNamespace

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sklearn_vae._vade
from sklearn_vae import VariationalGMMPrior, load_model, save_model
from sklearn_vae.metrics import clustering_accuracy
from sklearn_vae.neural._engine import NonFiniteLossError
from sklearn_vae.neural._mixture_objectives import (
    AssignmentConvergence,
    CollapseGuard,
    MixtureMaximization,
    MixturePriorELBO,
    NeighborEmbeddingPretraining,
)
from sklearn_vae.neural._mixture_prior import GaussianMixturePrior

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_CLUSTERS = 4


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These networks are tiny: one thread beats two on a shared two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def embedded_clusters(n_per_cluster=75, n_features=20, seed=0, dtype=np.float64):
    """Well-separated 2-D clusters pushed through a random non-linear map to 20-D."""
    rng = np.random.default_rng(seed)
    centers = 4.0 * np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    y = np.repeat(np.arange(N_CLUSTERS), n_per_cluster)
    latent = centers[y] + 0.4 * rng.normal(size=(y.size, 2))
    weights = rng.normal(size=(2, n_features)) / 2.0
    X = np.tanh(latent @ weights + rng.normal(size=n_features)) + np.sin(latent @ weights[:, ::-1])
    X += 0.05 * rng.normal(size=X.shape)
    return StandardScaler().fit_transform(X).astype(dtype), y


def small_model(**params):
    """Settings that fit the 300-row test data in about a second."""
    defaults = {
        "n_components": N_CLUSTERS,
        "latent_dim": 2,
        "hidden_layer_sizes": (32,),
        "pretrain_epochs": 15,
        "max_iter": 10,
        "n_init": 3,
        "n_neighbors": 10,
        "batch_size": 64,
        "random_state": 0,
    }
    return VariationalGMMPrior(**{**defaults, **params})


@pytest.fixture(scope="module")
def data():
    return embedded_clusters()


@pytest.fixture(scope="module")
def fitted(data):
    X, _ = data
    return small_model().fit(X)


def test_clusters_nonlinearly_embedded_blobs(data, fitted):
    X, y = data
    labels = fitted.labels_
    assert clustering_accuracy(y, labels) >= 0.95
    assert np.all(np.bincount(labels, minlength=N_CLUSTERS) > 0)
    np.testing.assert_array_equal(labels, fitted.predict(X))
    for component in range(N_CLUSTERS):
        X_new, y_new = fitted.sample(50, component=component)
        assert np.all(y_new == component)
        assert np.mean(fitted.predict(X_new) == component) >= 0.95


def test_fitted_attributes(data, fitted):
    X, _ = data
    assert fitted.weights_.shape == (N_CLUSTERS,)
    np.testing.assert_allclose(fitted.weights_.sum(), 1.0)
    assert fitted.means_.shape == (N_CLUSTERS, 2)
    assert fitted.covariances_.shape == (N_CLUSTERS, 2) and np.all(fitted.covariances_ > 0)
    assert fitted.n_iter_ == len(fitted.history_) == 10
    assert len(fitted.pretrain_history_) == 15
    assert {"reconstruction", "neighbor_embedding"} <= set(fitted.pretrain_history_[0])
    assert {"kl_latent", "kl_cluster", "consistency", "batch_entropy"} <= set(fitted.history_[0])
    assert isinstance(fitted.encoder_, torch.nn.Module) and isinstance(fitted.decoder_, torch.nn.Module)
    assert fitted.lower_bound_ == pytest.approx(fitted.score(X))
    assert fitted.converged_ is False
    assert fitted.n_features_in_ == 20


def test_plain_vade_without_neighbour_graph(data):
    X, y = data
    model = small_model(n_neighbors=None, covariance_type="spherical").fit(X)
    assert "neighbor_embedding" not in model.pretrain_history_[0]
    assert "consistency" not in model.history_[0]
    assert model.covariances_.shape == (N_CLUSTERS,)
    assert clustering_accuracy(y, model.labels_) > 0.5


def test_inference_is_deterministic_and_row_independent(data, fitted):
    X, _ = data
    proba = fitted.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    scores = fitted.score_samples(X)
    order = np.random.default_rng(0).permutation(len(X))[:37]
    np.testing.assert_allclose(fitted.predict_proba(X[order]), proba[order], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fitted.score_samples(X[order]), scores[order], rtol=1e-10)
    np.testing.assert_array_equal(fitted.score_samples(X), scores)
    assert fitted.score(X) == pytest.approx(scores.mean())
    assert np.all(np.isfinite(scores))


def test_score_is_higher_on_training_data_than_on_noise(data, fitted):
    X, _ = data
    noise = np.random.default_rng(1).normal(scale=3.0, size=X.shape)
    assert fitted.score(X) > fitted.score(noise)


def test_transform_inverse_transform_and_feature_names(data, fitted):
    X, _ = data
    Z = fitted.transform(X)
    assert Z.shape == (len(X), 2)
    assert fitted.inverse_transform(Z).shape == X.shape
    names = fitted.get_feature_names_out()
    np.testing.assert_array_equal(names, ["variationalgmmprior0", "variationalgmmprior1"])
    frame = clone(fitted).set_output(transform="pandas").fit(X).transform(X)
    assert list(frame.columns) == list(names)
    with pytest.raises(ValueError, match="latent_dim_=2"):
        fitted.inverse_transform(np.zeros((3, 5)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(data, dtype):
    X, _ = data
    model = small_model(pretrain_epochs=2, max_iter=2).fit(X.astype(dtype))
    assert next(model.encoder_.parameters()).dtype == (torch.float32 if dtype == np.float32 else torch.float64)
    for output in (model.transform(X.astype(dtype)), model.predict_proba(X.astype(dtype)), model.score_samples(X.astype(dtype))):
        assert output.dtype == dtype
        assert np.all(np.isfinite(output))


def test_same_random_state_gives_identical_fits(data):
    X, _ = data
    first = small_model(pretrain_epochs=3, max_iter=3, random_state=7).fit(X)
    second = small_model(pretrain_epochs=3, max_iter=3, random_state=7).fit(X)
    np.testing.assert_array_equal(first.means_, second.means_)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    other = small_model(pretrain_epochs=3, max_iter=3, random_state=8).fit(X)
    assert not np.array_equal(first.means_, other.means_)


def test_torch_global_random_state_is_untouched(data):
    X, _ = data
    before = torch.random.get_rng_state()
    small_model(pretrain_epochs=1, max_iter=1).fit(X)
    assert torch.equal(before, torch.random.get_rng_state())


def test_sample_is_reproducible_and_validated(fitted):
    X1, y1 = fitted.sample(20)
    X2, y2 = fitted.sample(20)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert X1.shape == (20, 20) and y1.dtype == np.int64
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)
    with pytest.raises(ValueError, match="component"):
        fitted.sample(5, component=N_CLUSTERS)


def test_balanced_weight_prior_holds_weights_near_uniform():
    X, _ = embedded_clusters()
    keep = np.r_[0:150, 150:180]  # two clusters of 75 and one of 30: weights 5/12, 5/12, 1/6
    X = X[keep]
    params = {"n_components": 3, "pretrain_epochs": 5, "max_iter": 3}
    free = small_model(**params).fit(X)
    balanced = small_model(**params, weight_concentration_prior=1e3).fit(X)
    uniform = np.full(3, 1 / 3)
    assert np.abs(free.weights_ - uniform).max() > 0.1
    # The MAP weights under Dir(1000) of 180 rows: (N_c + 999) / (180 + 2997).
    assert np.abs(balanced.weights_ - uniform).max() < 0.03


def test_closed_form_weights_are_the_map_of_the_epoch_responsibilities():
    prior = GaussianMixturePrior(3, 2).double()
    prior.initialize(np.full(3, 1 / 3), np.zeros((3, 2)), np.ones((3, 2)))
    objective = MixturePriorELBO(weight_concentration_prior=4.0, consistency_weight=0.0)
    gamma = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.5, 0.0, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    mean = torch.zeros(4, 2, dtype=torch.float64)
    objective.statistics = prior.sufficient_statistics(mean, mean, gamma.clamp_min(1e-300).log())
    engine = SimpleNamespace(model=SimpleNamespace(prior=prior), objective=objective)
    MixtureMaximization(4.0).on_epoch_end(engine, {})
    counts = gamma.sum(dim=0).numpy()  # [2.6, 0.9, 0.5]
    np.testing.assert_allclose(prior.weights.detach().numpy(), (counts + 3) / (4 + 9), rtol=1e-10)


def _assignment_rule_history(tol: float, patience: int, epochs: list) -> list:
    """Run AssignmentConvergence over epochs of labels: (change, stop) per epoch."""
    objective = MixturePriorELBO(None, 0.0)
    engine = SimpleNamespace(objective=objective, stop_training=False)
    rule = AssignmentConvergence(tol=tol, patience=patience)
    rule.on_train_begin(engine)
    history = []
    for labels in epochs:
        objective.assignments = torch.tensor(labels)
        record = {}
        engine.stop_training = False
        rule.on_epoch_end(engine, record)
        history.append((record.get("assignment_change"), engine.stop_training))
    return history


def test_assignment_convergence_stops_when_the_windows_mean_change_is_small():
    epochs = [[0, 0, 1, 1, 2], [1, 1, 1, 1, 2], [1, 1, 1, 2, 2], [1, 1, 1, 2, 2], [1, 0, 1, 2, 1]]
    history = _assignment_rule_history(0.2, 2, epochs)
    # Changes of 0.4 then 0.2 average 0.3 > tol; 0.2 then 0.0 average 0.1,
    # although not every epoch of the first window was under tol; a later
    # window of 0.0 and 0.4 averages exactly tol, which counts as settled.
    assert history == [(None, False), (0.4, False), (0.2, False), (0.0, True), (0.4, True)]


def test_assignment_convergence_with_zero_tol_needs_a_window_without_change():
    history = _assignment_rule_history(0.0, 2, [[0, 1, 1], [0, 1, 0], [0, 1, 0], [0, 1, 0]])
    assert [stop for _, stop in history] == [False, False, False, True]


def test_a_converging_fit_does_not_warn_and_a_short_one_does(data):
    X, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = small_model(max_iter=200, n_iter_no_change=3).fit(X)
    assert model.converged_ and model.n_iter_ < 200
    assert all(record["assignment_change"] <= 0.01 for record in model.history_[-3:])
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        short = small_model(max_iter=2).fit(X)
    assert not short.converged_


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_latent_covariance_types(data, covariance_type):
    X, y = data
    model = small_model(covariance_type=covariance_type, latent_dim=3).fit(X)
    shapes = {"full": (N_CLUSTERS, 3, 3), "diag": (N_CLUSTERS, 3), "spherical": (N_CLUSTERS,)}
    assert model.covariances_.shape == shapes[covariance_type]
    if covariance_type == "full":
        assert np.all(np.linalg.eigvalsh(model.covariances_) > 0)
        np.testing.assert_allclose(model.covariances_, model.covariances_.transpose(0, 2, 1))
    assert clustering_accuracy(y, model.labels_) >= 0.9
    X_new, labels = model.sample(40)
    assert X_new.shape == (40, X.shape[1]) and labels.shape == (40,)


@pytest.mark.parametrize(
    "n_neighbors, covariance_type, expected",
    [(10, "auto", "diag"), (None, "auto", "full"), (None, "diag", "diag"), (10, "full", "full")],
)
def test_auto_covariance_type_follows_the_neighbour_graph(
    data, n_neighbors, covariance_type, expected
):
    # 'auto' is 'diag' for neighbour-preserving codes and 'full' for a plain
    # autoencoder's; an explicit type is used as given.
    X, _ = data
    model = small_model(n_neighbors=n_neighbors, covariance_type=covariance_type, latent_dim=3)
    model.fit(X)
    assert model.covariance_type == covariance_type  # the parameter is left as set
    assert model.covariance_type_ == expected == model.prior_.covariance_type
    shapes = {"full": (N_CLUSTERS, 3, 3), "diag": (N_CLUSTERS, 3)}
    assert model.covariances_.shape == shapes[expected]
    # The initial mixture was fitted with the same type: its covariances are
    # the prior's, up to the joint training that followed.
    initial = model._initial_mixture(model.transform(X), 0, model.covariance_type_)
    assert initial.covariance_type == expected


@pytest.mark.parametrize("extra_rows, expected", [(0, "full"), (-1, "diag")])
def test_plain_auto_covariance_type_needs_a_row_per_full_parameter(data, extra_rows, expected):
    # Plain VaDE's 'auto' is 'full' only with at least as many rows per
    # component as a full component has free parameters,
    # latent_dim * (latent_dim + 3) / 2: 5 at latent_dim=2, so 20 rows for 4
    # components. Below that a full covariance is poorly estimated.
    X, _ = data
    n_rows = N_CLUSTERS * 5 + extra_rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = small_model(
            n_neighbors=None, pretrain_epochs=2, max_iter=1, batch_size=8
        ).fit(X[:n_rows])
    assert model.covariance_type == "auto"
    assert model.covariance_type_ == expected == model.prior_.covariance_type
    assert not hasattr(model, "_n_training_rows")  # the fit's, not kept
    # A copy rebuilt from the fitted attributes builds the same prior, as
    # loading a model file does.
    rebuilt = pickle.loads(pickle.dumps(model))
    assert rebuilt._build_model(X.shape[1]).prior.covariance_type == expected
    # An explicit type is used whatever the rows.
    explicit = small_model(
        n_neighbors=None, covariance_type="full", pretrain_epochs=2, max_iter=1, batch_size=8
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert explicit.fit(X[: N_CLUSTERS * 5 - 1]).covariance_type_ == "full"


def uneven_codes():
    """Codes on which the mixture likelihood prefers the less even clustering.

    Two blobs of 100 rows 4 apart (A, B) and 300 rows in two sub-blobs 2.5
    apart (C1, C2). With 3 components EM finds either {A, B, C} (weights
    0.2, 0.2, 0.6; log-likelihood -2.96 per row) or {A + B, C1, C2} (0.4,
    0.3, 0.3; -3.06 per row).
    """
    rng = np.random.default_rng(0)
    return np.vstack(
        [
            rng.normal([0.0, 0.0], 0.5, (100, 2)),
            rng.normal([4.0, 0.0], 0.5, (100, 2)),
            rng.normal([12.0, 0.0], 0.5, (150, 2)),
            rng.normal([12.0, 2.5], 0.5, (150, 2)),
        ]
    )


@pytest.fixture
def recorded_initial_fits(monkeypatch):
    """Every EMGaussianMixture that VariationalGMMPrior fits, in order."""
    import sklearn_vae._vade as vade_module

    fits = []

    class RecordingMixture(vade_module.EMGaussianMixture):
        def fit(self, X, y=None):
            fits.append(super().fit(X, y))
            return fits[-1]

    monkeypatch.setattr(vade_module, "EMGaussianMixture", RecordingMixture)
    return fits


@pytest.mark.parametrize(
    "init_selection, weight_concentration_prior, expected_weights",
    [
        ("auto", None, [0.3, 0.3, 0.4]),
        ("entropy", None, [0.3, 0.3, 0.4]),
        ("map", None, [0.2, 0.2, 0.6]),
        # A prior below 1 is meant to empty components: 'auto' is 'map' then.
        ("auto", 0.5, [0.2, 0.2, 0.6]),
        # The MAP objective includes the Dirichlet prior, which at 1e3
        # outweighs the likelihood and prefers the even clustering too.
        ("map", 1e3, [0.3, 0.3, 0.4]),
        ("auto", 1e3, [0.3, 0.3, 0.4]),
    ],
)
def test_init_selection_chooses_among_the_initial_fits(
    recorded_initial_fits, init_selection, weight_concentration_prior, expected_weights
):
    codes = uneven_codes()
    model = VariationalGMMPrior(
        3,
        n_init=10,
        init_selection=init_selection,
        weight_concentration_prior=weight_concentration_prior,
    )
    chosen = model._initial_mixture(codes, 0, "diag")
    assert len(recorded_initial_fits) == 10 and any(chosen is fit for fit in recorded_initial_fits)
    found = {tuple(np.round(np.sort(fit.weights_), 1)) for fit in recorded_initial_fits}
    assert found == {(0.2, 0.2, 0.6), (0.3, 0.3, 0.4)}  # both optima among the starts
    np.testing.assert_allclose(np.sort(chosen.weights_), expected_weights, atol=0.02)
    objectives = [model._map_objective(fit, codes) for fit in recorded_initial_fits]
    if model._init_selection() == "map":
        assert model._map_objective(chosen, codes) == max(objectives)
    else:
        # The most even weights; among the starts that reached that optimum,
        # the best MAP objective.
        entropies = [scipy.stats.entropy(fit.weights_) for fit in recorded_initial_fits]
        assert scipy.stats.entropy(chosen.weights_) >= max(entropies) - 1e-3
        same_optimum = [o for o, h in zip(objectives, entropies) if h >= max(entropies) - 1e-3]
        assert model._map_objective(chosen, codes) == max(same_optimum)
    assert model.init_selection == init_selection  # the parameter is left as set


@pytest.mark.parametrize(
    "n_pretrain, weight_concentration_prior, n_starts",
    [
        ("auto", None, 1),
        ("auto", 0.5, 1),
        ("auto", 1.0, 2),
        ("auto", 1e3, 2),
        (1, 1e3, 1),
        (2, None, 2),
    ],
)
def test_n_pretrain_auto_runs_several_starts_only_under_a_balanced_prior(
    data, n_pretrain, weight_concentration_prior, n_starts
):
    X, _ = data
    model = small_model(
        n_pretrain=n_pretrain,
        weight_concentration_prior=weight_concentration_prior,
        pretrain_epochs=2,
        max_iter=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    assert model.pretrain_entropies_.shape == (n_starts,)
    assert model.n_pretrain == n_pretrain  # the parameter is left as set


@pytest.mark.parametrize(
    "n_features, latent_dim, n_neighbors, expected",
    [
        (3, "auto", "auto", (3, None)),  # as many latent dimensions as features: no graph
        (10, "auto", "auto", (10, None)),
        (20, "auto", "auto", (10, 15)),  # wider data: 10 dimensions, the graph
        (20, 2, "auto", (2, 15)),
        (3, 4, "auto", (4, None)),
        (3, "auto", 5, (3, 5)),  # explicit values are used as given
        (20, "auto", None, (10, None)),
    ],
)
def test_auto_latent_dim_and_neighbours_follow_the_number_of_features(
    n_features, latent_dim, n_neighbors, expected, monkeypatch
):
    X, _ = embedded_clusters(n_per_cluster=30, n_features=n_features)
    graphs = []
    build_graph = sklearn_vae._vade.nearest_neighbor_graph

    def record_graph(X, k, **kwargs):
        graphs.append(k)
        return build_graph(X, k, **kwargs)

    monkeypatch.setattr(sklearn_vae._vade, "nearest_neighbor_graph", record_graph)
    model = small_model(latent_dim=latent_dim, n_neighbors=n_neighbors, pretrain_epochs=2, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    assert (model.latent_dim, model.n_neighbors) == (latent_dim, n_neighbors)  # left as set
    assert (model.latent_dim_, model.n_neighbors_) == expected
    assert graphs == ([] if expected[1] is None else [expected[1]])
    assert model.means_.shape == (N_CLUSTERS, expected[0])
    assert model.transform(X).shape == (len(X), expected[0])
    assert len(model.get_feature_names_out()) == expected[0]
    assert model.inverse_transform(model.transform(X)).shape == X.shape
    for name in ("_fit_latent_dim", "_fit_n_neighbors"):  # the fit's, not kept
        assert not hasattr(model, name)


def test_resumed_fits_and_rebuilt_networks_keep_the_fitted_latent_space(tmp_path):
    X, _ = embedded_clusters(n_per_cluster=30, n_features=6)
    model = small_model(latent_dim="auto", n_neighbors="auto", pretrain_epochs=2, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
        assert (model.latent_dim_, model.n_neighbors_) == (6, None)
        # A warm start continues the fitted networks whatever latent_dim now says.
        model.set_params(latent_dim=2, warm_start=True).fit(X)
        assert model.latent_dim_ == 6 and model.transform(X).shape == (len(X), 6)
        streamed = clone(model).set_params(latent_dim="auto", warm_start=False)
        streamed.partial_fit(X[:60]).partial_fit(X[60:])
        assert (streamed.latent_dim_, streamed.n_neighbors_) == (6, None)
    path = tmp_path / "vade.skvae"
    save_model(streamed, path)
    loaded = load_model(path)
    assert loaded.latent_dim_ == 6
    np.testing.assert_array_equal(loaded.transform(X), streamed.transform(X))
    # A fresh fit resolves again, from the new data.
    wide, _ = embedded_clusters(n_per_cluster=30, n_features=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(latent_dim="auto", warm_start=False).fit(wide)
    assert (model.latent_dim_, model.n_neighbors_) == (10, 15)


def test_n_pretrain_keeps_the_start_with_the_most_even_weights(data, monkeypatch):
    X, _ = data
    starts, chosen = [], {}
    pretrained_start = VariationalGMMPrior._pretrained_start
    initialize_model = VariationalGMMPrior._initialize_model

    def record_start(self, model, data, seed, cancelled=None):
        history = pretrained_start(self, model, data, seed, cancelled)
        state = {name: value.clone() for name, value in model.state_dict().items()}
        starts.append({"history": history, "state": state})
        return history

    def record_choice(self, model, data, seed):
        initialize_model(self, model, data, seed)
        chosen["state"] = {name: value.clone() for name, value in model.state_dict().items()}

    monkeypatch.setattr(VariationalGMMPrior, "_pretrained_start", record_start)
    monkeypatch.setattr(VariationalGMMPrior, "_initialize_model", record_choice)
    winners = []
    for seed in range(6, 12):
        starts.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = small_model(
                n_pretrain=3, pretrain_epochs=3, max_iter=1, random_state=seed
            ).fit(X)
        assert len(starts) == 3
        entropies = [
            scipy.stats.entropy(start["state"]["prior.weight_logits"].softmax(0).numpy())
            for start in starts
        ]
        np.testing.assert_allclose(model.pretrain_entropies_, entropies, rtol=1e-12)
        winner = int(np.argmax(entropies))
        winners.append(winner)
        # The starts are independent: each pretrains its own networks.
        weights = [start["state"]["encoder.network.0.weight"] for start in starts]
        assert not any(torch.equal(weights[0], other) for other in weights[1:])
        # Joint training began from the winner's networks and mixture, and
        # the pretraining history reported is the winner's.
        for name, value in chosen["state"].items():
            assert torch.equal(value, starts[winner]["state"][name]), name
        assert model.pretrain_history_ is starts[winner]["history"]
    # The seeds cover both ways the winner is kept: still in the model (the
    # first start) and loaded from another start's networks.
    assert 0 in winners and {1, 2} & set(winners), winners


def test_several_pretrainings_are_reproducible_and_leave_torch_alone(data):
    X, _ = data
    before = torch.random.get_rng_state()
    params = {"n_pretrain": 3, "pretrain_epochs": 3, "max_iter": 2, "random_state": 3}
    first = small_model(**params).fit(X)
    assert torch.equal(before, torch.random.get_rng_state())
    second = small_model(**params).fit(X)
    np.testing.assert_array_equal(first.pretrain_entropies_, second.pretrain_entropies_)
    np.testing.assert_array_equal(first.means_, second.means_)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    # The first start is the single pretraining of n_pretrain=1.
    single = small_model(**{**params, "n_pretrain": 1}).fit(X)
    assert single.pretrain_entropies_[0] == first.pretrain_entropies_[0]


@pytest.mark.parametrize("n_jobs", [2, -1])
def test_starts_on_several_threads_fit_exactly_what_one_thread_fits(data, n_jobs):
    X, _ = data
    params = {"n_pretrain": 3, "pretrain_epochs": 3, "max_iter": 2, "random_state": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        serial = small_model(**params).fit(X)
        parallel = small_model(**params, n_jobs=n_jobs).fit(X)
    np.testing.assert_array_equal(serial.pretrain_entropies_, parallel.pretrain_entropies_)
    assert _without_times(serial.pretrain_history_) == _without_times(parallel.pretrain_history_)
    assert _without_times(serial.history_) == _without_times(parallel.history_)
    for name, value in serial._fitted_model().state_dict().items():
        assert torch.equal(value, parallel._fitted_model().state_dict()[name]), name
    assert torch.get_num_threads() == 1  # the module's setting, put back
    assert parallel.n_jobs == n_jobs  # left as set


def _without_times(history):
    return [{key: value for key, value in record.items() if key != "time"} for record in history]


def test_n_jobs_runs_the_starts_side_by_side(data, monkeypatch):
    X, _ = data
    # The barrier only opens when the two starts pretrain at the same time.
    barrier = threading.Barrier(2, timeout=30)
    threads = []
    pretrained_start = VariationalGMMPrior._pretrained_start

    def meet_then_pretrain(self, model, data, seed, cancelled=None):
        threads.append(threading.current_thread().name)
        barrier.wait()
        return pretrained_start(self, model, data, seed, cancelled)

    monkeypatch.setattr(VariationalGMMPrior, "_pretrained_start", meet_then_pretrain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        small_model(n_pretrain=2, pretrain_epochs=2, max_iter=1, n_jobs=2).fit(X)
    assert len(set(threads)) == 2 and all(name.startswith("sklearn-vae") for name in threads)
    # Under joblib's parallel_config too, as scikit-learn's n_jobs=None is.
    threads.clear()
    barrier.reset()
    with joblib.parallel_config(n_jobs=2), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        small_model(n_pretrain=2, pretrain_epochs=2, max_iter=1).fit(X)
    assert len(set(threads)) == 2


def test_a_failing_start_stops_the_others_and_leaves_the_estimator_unfitted(data, monkeypatch):
    X, _ = data
    steps = collections.Counter()
    loss_terms = NeighborEmbeddingPretraining.loss_terms

    def second_start_fails(self, model, batch, context):
        name = threading.current_thread().name
        steps[name] += 1
        if name.endswith("_1"):  # the pool's second worker fails at once
            raise RuntimeError("injected failure in a pretraining step")
        return loss_terms(self, model, batch, context)

    monkeypatch.setattr(NeighborEmbeddingPretraining, "loss_terms", second_start_fails)
    model = small_model(n_pretrain=2, pretrain_epochs=300, n_jobs=2)
    with pytest.raises(RuntimeError, match="injected failure"):
        model.fit(X)
    assert not hasattr(model, "n_iter_") and not hasattr(model, "pretrain_entropies_")
    # The first start gave up within an epoch of the failure instead of
    # pretraining for 300 epochs (5 steps each).
    # (It may not have begun a step at all.)
    first_steps = sum(count for name, count in steps.items() if name.endswith("_0"))
    assert first_steps < 300 * 5 // 2, steps


def test_ctrl_c_while_starts_run_on_threads_abandons_the_fit(data, monkeypatch):
    X, _ = data
    wait = concurrent.futures.wait

    def wait_then_interrupt(futures, return_when):
        wait(futures, timeout=0.5)  # the starts are pretraining
        raise KeyboardInterrupt

    monkeypatch.setattr(concurrent.futures, "wait", wait_then_interrupt)
    model = small_model(n_pretrain=2, pretrain_epochs=500, n_jobs=2)
    began = time.perf_counter()
    with pytest.raises(KeyboardInterrupt, match="during pretraining"):
        model.fit(X)
    assert time.perf_counter() - began < 20  # not two 500-epoch pretrainings
    assert not hasattr(model, "n_iter_")
    assert not [t for t in threading.enumerate() if t.name.startswith("sklearn-vae")]


def test_partial_fit_resolves_auto_covariance_type_on_its_first_batch(data):
    X, _ = data
    model = small_model(n_neighbors=None, pretrain_epochs=2, batch_size=8)
    model.partial_fit(X[: N_CLUSTERS * 5 - 1])  # too few rows for 'full'
    assert model.covariance_type_ == "diag"
    model.partial_fit(X)  # a later batch updates the model it has
    assert model.covariance_type_ == "diag" == model.prior_.covariance_type


def correlated_clusters():
    """Three parallel clusters, long along the diagonal and thin across it, plus three noise features."""
    rng = np.random.default_rng(0)
    along, across = np.array([1.0, 1.0]) / np.sqrt(2), np.array([1.0, -1.0]) / np.sqrt(2)
    y = np.repeat(np.arange(3), 150)
    Z = (
        (y[:, None] - 1) * 2.5 * across
        + rng.standard_normal((450, 1)) * 2.0 * along
        + rng.standard_normal((450, 1)) * 0.3 * across
    )
    return np.hstack([Z, 0.1 * rng.standard_normal((450, 3))]), y


def test_defaults_on_few_features_fit_clusters_correlated_across_dimensions():
    # With as many latent dimensions as features the defaults run plain VaDE
    # ('auto' turns the graph off) with a 'full' latent mixture: a
    # per-dimension ('diag') mixture cuts such clusters apart, and so does
    # relu (0.71 mean accuracy over five seeds when calibrating, against
    # tanh's 1.00).
    X, y = correlated_clusters()
    accuracies = []
    for seed in range(2):
        model = VariationalGMMPrior(3, random_state=seed).fit(X)
        assert (model.latent_dim_, model.n_neighbors_, model.covariance_type_) == (5, None, "full")
        accuracies.append(clustering_accuracy(y, model.labels_))
    assert min(accuracies) >= 0.95, accuracies


def test_defaults_in_float32_cluster_as_well_as_in_float64():
    # Networks and mixture compute in float32 for float32 input; the
    # clustering must not suffer from it (on 3 seeds when calibrating: the
    # same accuracy to a row, 0.996-1.0, adjusted Rand index between the two
    # at least 0.993).
    X, y = correlated_clusters()
    narrow = VariationalGMMPrior(3, random_state=0).fit(X.astype(np.float32))
    wide = VariationalGMMPrior(3, random_state=0).fit(X)
    assert next(narrow.encoder_.parameters()).dtype == torch.float32
    assert narrow.predict_proba(X.astype(np.float32)).dtype == np.float32
    assert clustering_accuracy(y, narrow.labels_) >= 0.95
    assert adjusted_rand_score(narrow.labels_, wide.labels_) >= 0.9


def test_partial_fit_learns_from_streamed_blocks_and_carries_state():
    X, y = embedded_clusters(n_per_cluster=150)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    model = small_model(pretrain_epochs=10)
    blocks = np.array_split(np.arange(len(X)), 6)
    for call, block in enumerate(blocks, start=1):
        model.partial_fit(X[block])
        assert model.n_iter_ == call and len(model.history_) == call
    assert model._n_stepwise_updates == len(blocks) - 1
    assert model._prior_statistics["n_samples"] == len(X)
    assert clustering_accuracy(y, model.predict(X)) >= 0.8  # chance is about 0.25
    np.testing.assert_allclose(model.weights_.sum(), 1.0)
    # The running statistics carry over: the last block alone gives another prior.
    alone = small_model(pretrain_epochs=10).partial_fit(X[blocks[-1]])
    assert not np.allclose(alone.means_, model.means_)


def test_partial_fit_blends_the_batch_statistics_with_the_stepwise_schedule(data):
    X, _ = data
    model = small_model(pretrain_epochs=2, stepwise_decay=0.6).partial_fit(X[:150])
    first = {name: value.clone() if torch.is_tensor(value) else value
             for name, value in model._prior_statistics.items()}
    captured = {}
    original = GaussianMixturePrior.sufficient_statistics

    def capture(self, *args):
        captured["batch"] = original(self, *args)
        return captured["batch"]

    try:
        GaussianMixturePrior.sufficient_statistics = capture
        model.partial_fit(X[150:])
    finally:
        GaussianMixturePrior.sufficient_statistics = original
    step = 2.0**-0.6  # eta_0 = (0 + 2)^-alpha
    blended = model._prior_statistics
    torch.testing.assert_close(blended["counts"], (1 - step) * first["counts"] + step * captured["batch"].counts)
    torch.testing.assert_close(blended["second"], (1 - step) * first["second"] + step * captured["batch"].second)
    assert blended["n_samples"] == len(X)
    np.testing.assert_allclose(model.weights_, blended["counts"].numpy() / blended["counts"].sum().item(), rtol=1e-6)


def test_partial_fit_blocks_from_dask_ml_incremental():
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X, y = embedded_clusters(n_per_cluster=100)
    order = np.random.default_rng(1).permutation(len(X))
    X, y = X[order], y[order]
    incremental = wrappers.Incremental(small_model(pretrain_epochs=10), shuffle_blocks=False)
    incremental.fit(da.from_array(X, chunks=100))
    model = incremental.estimator_
    assert model.n_iter_ == 4
    assert clustering_accuracy(y, model.predict(X)) >= 0.8


def test_fit_after_partial_fit_starts_afresh(data):
    X, _ = data
    model = small_model(pretrain_epochs=2, max_iter=2).partial_fit(X[:150])
    model.fit(X)
    assert not hasattr(model, "_prior_statistics") and model.n_iter_ == 2


def test_collapse_guard_reseeds_and_records():
    prior = GaussianMixturePrior(3, 2).double()
    prior.initialize([0.6, 0.399, 0.001], np.arange(6.0).reshape(3, 2), np.ones((3, 2)))
    engine = SimpleNamespace(model=SimpleNamespace(prior=prior))
    record = {}
    CollapseGuard(0.01).on_epoch_end(engine, record)
    assert record["collapse_events"] == [{"component": 2, "split": 0, "weight": pytest.approx(0.001, rel=0.05)}]
    assert prior.weights.min() > 0.01
    record = {}
    CollapseGuard(0.01).on_epoch_end(engine, record)
    assert "collapse_events" not in record


def test_warm_start_continues_joint_training(data):
    X, _ = data
    model = small_model(pretrain_epochs=2, max_iter=2, warm_start=True).fit(X)
    pretrained = model.pretrain_history_
    model.fit(X)
    assert model.n_iter_ == 4 and len(model.history_) == 4
    assert model.pretrain_history_ is pretrained


def test_pipeline_grid_search_and_pickle(data):
    X, _ = data
    search = GridSearchCV(
        make_pipeline(StandardScaler(), small_model(pretrain_epochs=3, max_iter=2)),
        {"variationalgmmprior__latent_dim": [1, 2]},
        cv=2,
    ).fit(X)
    assert search.best_params_["variationalgmmprior__latent_dim"] in (1, 2)
    restored = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_array_equal(restored.predict_proba(X), search.best_estimator_.predict_proba(X))


def test_unpickling_on_a_machine_without_the_fit_device_maps_to_cpu(data, fitted):
    X, _ = data
    state = fitted.__getstate__()
    state["_device"] = "cuda:99"
    restored = VariationalGMMPrior.__new__(VariationalGMMPrior)
    with pytest.warns(UserWarning, match="loaded on the CPU"):
        restored.__setstate__(state)
    np.testing.assert_array_equal(restored.predict(X), fitted.predict(X))


def test_bad_input_raises_sklearn_errors(data, fitted):
    X, _ = data
    model = small_model()
    with pytest.raises(ValueError, match="NaN"):
        model.fit(np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X))
    with pytest.raises(ValueError, match="infinity"):
        model.fit(np.where(np.arange(X.size).reshape(X.shape) == 3, np.inf, X))
    with pytest.raises(TypeError, match="dense data is required|[Ss]parse"):
        model.fit(sp.csr_matrix(X))
    with pytest.raises(ValueError, match="n_samples=3"):
        model.fit(X[:3])
    with pytest.raises(ValueError, match="could not convert|numeric"):
        model.fit(np.array([["a", "b"], ["c", "d"]] * 5))
    with pytest.raises(ValueError, match="20 features"):
        fitted.predict(X[:, :5])
    with pytest.raises(ValueError, match="bernoulli"):
        small_model(likelihood="bernoulli").fit(X)
    assert not hasattr(model, "n_features_in_")


def test_non_finite_loss_leaves_estimator_unfitted_or_unchanged(data, fitted):
    X, _ = data
    huge = X * 1e100
    # relu passes the input's scale on to the loss, which overflows; tanh
    # units saturate, and their bounded outputs keep it finite.
    model = small_model(pretrain_epochs=1, max_iter=1, activation="relu")
    with pytest.raises(NonFiniteLossError, match="not finite"):
        model.fit(huge)
    assert not hasattr(model, "encoder_")
    warm = small_model(activation="relu").fit(X).set_params(warm_start=True, max_iter=1).fit(X)
    means = warm.means_.copy()
    proba = warm.predict_proba(X)
    with pytest.raises(NonFiniteLossError):
        warm.fit(huge)
    np.testing.assert_array_equal(warm.means_, means)
    np.testing.assert_array_equal(warm.predict_proba(X), proba)


@given(
    n_components=st.integers(1, 4),
    latent_dim=st.integers(1, 3),
    covariance_type=st.sampled_from(["auto", "full", "diag", "spherical"]),
    likelihood=st.sampled_from(["gaussian", "bernoulli"]),
    n_neighbors=st.sampled_from([None, 3]),
    seed=st.integers(0, 1000),
)
def test_any_configuration_fits_and_gives_valid_outputs(
    n_components, latent_dim, covariance_type, likelihood, n_neighbors, seed
):
    X = np.random.default_rng(seed).uniform(size=(40, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = VariationalGMMPrior(
            n_components,
            latent_dim=latent_dim,
            hidden_layer_sizes=(8,),
            covariance_type=covariance_type,
            likelihood=likelihood,
            n_neighbors=n_neighbors,
            pretrain_epochs=2,
            max_iter=2,
            n_init=1,
            random_state=seed,
        ).fit(X)
    proba = model.predict_proba(X)
    assert proba.shape == (40, n_components)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.all(np.isfinite(model.score_samples(X)))
    assert model.transform(X).shape == (40, latent_dim)
    samples, labels = model.sample(7)
    assert samples.shape == (7, 5) and np.all((labels >= 0) & (labels < n_components))
    assert model.weights_.min() > 0


def test_fits_and_pickles_on_every_available_device(data, device):
    X, _ = data
    model = small_model(device=device, pretrain_epochs=5, max_iter=3).fit(X)
    assert next(model.encoder_.parameters()).device.type == device
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(restored.predict_proba(X), model.predict_proba(X))


def test_custom_neighbors_estimator_builds_the_graph(data):
    X, y = data
    neighbors = NearestNeighbors(algorithm="brute", metric="manhattan")
    model = small_model(neighbors_estimator=neighbors, pretrain_epochs=5, max_iter=3).fit(X)
    assert clustering_accuracy(y, model.labels_) > 0.9
    assert not hasattr(neighbors, "n_samples_fit_")


@pytest.fixture
def starved_start(monkeypatch):
    """Start every fit with component 0 holding almost no weight and no rows.

    Its mean lies far from every code, so the closed-form M-step cannot give
    it rows back: only the collapse guard can.
    """
    initial_mixture = VariationalGMMPrior._initial_mixture

    def starved_mixture(self, codes, seed, covariance_type):
        mixture = initial_mixture(self, codes, seed, covariance_type)
        mixture.weights_ = np.r_[1e-4, mixture.weights_[1:]]
        mixture.weights_ /= mixture.weights_.sum()
        mixture.means_ = mixture.means_.copy()
        mixture.means_[0] = codes.max(axis=0) + 100 * codes.std(axis=0)
        return mixture

    monkeypatch.setattr(VariationalGMMPrior, "_initial_mixture", starved_mixture)


def test_collapsed_component_is_reseeded_during_fit_and_recorded(data, starved_start):
    X, _ = data
    model = small_model(pretrain_epochs=5, max_iter=3).fit(X)
    events = model.history_[0]["collapse_events"]
    assert [event["component"] for event in events] == [0]
    assert model.weights_.min() > 0.1 / N_CLUSTERS
    assert np.all(np.bincount(model.labels_, minlength=N_CLUSTERS) > 0)


def test_sparse_dirichlet_prior_turns_the_collapse_guard_off(data, starved_start):
    X, _ = data
    model = small_model(pretrain_epochs=5, max_iter=3, weight_concentration_prior=0.5).fit(X)
    assert not any("collapse_events" in record for record in model.history_)
    assert model.weights_[0] < 0.1 / N_CLUSTERS


def test_joint_training_starts_from_the_pretrained_reconstruction_variance(data, monkeypatch):
    X, _ = data
    captured = {}
    initial_mixture = VariationalGMMPrior._initial_mixture

    def capture_codes(self, codes, seed, covariance_type):
        captured["codes"] = codes
        return initial_mixture(self, codes, seed, covariance_type)

    monkeypatch.setattr(VariationalGMMPrior, "_initial_mixture", capture_codes)
    # A vanishing learning rate keeps the networks where pretraining left them.
    model = small_model(pretrain_epochs=5, max_iter=1, learning_rate_init=1e-12).fit(X)
    with torch.no_grad():
        decoded = model.decoder_.mean(torch.as_tensor(captured["codes"]))
    residual_variance = ((X - decoded.numpy()) ** 2).mean(axis=0)
    np.testing.assert_allclose(
        model.decoder_.variance().detach().numpy(), residual_variance, rtol=1e-3
    )
    assert not np.allclose(residual_variance, 1.0, atol=0.05)  # not the initial variance
