"""Tests of VAETransformer's training objectives: IWAE, AVB and MINE.

The quality tests compare objectives at equal epochs on data where the right
answer is known: the AVB paper's four-point toy, whose exact log-likelihood is
computable and bounded by -log 4, and digits.
"""

import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, make_blobs
from sklearn.model_selection import train_test_split
from sklearn.utils.estimator_checks import (
    check_methods_sample_order_invariance,
    check_methods_subset_invariance,
    check_transformer_preserve_dtypes,
)

from sklearn_vae import VAETransformer, VariationalGMMPrior
from sklearn_vae.neural._avb import ImplicitEncoder
from sklearn_vae.neural._mutual_information import PairCritic

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

NON_DEFAULT = ["iwae", "avb", "mine"]
SMALL = {"hidden_layer_sizes": (8,), "max_iter": 3, "n_importance_samples": 5, "random_state": 0}


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 5))


# -- quality, where the answer is known -----------------------------------------
def exact_log_likelihood(vae, X, n_draws=50_000):
    """Mean ``log p(x) = log E_p(z)[p(x|z)]`` over one-hot rows ``X``.

    Plain Monte Carlo over the 2-D prior: accurate here, and independent of
    the encoder, so it compares decoders trained by different objectives
    fairly.
    """
    z = torch.randn(n_draws, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    one_hots = torch.eye(X.shape[1], dtype=torch.float64)[:, None, :]
    with torch.no_grad():
        log_p = vae.decoder_.log_prob(one_hots, z.expand(X.shape[1], -1, -1))
    log_p_of_each_point = torch.logsumexp(log_p, dim=1) - math.log(n_draws)
    return float(log_p_of_each_point[np.argmax(X, axis=1)].mean())


def test_avb_beats_the_gaussian_encoder_where_posteriors_are_not_gaussian():
    # Mescheder et al. (2017), section 5.1: four one-hot points and a 2-D
    # latent space. The optimal posteriors split the plane into four regions
    # that no Gaussian can fill, so a Gaussian encoder holds the decoder back.
    rng = np.random.default_rng(0)
    X = np.eye(4)[rng.integers(0, 4, 500)]
    X_test = np.eye(4)[rng.integers(0, 4, 500)]
    settings = {
        "hidden_layer_sizes": (32,),
        "likelihood": "bernoulli",
        "max_iter": 80,
        "batch_size": 50,
        "learning_rate_init": 5e-3,
        "alpha": 0.0,
        "n_iter_no_change": 80,
        "random_state": 0,
    }
    elbo = VAETransformer(2, **settings).fit(X)
    avb = VAETransformer(2, objective="avb", n_train_samples=1, **settings).fit(X)
    log_likelihood_avb = exact_log_likelihood(avb, X_test)
    assert log_likelihood_avb > exact_log_likelihood(elbo, X_test) + 0.03
    assert log_likelihood_avb <= -math.log(4) + 0.01


@pytest.fixture(scope="module")
def digits_fits():
    X = load_digits().data / 16
    X_train, X_test = train_test_split(X, test_size=0.3, random_state=0)
    settings = {
        "hidden_layer_sizes": (64,),
        "likelihood": "bernoulli",
        "max_iter": 15,
        "batch_size": 100,
        "learning_rate_init": 3e-3,
        "n_iter_no_change": 15,
        "n_importance_samples": 50,
        "random_state": 0,
    }
    fits = {
        objective: VAETransformer(2, objective=objective, **settings).fit(X_train)
        for objective in ("elbo", "iwae", "mine")
    }
    return fits, X_test


def test_iwae_gives_a_better_held_out_likelihood_than_the_elbo(digits_fits):
    fits, X_test = digits_fits
    assert fits["iwae"].score_samples(X_test).mean() > fits["elbo"].score_samples(X_test).mean()


def test_mine_records_more_mutual_information_than_the_elbo(digits_fits):
    fits, _ = digits_fits
    final = {name: fit.history_[-1]["mutual_information"] for name, fit in fits.items()}
    assert final["mine"] > final["elbo"] + 0.2
    assert fits["mine"].history_[-1]["mine_bound"] > 0


# -- the extra networks and their records -----------------------------------------
@pytest.mark.parametrize(
    "objective, critic_type, encoder_type, terms",
    [
        ("elbo", None, None, {"reconstruction", "kl"}),
        ("iwae", None, None, {"elbo"}),
        ("avb", PairCritic, ImplicitEncoder, {"reconstruction", "kl", "critic_loss"}),
        ("mine", PairCritic, None, {"reconstruction", "kl", "critic_loss", "mine_bound"}),
    ],
)
def test_each_objective_builds_its_networks_and_logs_its_terms(
    blobs, objective, critic_type, encoder_type, terms
):
    vae = VAETransformer(objective=objective, early_stopping=True, **SMALL).fit(blobs)
    assert type(getattr(vae, "critic_", None)) is (critic_type or type(None))
    if encoder_type is not None:
        assert isinstance(vae.encoder_, encoder_type)
    record = vae.history_[-1]
    assert terms | {"loss", "mutual_information"} <= set(record)
    assert {f"val_{term}" for term in terms} <= set(record)
    assert all(math.isfinite(record[name]) for name in terms)


def test_refitting_with_another_objective_drops_the_critic(blobs):
    vae = VAETransformer(objective="mine", **SMALL).fit(blobs)
    assert hasattr(vae, "critic_")
    vae.set_params(objective="elbo").fit(blobs)
    assert not hasattr(vae, "critic_")


def test_a_warm_start_under_an_objective_that_needs_a_critic_says_how_to_fix_it(blobs):
    vae = VAETransformer(warm_start=True, **SMALL).fit(blobs)
    with pytest.raises(ValueError, match="warm_start=False"):
        vae.set_params(objective="mine").fit(blobs)
    assert not hasattr(vae, "critic_") and vae.n_iter_ == SMALL["max_iter"]


@pytest.mark.parametrize("objective", NON_DEFAULT)
def test_pickling_keeps_every_network(blobs, objective):
    vae = VAETransformer(objective=objective, **SMALL).fit(blobs)
    restored = pickle.loads(pickle.dumps(vae))
    np.testing.assert_array_equal(restored.transform(blobs), vae.transform(blobs))
    np.testing.assert_array_equal(restored.score_samples(blobs), vae.score_samples(blobs))
    for name in ("encoder_", "decoder_", "critic_"):
        if hasattr(vae, name):
            for key, value in getattr(vae, name).state_dict().items():
                assert torch.equal(getattr(restored, name).state_dict()[key], value), key


@pytest.mark.parametrize("objective", NON_DEFAULT)
def test_the_same_random_state_gives_the_same_fit(blobs, objective):
    first, second = (
        VAETransformer(objective=objective, **SMALL).fit(blobs) for _ in range(2)
    )
    assert first.history_ == [
        {**record, "time": first_record["time"]}
        for record, first_record in zip(second.history_, first.history_)
    ]
    np.testing.assert_array_equal(first.transform(blobs), second.transform(blobs))
    np.testing.assert_array_equal(first.score_samples(blobs), second.score_samples(blobs))


# -- what the estimator checks demand, per non-default objective --------------------
@pytest.mark.parametrize(
    "objective, check",
    [
        *((objective, check_methods_subset_invariance) for objective in NON_DEFAULT),
        ("avb", check_methods_sample_order_invariance),
        ("avb", check_transformer_preserve_dtypes),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_estimator_checks_hold_for_every_objective(objective, check):
    # The full parametrize_with_checks suite runs on the default objective in
    # tests/test_common.py; these are the checks an objective can break: the
    # implicit encoder's inference must stay deterministic, row-independent
    # and in the input's dtype.
    estimator = VAETransformer(objective=objective, **SMALL)
    check(type(estimator).__name__, clone(estimator))


# -- validation ------------------------------------------------------------------
@pytest.mark.parametrize(
    "params, message",
    [
        ({"objective": "gan"}, "objective"),
        ({"n_train_samples": 0}, "n_train_samples"),
        ({"mi_weight": -1.0}, "mi_weight"),
        ({"adaptive_contrast": "yes"}, "adaptive_contrast"),
    ],
)
def test_invalid_objective_parameters_are_rejected_at_fit(blobs, params, message):
    with pytest.raises(ValueError, match=message):
        VAETransformer(**SMALL, **params).fit(blobs)


# -- VariationalGMMPrior -----------------------------------------------------------
VADE_SMALL = {
    "latent_dim": 2,
    "hidden_layer_sizes": (16,),
    "pretrain_epochs": 3,
    "max_iter": 3,
    "n_init": 2,
    "random_state": 0,
}


@pytest.fixture(scope="module")
def three_blobs():
    X, _ = make_blobs(150, n_features=5, centers=3, random_state=0)
    return X


@pytest.mark.parametrize("objective", ["iwae", "avb"])
def test_variational_gmm_prior_rejects_unsupported_objectives(three_blobs, objective):
    with pytest.raises(ValueError, match="supports objective='elbo' or 'mine'"):
        VariationalGMMPrior(3, objective=objective, **VADE_SMALL).fit(three_blobs)


def test_variational_gmm_prior_trains_with_mine(three_blobs):
    model = VariationalGMMPrior(3, objective="mine", **VADE_SMALL).fit(three_blobs)
    assert isinstance(model.critic_, PairCritic)
    assert {"mine_bound", "critic_loss", "mutual_information"} <= set(model.history_[-1])
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(three_blobs), model.predict_proba(three_blobs))
    assert "mutual_information" in VariationalGMMPrior(3, **VADE_SMALL).fit(three_blobs).history_[-1]
