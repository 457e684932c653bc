"""VAETransformer: a variational autoencoder as a scikit-learn transformer."""

from __future__ import annotations

from numbers import Integral, Real
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._backend import make_generator, seed_from_random_state, to_numpy
from .exceptions import PosteriorCollapseWarning
from .neural._avb import AdversarialVariationalBayes, ImplicitEncoder
from .neural._base import NeuralEstimatorBase, derive_seed
from .neural._engine import Callback, Objective, TrainingData
from .neural._iwae import ImportanceWeightedBound
from .neural._mine import InfoMax
from .neural._modules import (
    BernoulliDecoder,
    GaussianDecoder,
    GaussianEncoder,
    VariationalAutoencoder,
)
from .neural._mutual_information import PairCritic
from .neural._objectives import (
    ACTIVE_UNIT_THRESHOLD,
    ELBO,
    SharedVarianceWarmup,
    elbo_from_log_weights,
    importance_weighted_bound,
    log_importance_weights,
)

__all__ = ["VAETransformer"]

_DECODERS = {"gaussian": GaussianDecoder, "bernoulli": BernoulliDecoder}

# Key of the noise stream that score and score_samples share (see derive_seed).
_INFERENCE_NOISE_KEY = 1

# The fixed shared decoder variance of the first epochs, as a share of the
# features' mean variance: small enough that the reconstruction, not the KL
# term, shapes the codes. On the digits / 16 (mean variance 0.073) it is 0.01,
# the best of the fixed variances 0.003, 0.01 and 0.03 measured there.
_SHARED_VARIANCE_SCALE = 0.136


class VAETransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, NeuralEstimatorBase):
    """Variational autoencoder (VAE) as a scikit-learn transformer.

    The encoder ``q(z|x) = N(mean(x), diag sigma^2(x))`` and the decoder
    ``p(x|z)`` are multilayer perceptrons, the prior ``p(z)`` is standard
    normal, and training maximises the evidence lower bound (ELBO)
    ``E_q[log p(x|z)] - beta KL(q(z|x) || p(z))`` with Adam on mini-batches.
    ``transform`` returns posterior means, so the transformer slots into a
    Pipeline like :class:`~sklearn.decomposition.PCA`; ``score`` and
    ``score_samples`` make it a density model.

    Parameters
    ----------
    n_components : int, default=2
        Dimension of the latent space.
    hidden_layer_sizes : array-like of int, default=(256, 128)
        Hidden widths of the encoder, input side first; the decoder mirrors
        them.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Non-linearity of the hidden layers.
    likelihood : {'gaussian', 'bernoulli'}, default='gaussian'
        ``'gaussian'``: a normal distribution around the decoder output with a
        learned per-feature variance (floored at 1e-6; one fixed value for
        every feature at first, see ``shared_variance_epochs``), for
        real-valued data. ``'bernoulli'``: sigmoid outputs and a
        cross-entropy, for data in [0, 1] (binary or grey levels).
    shared_variance_epochs : int or 'auto', default='auto'
        For ``likelihood='gaussian'``: the number of epochs during which the
        decoder's variance is held at one value for every feature, 0.136
        times the features' mean variance, while the networks form the codes.
        After them each feature gets its own variance, set to its
        maximum-likelihood value given the networks (the mean squared
        residual), and the variances and the decoder train on with the
        encoder held, so that the codes are kept and the density gets its
        likelihood. ``'auto'`` is ``3 * max_iter // 4``; 0 trains everything
        from the start with every feature's variance started at the feature's
        own variance (the recipe of earlier releases). A fixed shared variance
        weighs every feature's errors alike, so nearly constant features (an
        image's blank border), whose own variances would be tiny, cannot make
        the codes spend their capacity on the few rows where they vary, and
        it cannot grow until the posterior collapses as a learned one can.
        The user guide gives the figures measured on the digits. The stopping
        rule ignores these epochs. Counted over every ``fit`` and
        ``partial_fit`` call.
    beta : float, default=1.0
        Weight of the KL term (beta-VAE). 1 trains the ELBO; larger values give
        smoother, more disentangled codes at the cost of reconstruction.
    kl_warmup : int, default=0
        Number of epochs over which the KL weight rises linearly to ``beta``
        (annealing against posterior collapse). The stopping rule ignores these
        epochs.
    objective : {'elbo', 'iwae', 'avb', 'mine'}, default='elbo'
        What training maximises, on the same engine:

        - ``'elbo'``: the ELBO above.
        - ``'iwae'``: the importance-weighted bound with ``n_train_samples``
          draws per row (Burda et al. 2016), tighter than the ELBO, so the
          decoder reaches a higher likelihood; ``beta`` and ``kl_warmup`` do
          not apply.
        - ``'avb'``: Adversarial Variational Bayes (Mescheder et al. 2017): an
          implicit encoder ``z = f(x, eps)`` whose posterior may take any
          shape (several modes), with the KL estimated by a discriminator
          ``T(x, z)`` (``critic_``) trained adversarially. ``transform`` then
          returns the posterior mean (from noise draws fixed by
          ``random_state``), and :meth:`score_samples` and :meth:`score` use
          the Gaussian with the posterior's mean and variance as their
          proposal.
        - ``'mine'``: an InfoMax VAE: the ELBO plus ``mi_weight`` times MINE's
          lower bound on I(x; z) (Belghazi et al. 2018) from a critic network
          (``critic_``), against posterior collapse.
    n_train_samples : int, default=5
        Latent draws per row and training step: importance samples for
        ``'iwae'``, posterior draws for ``'avb'``. Ignored by ``'elbo'`` and
        ``'mine'``.
    mi_weight : float, default=1.0
        Weight of the mutual-information bound for ``objective='mine'``.
    adaptive_contrast : bool, default=True
        For ``objective='avb'``: compare the posterior with the Gaussian of its
        own moments instead of with the prior (the paper's adaptive
        contrast), an easier task for the discriminator. Without it, AVB
        trained more slowly than the ELBO in our tests.
    learning_rate_init : float, default=1e-3
        Adam's step size.
    learning_rate : {'constant', 'adaptive'}, default='constant'
        ``'adaptive'`` divides the step size by 5 whenever the monitored loss
        fails to improve by ``tol`` for two consecutive epochs.
    batch_size : int or 'auto', default='auto'
        Rows per step; ``'auto'`` is ``min(200, n_samples)``.
    max_iter : int, default=200
        Maximum number of epochs.
    max_grad_norm : float or None, default=None
        Clip the gradient norm of each step to this value; None disables
        clipping.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (chosen from
        ``random_state``), stop when its loss stops improving and restore the
        weights of the best epoch. Otherwise the training loss is monitored.
    validation_fraction : float, default=0.1
        Share of the training data held out when ``early_stopping``.
    n_iter_no_change : int, default=10
        Stop after this many epochs without an improvement of the monitored
        loss by at least ``tol``.
    tol : float, default=1e-4
        Minimal improvement, in nats per sample.
    alpha : float, default=1e-4
        L2 penalty on the weight matrices (Adam weight decay).
    n_importance_samples : int, default=100
        Importance samples per row in :meth:`score_samples` (and posterior
        draws in :meth:`score`).
    device : str or torch.device, default='cpu'
        ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'`` or ``'auto'``.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the batch order, the validation split, the training
        noise and the fixed noise of :meth:`score` and :meth:`score_samples`.
        An int gives bit-identical results on CPU. torch's and numpy's global
        random states are never changed.
    verbose : int, default=0
        0 is silent; otherwise a progress bar over epochs shows the losses.
    warm_start : bool, default=False
        When fitted, ``fit`` continues from the current weights and optimiser
        state instead of starting again.

    Attributes
    ----------
    encoder_ : torch.nn.Module
        Maps ``x`` to the posterior mean and log-variance (for ``'avb'``: an
        implicit encoder whose ``sample`` method draws from ``q(z|x)``, and
        which, called, returns the moments of its fixed draws).
    decoder_ : torch.nn.Module
        Maps ``z`` to the likelihood's parameters (its ``mean`` method gives
        ``E[x|z]``).
    critic_ : torch.nn.Module
        Only for ``objective='mine'`` (MINE's critic) and ``'avb'`` (the
        discriminator): the network ``T(x, z)``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.
    history_ : list of dict
        One record per epoch: ``epoch``, the training ``loss`` (negative
        annealed ELBO, or the selected objective), its terms
        (``reconstruction`` and ``kl`` in nats per sample; ``elbo`` for
        ``'iwae'``; ``critic_loss`` for ``'avb'`` and ``'mine'``;
        ``mine_bound`` for ``'mine'``), ``mutual_information`` (an InfoNCE
        lower bound on I(x; z) in nats, on one fixed batch of training rows,
        at most ``log(batch_size)``: with the encoder's density as critic, or
        for ``'avb'`` the discriminator), ``active_units`` (on the same batch,
        the number of latent units whose posterior mean has a variance above
        0.01 over the rows, Burda et al. 2016; when fewer than half are
        active at the end of ``fit``, a
        :class:`~sklearn_vae.exceptions.PosteriorCollapseWarning` says what to
        try), ``val_`` terms under early stopping, ``learning_rate`` and
        ``time`` (seconds).
    loss_curve_ : list of float
        The training loss of each epoch.
    n_iter_ : int
        Number of epochs trained, over every ``fit``/``partial_fit`` call.
    best_loss_ : float
        Best monitored loss of the last call (validation loss under early
        stopping, otherwise training loss).

    See Also
    --------
    sklearn.decomposition.PCA : The linear counterpart of ``transform``.
    sklearn.neural_network.MLPRegressor : Same parameter names.
    VariationalGMMPrior : A VAE whose prior is a Gaussian mixture, for
        clustering.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_vae import VAETransformer
    >>> X = load_digits().data / 16
    >>> vae = VAETransformer(n_components=2, hidden_layer_sizes=(16,),
    ...                      likelihood="bernoulli", max_iter=2, random_state=0)
    >>> Z = vae.fit_transform(X)
    >>> Z.shape
    (1797, 2)
    >>> vae.score_samples(X[:3]).shape
    (3,)
    """

    _parameter_constraints: dict = {
        **NeuralEstimatorBase._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "likelihood": [StrOptions(set(_DECODERS))],
        "shared_variance_epochs": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "beta": [Interval(Real, 0, None, closed="left")],
        "kl_warmup": [Interval(Integral, 0, None, closed="left")],
        "n_importance_samples": [Interval(Integral, 1, None, closed="left")],
        "objective": [StrOptions({"elbo", "iwae", "avb", "mine"})],
        "n_train_samples": [Interval(Integral, 1, None, closed="left")],
        "mi_weight": [Interval(Real, 0, None, closed="left")],
        "adaptive_contrast": ["boolean"],
    }

    def __init__(
        self,
        n_components: int = 2,
        *,
        hidden_layer_sizes: Any = (256, 128),
        activation: str = "relu",
        likelihood: str = "gaussian",
        shared_variance_epochs: int | str = "auto",
        beta: float = 1.0,
        kl_warmup: int = 0,
        objective: str = "elbo",
        n_train_samples: int = 5,
        mi_weight: float = 1.0,
        adaptive_contrast: bool = True,
        learning_rate_init: float = 1e-3,
        learning_rate: str = "constant",
        batch_size: int | str = "auto",
        max_iter: int = 200,
        max_grad_norm: float | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        alpha: float = 1e-4,
        n_importance_samples: int = 100,
        device: str | torch.device = "cpu",
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.likelihood = likelihood
        self.shared_variance_epochs = shared_variance_epochs
        self.beta = beta
        self.kl_warmup = kl_warmup
        self.objective = objective
        self.n_train_samples = n_train_samples
        self.mi_weight = mi_weight
        self.adaptive_contrast = adaptive_contrast
        self.learning_rate_init = learning_rate_init
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.max_grad_norm = max_grad_norm
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.alpha = alpha
        self.n_importance_samples = n_importance_samples
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # -- template methods of NeuralEstimatorBase ---------------------------
    def _build_model(self, n_features: int) -> VariationalAutoencoder:
        hidden = self._hidden_layer_sizes()
        encoder = ImplicitEncoder if self.objective == "avb" else GaussianEncoder
        model = VariationalAutoencoder(
            encoder(n_features, self.n_components, hidden, self.activation),
            _DECODERS[self.likelihood](
                self.n_components, n_features, hidden, self.activation
            ),
        )
        if self.objective in ("avb", "mine"):
            model.critic = PairCritic(n_features, self.n_components, hidden, self.activation)
        return model

    def _build_objective(self) -> Objective:
        if self.objective == "iwae":
            return ImportanceWeightedBound(self.n_train_samples)
        if self.objective == "avb":
            return AdversarialVariationalBayes(
                self.beta, self.kl_warmup, self.n_train_samples, self.adaptive_contrast
            )
        elbo = ELBO(beta=self.beta, kl_warmup=self.kl_warmup)
        return InfoMax(elbo, self.mi_weight) if self.objective == "mine" else elbo

    def _store_model(self, model: VariationalAutoencoder) -> None:
        self.encoder_ = model.encoder
        self.decoder_ = model.decoder
        if hasattr(model, "critic"):
            self.critic_ = model.critic
        else:  # a refit with another objective must not keep an old critic
            vars(self).pop("critic_", None)

    def _fitted_model(self) -> VariationalAutoencoder:
        model = VariationalAutoencoder(self.encoder_, self.decoder_)
        if hasattr(self, "critic_"):
            model.critic = self.critic_
        return model

    def _initialize_model(
        self, model: VariationalAutoencoder, data: TrainingData, seed: int
    ) -> None:
        model.decoder.initialize_marginal(data.X)
        if self._n_shared_variance_epochs() > 0:
            X = data.X
            mean_variance = X.var(dim=0, correction=0).mean() if len(X) > 1 else 1.0
            model.decoder.set_variance(_SHARED_VARIANCE_SCALE * mean_variance)

    def _n_shared_variance_epochs(self) -> int:
        if self.likelihood == "bernoulli":
            return 0
        if self.shared_variance_epochs == "auto":
            return 3 * self.max_iter // 4
        return self.shared_variance_epochs

    def _callbacks(self) -> list[Callback]:
        n_epochs = self._n_shared_variance_epochs()
        return [SharedVarianceWarmup(n_epochs)] if n_epochs > 0 else []

    def _monitor_from_epoch(self) -> int:
        return max(self.kl_warmup, self._n_shared_variance_epochs())

    def _check_training_input(self, X: np.ndarray) -> None:
        if self.likelihood == "bernoulli" and X.size and (X.min() < 0 or X.max() > 1):
            raise ValueError(
                "likelihood='bernoulli' needs every value of X in [0, 1], got "
                f"values in [{X.min():.4g}, {X.max():.4g}]. Rescale X (e.g. with "
                "MinMaxScaler) or use likelihood='gaussian'."
            )

    @property
    def _n_features_out(self) -> int:
        return self.n_components

    # -- fitting ----------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> VAETransformer:
        """Train the VAE on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (float32 data is trained in float32, everything
            else in float64).
        y : None
            Ignored.

        Returns
        -------
        self : VAETransformer
            The fitted estimator.

        Raises
        ------
        sklearn_vae.exceptions.NonFiniteLossError
            If the loss becomes NaN or infinite; the estimator keeps its state
            from before the call.

        Warns
        -----
        sklearn_vae.exceptions.PosteriorCollapseWarning
            When fewer than half of the latent units are active at the end of
            training (see ``history_``): the posterior collapsed onto the prior.
        """
        self._fit(X, incremental=False)
        self._warn_on_posterior_collapse()
        return self

    def _fit(self, X: Any, *, incremental: bool) -> VAETransformer:
        if hasattr(self, "n_iter_") and (incremental or self.warm_start):
            self._check_encoder_fits_objective()
        return super()._fit(X, incremental=incremental)

    def _warn_on_posterior_collapse(self) -> None:
        active = self.history_[-1].get("active_units") if self.history_ else None
        if active is None or active >= self.n_components / 2:
            return
        warnings.warn(
            f"Only {int(active)} of the {self.n_components} latent units are "
            "active: the posterior means of the others barely vary with the "
            f"input (variance <= {ACTIVE_UNIT_THRESHOLD}), so their posterior "
            "collapsed onto the prior and the codes carry no information "
            "there. Try a smaller beta, a KL warm-up (kl_warmup=20), "
            "objective='mine', fewer n_components, or more epochs (max_iter).",
            PosteriorCollapseWarning,
            stacklevel=4,  # the caller of fit, above scikit-learn's _fit_context
        )

    def _check_encoder_fits_objective(self) -> None:
        """Refuse to resume networks whose encoder the objective cannot train.

        AVB's implicit encoder has no density: read as a Gaussian posterior
        (which 'elbo', 'iwae' and 'mine' need) it would train silently on its
        moments; a Gaussian encoder cannot draw AVB's implicit samples.
        """
        implicit = isinstance(self.encoder_, ImplicitEncoder)
        if implicit != (self.objective == "avb"):
            fitted = "an implicit (objective='avb')" if implicit else "a Gaussian"
            raise ValueError(
                f"The fitted networks have {fitted} encoder, which "
                f"objective={self.objective!r} cannot continue training. Refit "
                "with warm_start=False (and, for partial_fit, on a fresh "
                "estimator) to build the networks the objective needs."
            )

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any = None) -> VAETransformer:
        """Train one epoch on ``X``, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        self : VAETransformer
        """
        return self._fit(X, incremental=True)

    # -- inference --------------------------------------------------------
    def transform(self, X: Any) -> np.ndarray:
        """Return the posterior means ``E[z|x]``.

        For ``objective='avb'`` the implicit posterior's mean, which its
        encoder's form gives from the mean of its noise basis functions over
        2048 draws fixed at construction (common random numbers for every
        row: deterministic and row-independent).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components)
            In the dtype of ``X`` (float32 or float64).
        """
        X = self._check_inference_input(X)
        return self._map_rows(
            lambda model, rows: model.encoder(rows)[0],
            X,
            elements_per_row=self._widest_layer(self.n_components),
        )

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Return the decoder means ``E[x|z]`` of latent codes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Latent codes, e.g. from :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_samples, `n_features_in_`)
            In the dtype of the codes.
        """
        return self._decode_latent(X, self.n_components, "n_components")

    def score_samples(self, X: Any) -> np.ndarray:
        """Estimate ``log p(x)`` per sample by importance sampling (IWAE bound).

        Uses ``n_importance_samples`` draws from ``q(z|x)``. The standard
        normal noise behind the draws is fixed by ``random_state`` and shared
        by every row, so the result is deterministic and a row's value does not
        depend on the other rows.

        For ``objective='avb'``, whose implicit posterior has no density, the
        proposal is the diagonal Gaussian with the posterior's mean and
        variance (see :meth:`transform`): still an estimate of
        ``log p(x)`` whose expectation is below it, tight when the proposal
        covers the posterior.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples,)
            Nats (a log-density for 'gaussian', a log-probability for
            'bernoulli'), in the dtype of ``X``. The bound tightens as
            ``n_importance_samples`` grows. -inf for a row so far from the
            training data that its estimate is below the dtype's range.
        """
        return self._log_weight_statistic(X, importance_weighted_bound)

    def score(self, X: Any, y: Any = None) -> float:
        """Return the mean ELBO per sample, in nats (higher is better).

        The ELBO of each row is averaged over the same fixed draws as
        :meth:`score_samples`, so it never exceeds that row's IWAE estimate.
        For ``objective='avb'`` it is the ELBO of the Gaussian proposal of
        :meth:`score_samples`, a lower bound on the implicit posterior's.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        elbo : float
        """
        return float(np.mean(self._log_weight_statistic(X, elbo_from_log_weights)))

    def sample(self, n_samples: int = 1, random_state: Any = None) -> np.ndarray:
        """Draw ``z`` from the prior and return the decoder means ``E[x|z]``.

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None
            Seeds the draws (as in :meth:`sklearn.neighbors.KernelDensity.sample`).

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`)
            In the dtype the model was fitted in.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(
                f"n_samples must be a positive integer, got {n_samples!r}."
            )
        parameter = next(self.decoder_.parameters())
        generator = make_generator(
            seed_from_random_state(random_state), parameter.device
        )
        z = torch.randn(
            (int(n_samples), self.n_components),
            generator=generator,
            device=parameter.device,
            dtype=parameter.dtype,
        )
        with torch.no_grad():
            return to_numpy(self.decoder_.eval().mean(z))

    # -- helpers ----------------------------------------------------------
    def _inference_noise(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        generator = make_generator(derive_seed(self._seed, _INFERENCE_NOISE_KEY), device)
        return torch.randn(
            (self.n_importance_samples, self.n_components),
            generator=generator,
            device=device,
            dtype=dtype,
        )

    def _log_weight_statistic(self, X: Any, statistic: Any) -> np.ndarray:
        X = self._check_inference_input(X)
        self._check_training_input(X)
        parameter = next(self.encoder_.parameters())
        noise = self._inference_noise(parameter.device, parameter.dtype)
        return self._map_rows(
            lambda model, rows: statistic(log_importance_weights(model, rows, noise)),
            X,
            elements_per_row=self.n_importance_samples * self._widest_layer(self.n_components),
            log_density=True,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
