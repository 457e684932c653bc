"""VariationalGMMPrior: deep clustering with a learned Gaussian-mixture prior.

A variational autoencoder whose latent prior is a Gaussian mixture learned
jointly with the networks (VaDE, Jiang et al., IJCAI 2017), made reliable:

1. *Pretraining* (``pretrain_epochs``): an autoencoder trained on
   reconstruction plus, when ``n_neighbors`` is set, parametric UMAP's
   neighbour-preserving cross-entropy over the k-nearest-neighbour graph of the
   input. The codes then keep the input's neighbourhoods, which is what makes a
   mixture on them separate the classes.
2. *Initialisation*: ``n_init`` EMGaussianMixture fits on the codes; the one
   that ``init_selection`` picks (by default the one with the most even
   cluster sizes) seeds the latent mixture. Under a balanced prior the first
   two steps run ``n_pretrain`` times (2 by default), from different network
   initialisations, and the start with the most even cluster sizes is kept.
3. *Joint training* (``max_iter`` epochs): VaDE's ELBO, the Dirichlet MAP term,
   SCAN's neighbour-consistency and batch-entropy terms and the
   neighbour-preserving term, with a guard that re-seeds collapsed components.

Both training phases run on the shared training engine; the math of the
mixture prior lives in :mod:`sklearn_vae.neural._mixture_prior`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import threading
from numbers import Integral, Real
from typing import Any

import joblib
import numpy as np
import scipy.stats
import torch
from sklearn.base import (
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._backend import (
    iter_row_chunks,
    make_generator,
    run_concurrently,
    seed_from_random_state,
    seeded_module_init,
    to_numpy,
    to_tensor,
    unchanged_on_error,
)
from ._distributed import all_reduce_sum, current_process_group
from .mixture import EMGaussianMixture
from .mixture._statistics import stepwise_step_size
from .neural._base import NeuralEstimatorBase, derive_seed
from .neural._engine import (
    Callback,
    Objective,
    StopWhenCancelled,
    TrainingData,
    TrainingEngine,
)
from .neural._mine import InfoMax
from .neural._mixture_objectives import (
    AssignmentConvergence,
    CollapseGuard,
    MixtureMaximization,
    MixturePriorELBO,
    NeighborEmbeddingPretraining,
)
from .neural._mixture_prior import (
    COVARIANCE_TYPES,
    GaussianMixturePrior,
    MixturePriorVAE,
    MixtureStatistics,
)
from .neural._modules import (
    _GAUSSIAN_VARIANCE_FLOOR as GAUSSIAN_VARIANCE_FLOOR,
)
from .neural._modules import (
    BernoulliDecoder,
    GaussianDecoder,
    GaussianEncoder,
)
from .neural._mutual_information import PairCritic
from .neural._neighbors import nearest_neighbor_graph
from .neural._objectives import reparameterize

__all__ = ["VariationalGMMPrior"]

#: Initial bias of the encoder's log-variance outputs. A large initial
#: posterior variance blurs the codes the mixture was fitted to and collapsed
#: clusters within a few epochs in calibration on digits; exp(-5) ~ 0.007.
#: The log-variance head starts with zero weights, so pretraining (which does
#: not train it) cannot leave it anywhere else.
_INITIAL_LOG_VARIANCE = -5.0

#: A component whose weight falls below this fraction of the uniform weight
#: 1 / n_components is re-seeded by the collapse guard.
_COLLAPSE_FRACTION = 0.1

#: Common random numbers for score_samples: this many latent draws, the same
#: for every row, so the score is deterministic and row-independent.
_N_SCORE_DRAWS = 16

#: Rows encoded at once when computing the codes the mixture is initialised on.
_ENCODE_CHUNK_ROWS = 4096

#: Initial fits whose weight entropies differ by less than this found the same
#: optimum up to EM's tolerance; ``init_selection='entropy'`` ranks them by the
#: MAP objective instead (distinct optima of the digits' codes differ by 0.005
#: nats or more).
_ENTROPY_TIE_NATS = 1e-3

#: Pretrainings that ``n_pretrain='auto'`` runs under a balanced prior
#: (``weight_concentration_prior >= 1``). On the digits at 1e3 (seeds 0-9,
#: tanh networks, five starts per seed each trained to the end) the most
#: even of 1, 2, 3, 4 and 5 starts gives 0.925, 0.927, 0.928, 0.928 and
#: 0.929 mean accuracy, and even the best of five by the labels only 0.930:
#: past two, starts buy almost nothing. Each costs a pretraining (most of a
#: 25-40 s fit on one thread); two on ``n_jobs=2`` threads of a 2-core
#: machine take the time of one (the user guide has the figures).
_N_PRETRAIN_BALANCED = 2

#: Largest latent dimension that ``latent_dim='auto'`` takes (fewer for data
#: with fewer features).
_AUTO_LATENT_DIM = 10

#: Neighbours of the input graph that ``n_neighbors='auto'`` uses, for data
#: with more features than latent dimensions.
_AUTO_N_NEIGHBORS = 15

#: Why a fit interrupted by Ctrl-C while pretraining raises KeyboardInterrupt.
_PRETRAINING_INTERRUPTED = (
    "VariationalGMMPrior.fit was interrupted during pretraining; the estimator "
    "was left as it was before the call."
)

# Keys of the independent random streams derived from the fit's base seed.
_PRETRAIN_STREAM, _MIXTURE_INIT_STREAM, _SCORE_STREAM, _RESTART_STREAM = 101, 102, 103, 104


class VariationalGMMPrior(
    ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, NeuralEstimatorBase
):
    """Deep clustering: a variational autoencoder with a Gaussian-mixture prior.

    The generative model is ``c ~ Cat(weights_)``,
    ``z | c ~ N(means_[c], diag covariances_[c])``, ``x | z ~ p(x|z)`` (the
    decoder); the encoder gives ``q(z|x)``, and the cluster posterior
    ``q(c|x) = p(c | z)`` assigns clusters. The defaults are the robust recipe:
    neighbour-preserving pretraining, a mixture initialised by the most
    balanced of ``n_init`` EM fits, and joint training with a
    neighbour-consistency term. ``n_neighbors=None`` gives plain VaDE.

    Parameters
    ----------
    n_components : int, default=10
        Number of clusters (mixture components).
    latent_dim : int or 'auto', default='auto'
        Dimension of the latent space. 'auto' is ``min(10, n_features)``: a
        code wider than the input only adds dimensions the mixture must
        model without information (on iris, 4 features, plain VaDE with 10
        latent dimensions gives 0.87 accuracy, with 4 0.96). The size used is
        ``latent_dim_``.
    hidden_layer_sizes : array-like of int, default=(256, 128)
        Hidden widths of the encoder, input side first; the decoder mirrors them.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='tanh'
        Non-linearity of the hidden layers. tanh gives steadier clusterings
        than relu: on the digits 0.925 +- 0.004 accuracy over 20 seeds
        against 0.914 +- 0.020, on iris (plain VaDE, 4 latent dimensions)
        0.96 against 0.92 (see the user guide).
    likelihood : {'gaussian', 'bernoulli'}, default='gaussian'
        ``p(x|z)``: Gaussian with a learned per-feature variance (standardised
        or bounded real data), or Bernoulli (data in [0, 1]).
    covariance_type : {'auto', 'full', 'diag', 'spherical'}, default='auto'
        Covariance of each latent component: a full matrix (parametrised by
        its precision's Cholesky factor), per-dimension variances, or one
        variance per component. 'auto' takes 'diag' with the neighbour graph:
        neighbour-preserving codes form compact clusters that 'diag' fits (on
        the digits 'full' fits them worse). Without it (``n_neighbors_`` None)
        it takes 'full' when the training rows number at least
        ``n_components * latent_dim * (latent_dim + 3) / 2`` (as many rows
        per component as a full component has free parameters), and 'diag'
        below that: a plain autoencoder's codes have clusters correlated
        across dimensions, which only 'full' fits (on the digits 0.85 accuracy
        against 0.78 for 'diag'), but on fewer rows a full covariance is
        poorly estimated (on wine with 10 latent dimensions 'diag' reaches
        0.95, 'full' 0.84; figures with relu networks). :meth:`partial_fit`
        decides on its first batch. The type used is ``covariance_type_``.
    n_neighbors : int, 'auto' or None, default='auto'
        ``k`` of the input's nearest-neighbour graph used by the
        neighbour-preserving pretraining and the consistency term. None turns
        both off (plain VaDE). Each training step then also encodes one
        neighbour per row (about twice the cost of a plain step). 'auto' is
        15 when the data have more features than ``latent_dim_``, and None
        otherwise: with as many latent dimensions as features there is
        nothing to compress, and the graph only links clusters that touch
        (iris' versicolor and virginica, which the pretraining then merges:
        0.83 accuracy with the graph, 0.96 without). The value used is
        ``n_neighbors_``.
    neighbors_estimator : estimator or None, default=None
        How to find the neighbours: an unfitted estimator with scikit-learn's
        neighbours API (``fit`` and ``kneighbors``), cloned before use. None
        is exact Euclidean search (:class:`~sklearn.neighbors.NearestNeighbors`),
        fine up to about 100k rows; beyond that pass an approximate index with
        that API (e.g. a pynndescent or annoy adapter as in scikit-learn's
        "Approximate nearest neighbors in TSNE" example). The graph is stored
        as ``n_samples x n_neighbors`` int64 indices (120 MB at 1M x 15).
    neighbor_weight : float, default=3.0
        Weight of the neighbour-preserving term, in pretraining and in joint
        training (where it keeps the codes from drifting away from the
        input's neighbourhoods).
    consistency_weight : float, default=1.0
        Weight of the neighbour-consistency minus batch-entropy term during
        joint training; 0 turns it off.
    objective : {'elbo', 'iwae', 'avb', 'mine'}, default='elbo'
        Objective of joint training (as in VAETransformer). Supported:
        ``'elbo'`` (VaDE's ELBO with the terms above) and ``'mine'`` (the same
        plus ``mi_weight`` times MINE's lower bound on I(x; z) from a critic
        network ``critic_``). ``'iwae'`` and ``'avb'`` raise a ValueError at
        fit: VaDE's cluster posterior ``q(c|x) = p(c|z)`` and its closed-form
        KL terms are defined for one Gaussian posterior draw, which the
        importance-weighted bound and AVB's implicit encoder replace.
    mi_weight : float, default=1.0
        Weight of the mutual-information bound for ``objective='mine'``.
    pretrain_epochs : int, default=200
        Epochs of autoencoder pretraining before the mixture is initialised.
    n_init : int, default=10
        Mixture fits on the pretrained codes; the one ``init_selection``
        picks initialises the prior.
    n_pretrain : int or 'auto', default='auto'
        Independent starts, each a pretraining from its own network
        initialisation followed by the ``n_init`` mixture fits; joint training
        continues from the start whose initial mixture weights have the
        largest entropy (the most even cluster sizes; the first on ties), and
        each start costs one pretraining (``n_jobs`` runs them side by side).
        'auto' is 2 when ``weight_concentration_prior`` is at least 1 and 1
        otherwise. Which cluster a class ends in is settled during
        pretraining: on the digits under ``weight_concentration_prior=1e3``
        single pretrainings give 0.925 +- 0.004 accuracy over 10 seeds, the
        more even of two 0.927 +- 0.003, of five 0.929 +- 0.002 (see the
        user guide). The criterion assumes clusters of
        similar sizes, which is what a balanced prior says; without one it
        can prefer the wrong start (on wine, whose classes have 48 to 71 rows,
        the more even starts cluster worse), so 'auto' runs one start there.
    n_jobs : int or None, default=None
        Threads that run the ``n_pretrain`` starts side by side, as in
        scikit-learn: None is 1 unless in a :func:`joblib.parallel_config`
        context, -1 is every core. torch computes outside Python's GIL, so on
        a CPU with idle cores the starts overlap (torch's intra-op threads are
        shared out among them meanwhile). The fit is the one a single job
        gives, bit for bit when torch runs on one thread (and on the digits
        with two), since each start keeps its own seeds; torch's kernels may
        round differently when a start gets fewer intra-op threads than a
        single job would. On the digits under a balanced prior, the two
        starts of 'auto' on two threads of a 2-core machine took 41 s
        against 76 s on one; three starts 63 s on three threads, 86 s on
        two (the third start running alone after the first two) and 105 s on
        one. On a GPU, and in a process group, the starts run one after
        another.
    init_selection : {'auto', 'entropy', 'map'}, default='auto'
        How to choose among the ``n_init`` fits. 'entropy': the fit whose
        weights have the largest entropy, i.e. the most even cluster sizes
        (fits within 1e-3 nats of it, which found the same optimum up to EM's
        tolerance, are told apart by the MAP objective). 'map': the best
        log-likelihood plus the log-density of the Dirichlet weight prior, if
        ``weight_concentration_prior`` is set. 'auto' is 'map' when
        ``weight_concentration_prior`` is below 1 (the point of such a prior is
        to empty components) and 'entropy' otherwise. The likelihood can rank a
        worse clustering first: on the digits' codes it prefers splitting one
        class in two and merging two others, and choosing by it gives 0.897
        mean accuracy over 10 seeds against 0.922 by entropy (relu networks).
        For clusters of very unequal sizes pass 'map'.
    weight_concentration_prior : float or None, default=None
        ``alpha`` of a symmetric Dirichlet prior on the mixture weights, as
        BayesianGaussianMixture's ``'dirichlet_distribution'``: values below 1
        shrink unneeded components toward zero weight, large values (e.g. 1e3)
        hold the clusters near balanced. With ``init_selection='map'`` it also
        chooses among the ``n_init`` candidates. None: no prior
        (maximum-likelihood weights). Below 1 the collapse guard is off, since
        emptying components is then the point.
    stepwise_decay : float, default=0.7
        ``alpha`` in (0.5, 1] of the step sizes ``eta_t = (t + 2)^-alpha``
        with which :meth:`partial_fit` blends each batch's statistics into the
        running ones (stepwise EM; Cappe and Moulines 2009, Liang and Klein
        2009): smaller values forget old batches faster, 1 averages all
        batches equally. Unused by :meth:`fit`.
    max_iter : int, default=50
        Epochs of joint training.
    batch_size : int or 'auto', default=128
        Rows per training step; 'auto' is ``min(200, n_samples)``.
    learning_rate_init : float, default=1e-3
        Adam's step size in both phases.
    learning_rate : {'constant', 'adaptive'}, default='constant'
        Schedule of joint training ('adaptive' divides the rate by 5 on
        plateaus).
    max_grad_norm : float or None, default=None
        Gradient-norm clipping; None disables it.
    alpha : float, default=0.0
        L2 penalty on the weight matrices.
    early_stopping : bool, default=False
        Stop joint training when the loss on a held-out
        ``validation_fraction`` stops improving, and keep the best weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
        Joint training stops after this many epochs in a row without an
        improvement of the monitored loss by ``tol``, or when over the last
        this many epochs at most ``assignment_tol`` of the rows changed
        cluster per epoch on average.
    tol : float, default=1e-4
        Minimal improvement of the monitored loss, in nats per sample.
    assignment_tol : float, default=0.01
        Largest share of the training rows that may change cluster per epoch,
        averaged over the last ``n_iter_no_change`` epochs, for the clustering
        to count as settled and joint training to end as converged
        (``assignment_change`` in ``history_`` is each epoch's share). The
        average, not each epoch, is bounded because a settled clustering keeps
        a few boundary rows flipping: on the digits about 10 of 1797 rows per
        epoch, with single epochs above 1 %. With 0 no row may change in the
        window.
    device : str or torch.device, default='cpu'
        Where to compute: 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.
    random_state : int, RandomState instance or None, default=None
        Seeds the networks, the batches, the noise, the mixture fits and
        :meth:`sample`.
    verbose : int, default=0
        Progress bars over epochs when positive.
    warm_start : bool, default=False
        Refitting a fitted estimator continues joint training from the current
        networks and mixture (no pretraining, no re-initialisation).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        Mixture weights of the latent prior.
    means_ : ndarray of shape (n_components, latent_dim)
        Component means in latent space.
    covariance_type_ : {'full', 'diag', 'spherical'}
        The latent mixture's covariance type (``covariance_type`` with 'auto'
        resolved).
    latent_dim_ : int
        Dimension of the latent space (``latent_dim`` with 'auto' resolved).
    n_neighbors_ : int or None
        ``k`` of the neighbour graph the last fit used (``n_neighbors`` with
        'auto' resolved); None for plain VaDE.
    covariances_ : ndarray
        As in GaussianMixture, for ``covariance_type_``:
        ``(n_components, latent_dim, latent_dim)`` matrices ('full'),
        ``(n_components, latent_dim)`` diagonal variances ('diag') or
        ``(n_components,)`` variances ('spherical').
    encoder_ : GaussianEncoder
        The torch encoder, ``x -> (mean, log_var)`` of ``q(z|x)``.
    decoder_ : LikelihoodDecoder
        The torch decoder, ``z -> p(x|z)``.
    prior_ : GaussianMixturePrior
        The torch module holding the latent mixture.
    critic_ : PairCritic
        MINE's critic ``T(x, z)``; only for ``objective='mine'``.
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training row (``predict`` of the training data).
    history_ : list of dict
        One record per joint-training epoch: each loss term, the time,
        ``mutual_information`` (an InfoNCE lower bound on I(x; z) in nats on
        one fixed batch, at most ``log(batch_size)``), ``critic_loss`` and
        ``mine_bound`` for ``objective='mine'``, and ``collapse_events`` when
        the guard re-seeded components.
    pretrain_history_ : list of dict
        One record per pretraining epoch, of the start that was kept.
    pretrain_entropies_ : ndarray of shape (n_starts,)
        Entropy in nats of the initial mixture weights of each start (one per
        ``n_pretrain``); joint training continued from the first largest.
    loss_curve_ : list of float
        Joint-training loss per epoch.
    n_iter_ : int
        Joint-training epochs run, over all fits.
    best_loss_ : float
        Best monitored joint-training loss.
    lower_bound_ : float
        Mean ELBO per training row at the end of training, in nats.
    converged_ : bool
        Whether joint training stopped before ``max_iter`` epochs.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when ``X`` has string feature names.

    See Also
    --------
    sklearn_vae.mixture.EMGaussianMixture : Gaussian mixture on the raw features.
    sklearn.mixture.GaussianMixture : scikit-learn's Gaussian mixture.
    sklearn.cluster.KMeans : k-means clustering.

    References
    ----------
    Jiang, Zheng, Tan, Tang, Zhou. "Variational Deep Embedding: An Unsupervised
    and Generative Approach to Clustering." IJCAI 2017.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from sklearn_vae import VariationalGMMPrior
    >>> X, _ = make_blobs(200, n_features=5, centers=3, random_state=0)
    >>> model = VariationalGMMPrior(3, latent_dim=2, hidden_layer_sizes=(16,),
    ...                             pretrain_epochs=5, max_iter=5, n_init=2,
    ...                             random_state=0)
    >>> model.fit_predict(X).shape
    (200,)
    >>> model.predict_proba(X[:2]).shape
    (2, 3)
    """

    _parameter_constraints: dict = {
        **NeuralEstimatorBase._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "latent_dim": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "likelihood": [StrOptions({"gaussian", "bernoulli"})],
        "covariance_type": [StrOptions({"auto", *COVARIANCE_TYPES})],
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "neighbors_estimator": [HasMethods(["fit", "kneighbors"]), None],
        "neighbor_weight": [Interval(Real, 0, None, closed="left")],
        "consistency_weight": [Interval(Real, 0, None, closed="left")],
        "objective": [StrOptions({"elbo", "iwae", "avb", "mine"})],
        "mi_weight": [Interval(Real, 0, None, closed="left")],
        "pretrain_epochs": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "n_pretrain": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "n_jobs": [Integral, None],
        "init_selection": [StrOptions({"auto", "entropy", "map"})],
        "weight_concentration_prior": [Interval(Real, 0, None, closed="neither"), None],
        "stepwise_decay": [Interval(Real, 0.5, 1, closed="right")],
        "assignment_tol": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(
        self,
        n_components: int = 10,
        *,
        latent_dim: int | str = "auto",
        hidden_layer_sizes: Any = (256, 128),
        activation: str = "tanh",
        likelihood: str = "gaussian",
        covariance_type: str = "auto",
        n_neighbors: int | str | None = "auto",
        neighbors_estimator: Any = None,
        neighbor_weight: float = 3.0,
        consistency_weight: float = 1.0,
        objective: str = "elbo",
        mi_weight: float = 1.0,
        pretrain_epochs: int = 200,
        n_init: int = 10,
        n_pretrain: int | str = "auto",
        n_jobs: int | None = None,
        init_selection: str = "auto",
        weight_concentration_prior: float | None = None,
        stepwise_decay: float = 0.7,
        max_iter: int = 50,
        batch_size: int | str = 128,
        learning_rate_init: float = 1e-3,
        learning_rate: str = "constant",
        max_grad_norm: float | None = None,
        alpha: float = 0.0,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        assignment_tol: float = 0.01,
        device: str | torch.device = "cpu",
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        self.n_components = n_components
        self.latent_dim = latent_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.likelihood = likelihood
        self.covariance_type = covariance_type
        self.n_neighbors = n_neighbors
        self.neighbors_estimator = neighbors_estimator
        self.neighbor_weight = neighbor_weight
        self.consistency_weight = consistency_weight
        self.objective = objective
        self.mi_weight = mi_weight
        self.pretrain_epochs = pretrain_epochs
        self.n_init = n_init
        self.n_pretrain = n_pretrain
        self.n_jobs = n_jobs
        self.init_selection = init_selection
        self.weight_concentration_prior = weight_concentration_prior
        self.stepwise_decay = stepwise_decay
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.learning_rate = learning_rate
        self.max_grad_norm = max_grad_norm
        self.alpha = alpha
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.assignment_tol = assignment_tol
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # -- template methods of NeuralEstimatorBase --------------------------------
    def _build_model(self, n_features: int) -> MixturePriorVAE:
        hidden = self._hidden_layer_sizes()
        latent_dim = self._model_latent_dim()
        encoder = GaussianEncoder(n_features, latent_dim, hidden, self.activation)
        with torch.no_grad():
            encoder.network[-1].weight[latent_dim:] = 0.0
            encoder.network[-1].bias[latent_dim:] = _INITIAL_LOG_VARIANCE
        decoder_class = GaussianDecoder if self.likelihood == "gaussian" else BernoulliDecoder
        decoder = decoder_class(latent_dim, n_features, hidden, self.activation)
        prior = GaussianMixturePrior(
            self.n_components, latent_dim, self._latent_covariance_type()
        )
        # The mixture is set in closed form each epoch (MixtureMaximization),
        # not by the optimiser.
        prior.requires_grad_(False)
        model = MixturePriorVAE(encoder, decoder, prior)
        if self.objective == "mine":
            model.critic = PairCritic(n_features, latent_dim, hidden, self.activation)
        return model

    def _model_latent_dim(self) -> int:
        """Latent dimension of the networks being built.

        The one this fit resolved while fitting; ``latent_dim_`` when the
        networks of a fitted estimator are rebuilt (loading a model file).
        """
        fitting = vars(self).get("_fit_latent_dim")
        if fitting is not None:
            return fitting
        return getattr(self, "latent_dim_", self.latent_dim)

    def _resolve_auto_sizes(self, n_features: int, resume: bool) -> None:
        """Set this fit's latent dimension and neighbour count ('auto' resolved)."""
        if resume:  # the fitted networks keep their latent space
            latent_dim = self.latent_dim_
        elif self.latent_dim == "auto":
            latent_dim = min(_AUTO_LATENT_DIM, n_features)
        else:
            latent_dim = self.latent_dim
        n_neighbors = self.n_neighbors
        if n_neighbors == "auto":
            n_neighbors = _AUTO_N_NEIGHBORS if n_features > latent_dim else None
        self._fit_latent_dim, self._fit_n_neighbors = latent_dim, n_neighbors

    def _latent_covariance_type(self) -> str:
        """``covariance_type`` with 'auto' resolved (see the class docstring)."""
        if self.covariance_type != "auto":
            return self.covariance_type
        n_rows = getattr(self, "_n_training_rows", None)
        if n_rows is None:  # rebuilding the networks of a fitted estimator
            return self.covariance_type_
        if self._fit_n_neighbors is not None:
            return "diag"
        # Every rank counts its own shard; the decision uses all rows, so
        # that the ranks of a distributed fit build the same prior.
        n_rows = int(all_reduce_sum(torch.tensor(n_rows, dtype=torch.float64)).item())
        latent_dim = self._fit_latent_dim
        full_parameters = latent_dim * (latent_dim + 3) // 2
        return "full" if n_rows >= self.n_components * full_parameters else "diag"

    def _build_objective(self) -> Objective:
        if self.objective not in ("elbo", "mine"):
            raise ValueError(
                f"VariationalGMMPrior supports objective='elbo' or 'mine', got "
                f"objective={self.objective!r}: VaDE's cluster posterior and KL "
                "terms need one draw from a Gaussian encoder. Use VAETransformer "
                f"for objective={self.objective!r}."
            )
        elbo = MixturePriorELBO(
            self.weight_concentration_prior, self.consistency_weight, self.neighbor_weight
        )
        return InfoMax(elbo, self.mi_weight) if self.objective == "mine" else elbo

    def _fit(self, X: Any, *, incremental: bool) -> VariationalGMMPrior:
        # partial_fit sets the prior by stepwise EM after its pass, so its pass
        # must not set it from the batch alone (see _callbacks).
        self._stepwise_prior = incremental
        try:
            super()._fit(X, incremental=incremental)
            self.n_neighbors_ = self._fit_n_neighbors
            return self
        finally:  # the row count and sizes are the fit's, not fitted attributes
            for name in ("_n_training_rows", "_fit_latent_dim", "_fit_n_neighbors"):
                vars(self).pop(name, None)

    def _validated_training_input(self, X: Any, resume: bool) -> np.ndarray:
        X = super()._validated_training_input(X, resume)
        self._n_training_rows = X.shape[0]  # read by _latent_covariance_type
        self._resolve_auto_sizes(X.shape[1], resume)
        return X

    def _callbacks(self) -> list[Callback]:
        callbacks: list[Callback] = []
        if not self._stepwise_prior:
            callbacks.append(MixtureMaximization(self.weight_concentration_prior))
        if self.weight_concentration_prior is None or self.weight_concentration_prior >= 1:
            callbacks.append(CollapseGuard(_COLLAPSE_FRACTION / self.n_components))
        callbacks.append(AssignmentConvergence(self.assignment_tol, self.n_iter_no_change))
        return callbacks

    def _check_training_input(self, X: np.ndarray) -> None:
        n_samples = X.shape[0]
        # A later partial_fit batch only updates a fitted model: any size will do.
        later_batch = self._stepwise_prior and hasattr(self, "n_iter_")
        if n_samples < max(2, self.n_components) and not later_batch:
            raise ValueError(
                f"Expected n_samples >= max(2, n_components), got n_samples={n_samples} "
                f"and n_components={self.n_components}. Provide more samples or ask "
                "for fewer components."
            )
        if self.likelihood == "bernoulli" and (X.min() < 0 or X.max() > 1):
            raise ValueError(
                "likelihood='bernoulli' needs every value of X in [0, 1], got values "
                f"in [{X.min():.3g}, {X.max():.3g}]. Scale X (e.g. MinMaxScaler) or "
                "use likelihood='gaussian'."
            )

    def _training_data(
        self, X: np.ndarray, device: torch.device, dtype: torch.dtype
    ) -> TrainingData:
        X_tensor = to_tensor(X, device=device, dtype=dtype)
        n_neighbors = self._fit_n_neighbors
        if n_neighbors is None or len(X) < 2:  # one row has no neighbour
            return TrainingData(X_tensor)
        graph = nearest_neighbor_graph(
            X, n_neighbors, neighbors_estimator=self.neighbors_estimator
        )
        return TrainingData(X_tensor, neighbors=to_tensor(graph, device=device, dtype=torch.int64))

    def _initialize_model(self, model: MixturePriorVAE, data: TrainingData, seed: int) -> None:
        n_starts = self._n_pretrain()
        # The first start uses the networks the base class built, so that
        # n_pretrain=1 is the single pretraining of earlier releases; each
        # later one a copy of them with fresh weights from its own seed.
        seeds = [self._start_seed(seed, start) for start in range(n_starts)]
        starts = [model] + [self._restarted_copy(model, data, start_seed) for start_seed in seeds[1:]]
        try:
            histories = run_concurrently(
                [
                    functools.partial(self._pretrained_start, start, data, start_seed)
                    for start, start_seed in zip(starts, seeds)
                ],
                self._n_pretrain_workers(n_starts, data),
            )
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_PRETRAINING_INTERRUPTED) from None
        entropies = [float(scipy.stats.entropy(to_numpy(start.prior.weights))) for start in starts]
        winner = int(np.argmax(entropies))  # the first wins ties
        if winner > 0:
            model.load_state_dict(starts[winner].state_dict())
        self.pretrain_history_ = histories[winner]
        self.pretrain_entropies_ = np.array(entropies)

    @staticmethod
    def _start_seed(seed: int, start: int) -> int:
        """Seed of pretraining start ``start`` (0-based) of a fit whose base seed is ``seed``."""
        return seed if start == 0 else derive_seed(seed, _RESTART_STREAM, start)

    def _restarted_copy(
        self, model: MixturePriorVAE, data: TrainingData, seed: int
    ) -> MixturePriorVAE:
        """A copy of ``model`` (device, dtype) with the weights a build under ``seed`` gets."""
        with seeded_module_init(seed):
            fresh = self._build_model(data.X.shape[1])
        restarted = copy.deepcopy(model)
        restarted.load_state_dict(fresh.state_dict())
        return restarted

    def _n_pretrain_workers(self, n_starts: int, data: TrainingData) -> int:
        """Threads the starts run on: ``n_jobs``, on the CPU and in one process only."""
        if n_starts == 1 or data.X.device.type != "cpu" or current_process_group() is not None:
            # One GPU runs the starts' kernels one after another anyway; the
            # ranks of a process group must issue their collectives (the
            # mixture selection's) in the same order.
            return 1
        return min(n_starts, joblib.effective_n_jobs(self.n_jobs))

    def _pretrained_start(
        self,
        model: MixturePriorVAE,
        data: TrainingData,
        seed: int,
        cancelled: threading.Event | None = None,
    ) -> list[dict[str, Any]]:
        """Pretrain ``model`` and initialise its prior; return the pretraining history.

        ``cancelled`` (from :func:`~sklearn_vae._backend.run_concurrently`)
        stops the pretraining before its next epoch once set.
        """
        config = dataclasses.replace(
            self._training_config(len(data), incremental=False),
            max_epochs=self.pretrain_epochs,
            early_stopping=False,
            learning_rate_schedule="constant",
            monitor_from_epoch=self.pretrain_epochs,
        )
        history: list[dict[str, Any]] = []
        if self.pretrain_epochs > 0:
            engine = TrainingEngine(
                model,
                NeighborEmbeddingPretraining(self.neighbor_weight),
                config,
                seed=derive_seed(seed, _PRETRAIN_STREAM),
                callbacks=() if cancelled is None else [StopWhenCancelled(cancelled)],
            )
            result = engine.fit(data)
            if result.interrupted:
                # A pretrained autoencoder without its mixture is no model to
                # keep: Ctrl-C abandons the fit (the estimator is left as it
                # was) instead of going on to the joint training.
                raise KeyboardInterrupt(_PRETRAINING_INTERRUPTED)
            history = result.history
        if isinstance(model.decoder, GaussianDecoder):
            _fit_decoder_variance(model, data.X)
        codes = _encoder_means(model, data.X)
        mixture = self._initial_mixture(
            codes, derive_seed(seed, _MIXTURE_INIT_STREAM), model.prior.covariance_type
        )
        model.prior.initialize(mixture.weights_, mixture.means_, mixture.covariances_)
        return history

    def _n_pretrain(self) -> int:
        """``n_pretrain`` with 'auto' resolved (see the class docstring)."""
        if self.n_pretrain != "auto":
            return self.n_pretrain
        alpha = self.weight_concentration_prior
        return _N_PRETRAIN_BALANCED if alpha is not None and alpha >= 1 else 1

    def _initial_mixture(
        self, codes: np.ndarray, seed: int, covariance_type: str
    ) -> EMGaussianMixture:
        """Fit ``n_init`` mixtures to the codes; return the one ``init_selection`` picks."""
        rng = check_random_state(seed % (2**32))
        candidates = [
            EMGaussianMixture(
                self.n_components,
                covariance_type=covariance_type,
                random_state=rng,
                device=self.device,
            ).fit(codes)
            for _ in range(self.n_init)
        ]
        objectives = np.array([self._map_objective(c, codes) for c in candidates])
        if self._init_selection() == "map":
            return candidates[int(np.argmax(objectives))]
        entropies = np.array([scipy.stats.entropy(c.weights_) for c in candidates])
        tied = entropies >= entropies.max() - _ENTROPY_TIE_NATS
        return candidates[int(np.argmax(np.where(tied, objectives, -np.inf)))]

    def _init_selection(self) -> str:
        """``init_selection`` with 'auto' resolved (see the class docstring)."""
        if self.init_selection != "auto":
            return self.init_selection
        alpha = self.weight_concentration_prior
        return "map" if alpha is not None and alpha < 1 else "entropy"

    def _map_objective(self, mixture: EMGaussianMixture, codes: np.ndarray) -> float:
        """Log-likelihood of the codes plus the Dirichlet weight prior's log-density."""
        # Summed over every rank's codes, so that the ranks of a distributed
        # fit choose the same start.
        objective = all_reduce_sum(
            torch.tensor(mixture.score(codes) * codes.shape[0], dtype=torch.float64)
        ).item()
        if self.weight_concentration_prior is not None:
            objective += (self.weight_concentration_prior - 1.0) * np.log(
                np.maximum(mixture.weights_, np.finfo(np.float64).tiny)
            ).sum()
        return float(objective)

    def _store_model(self, model: MixturePriorVAE) -> None:
        self.encoder_ = model.encoder
        self.decoder_ = model.decoder
        self.prior_ = model.prior
        if hasattr(model, "critic"):
            self.critic_ = model.critic
        else:  # a refit with another objective must not keep an old critic
            vars(self).pop("critic_", None)
        self.covariance_type_ = model.prior.covariance_type
        self.latent_dim_ = model.prior.latent_dim
        with torch.no_grad():
            self.weights_ = to_numpy(model.prior.weights).astype(np.float64)
            self.means_ = to_numpy(model.prior.means).astype(np.float64)
            self.covariances_ = to_numpy(model.prior.covariances()).astype(np.float64)

    def _fitted_model(self) -> MixturePriorVAE:
        model = MixturePriorVAE(self.encoder_, self.decoder_, self.prior_)
        if hasattr(self, "critic_"):
            model.critic = self.critic_
        return model

    # -- fitting -----------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> VariationalGMMPrior:
        """Pretrain, initialise the mixture, and train everything jointly.

        With ``warm_start=True`` on a fitted estimator, only continue the joint
        training.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (dense, finite).
        y : None
            Ignored.

        Returns
        -------
        self : VariationalGMMPrior

        Raises
        ------
        ValueError
            For invalid input; the estimator is then unchanged.
        NonFiniteLossError
            If the loss becomes NaN or infinite; the estimator is unchanged.
        """
        epochs_before = self.n_iter_ if self.warm_start and hasattr(self, "n_iter_") else 0
        # The labels and the bound belong to the fit: if computing them fails,
        # the estimator must not keep new networks beside old labels.
        with unchanged_on_error(self):
            self._fit(X, incremental=False)
            # Each epoch set the prior from all the data: a later partial_fit
            # starts its running statistics afresh.
            vars(self).pop("_prior_statistics", None)
            self.converged_ = self.n_iter_ - epochs_before < self.max_iter
            self.labels_ = self.predict(X)
            self.lower_bound_ = self.score(X)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any = None) -> VariationalGMMPrior:
        """Train on one batch: one pass of optimisation, then a stepwise M-step.

        The first call initialises the estimator as :meth:`fit` does, on this
        batch (pretraining, then the mixture fitted to its codes). Every call
        then trains the networks for one epoch over the batch and updates the
        prior's weights, means and covariances by stepwise (online) EM: the
        batch's sufficient statistics ``s_b`` (responsibility-weighted counts,
        sums and second moments of its codes, per row) move the running
        statistics to ``s <- (1 - eta_t) s + eta_t s_b`` with ``eta_t = (t +
        2)^-stepwise_decay`` (``t`` counts the updates after the first
        batch, which sets ``s``), and the prior is the M-step of ``s``, the
        weights being their MAP estimate under ``weight_concentration_prior``
        for all the rows seen. Blocks of a ``dask_ml.wrappers.Incremental``
        arrive here one by one.

        ``labels_``, ``lower_bound_`` and ``converged_`` describe the last
        :meth:`fit` only; use :meth:`predict` on the batches instead.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One batch of training data; the first needs at least
            ``max(2, n_components)`` rows, later ones any number.
        y : None
            Ignored.

        Returns
        -------
        self : VariationalGMMPrior
        """
        with unchanged_on_error(self):
            self._fit(X, incremental=True)
            X = self._check_inference_input(X)
            model = self._fitted_model()
            # Under a process group, the batches of every rank.
            statistics = _batch_statistics(model, X).all_reduce()
            previous = getattr(self, "_prior_statistics", None)
            if previous is None:
                self._n_stepwise_updates = 0
            else:
                step = stepwise_step_size(self._n_stepwise_updates, self.stepwise_decay)
                statistics = MixtureStatistics(**previous).blend(statistics, step)
                self._n_stepwise_updates += 1
            model.prior.maximization_step(
                statistics, weight_concentration_prior=self.weight_concentration_prior
            )
            self._prior_statistics = dataclasses.asdict(statistics)
            self._store_model(model)
        return self

    # -- inference ---------------------------------------------------------------
    def _encoded_map(self, function: Any, X: Any, log_density: bool = False) -> np.ndarray:
        """Apply ``function(model, rows)`` to validated ``X`` in chunks."""
        X = self._check_inference_input(X)
        width = max(self._widest_layer(self.latent_dim_), self.latent_dim_ * self.n_components)
        return self._map_rows(
            function, X, elements_per_row=_N_SCORE_DRAWS * width, log_density=log_density
        )

    def transform(self, X: Any) -> np.ndarray:
        """Latent posterior means ``E[z|x]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, latent_dim)
            In the dtype of ``X`` (float32 or float64).
        """
        return self._encoded_map(lambda model, rows: model.encoder(rows)[0], X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Cluster posteriors ``q(c|x)``, evaluated at the posterior mean of z.

        Deterministic, and each row's result depends on that row only.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
            Rows sum to one.
        """
        return self._encoded_map(
            lambda model, rows: model.prior.log_responsibilities(model.encoder(rows)[0]).exp(),
            X,
        )

    def predict(self, X: Any) -> np.ndarray:
        """Most probable cluster of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,), int64
        """
        return np.argmax(self.predict_proba(X), axis=1).astype(np.int64)

    def score_samples(self, X: Any) -> np.ndarray:
        """Evidence lower bound of each row, in nats (higher is better).

        ``E_q[log p(x|z)] - KL(q(z,c|x) || p(z,c))`` with ``q(c|x) = p(c|z)``,
        estimated with the same fixed latent noise draws for every row (common
        random numbers): deterministic and row-independent.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
            -inf for a row so far from the training data that its bound is
            below the dtype's range.
        """
        check_is_fitted(self)
        seed = derive_seed(self._seed, _SCORE_STREAM)
        return self._encoded_map(lambda model, rows: _elbo(model, rows, seed), X, log_density=True)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean evidence lower bound per row, in nats (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        float
        """
        return float(np.mean(self.score_samples(X)))

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Decoder means ``E[x|z]`` of latent points.

        Parameters
        ----------
        X : array-like of shape (n_samples, latent_dim)
            Latent points, e.g. from :meth:`transform`.

        Returns
        -------
        ndarray of shape (n_samples, `n_features_in_`)
            In the dtype of the latent points.
        """
        check_is_fitted(self)
        return self._decode_latent(X, self.latent_dim_, "latent_dim_")

    def sample(self, n_samples: int = 1, component: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Generate data from the model: ``c``, then ``z | c``, then ``E[x|z]``.

        Draws are seeded by ``random_state`` (the same draws on every call for
        an int, as in GaussianMixture.sample).

        Parameters
        ----------
        n_samples : int, default=1
        component : int, default=None
            Draw every sample from this component instead of the mixture.

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`)
            Decoder means of the latent draws.
        y : ndarray of shape (n_samples,), int64
            Component of each draw.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples}. It must be an int >= 1.")
        if component is not None and not (
            isinstance(component, Integral) and 0 <= component < self.n_components
        ):
            raise ValueError(
                f"component must be None or an int in [0, {self.n_components - 1}], "
                f"got {component!r}."
            )
        device = self.prior_.means.device
        generator = make_generator(seed_from_random_state(self.random_state), device)
        with torch.no_grad():
            z, labels = self.prior_.sample(int(n_samples), generator, component)
            X = self.decoder_.mean(z)
        return to_numpy(X), to_numpy(labels).astype(np.int64)

    @property
    def _n_features_out(self) -> int:
        return self.latent_dim_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _encoder_means(model: MixturePriorVAE, X: torch.Tensor) -> np.ndarray:
    """Posterior means of every row of a device tensor, as float64 numpy."""
    model.eval()
    with torch.no_grad():
        chunks = [
            model.encoder(X[rows])[0] for rows in iter_row_chunks(len(X), _ENCODE_CHUNK_ROWS)
        ]
    return to_numpy(torch.cat(chunks)).astype(np.float64)


def _batch_statistics(model: MixturePriorVAE, X: np.ndarray) -> MixtureStatistics:
    """The prior's sufficient statistics of every row of ``X``, at the posterior means."""
    parameter = next(model.parameters())
    model.eval()
    statistics = None
    with torch.no_grad():
        for rows in iter_row_chunks(len(X), _ENCODE_CHUNK_ROWS):
            chunk = to_tensor(X[rows], device=parameter.device, dtype=parameter.dtype)
            mean, log_var = model.encoder(chunk)
            chunk_statistics = model.prior.sufficient_statistics(
                mean, log_var, model.prior.log_responsibilities(mean)
            )
            statistics = (
                chunk_statistics if statistics is None else statistics.merge(chunk_statistics)
            )
    return statistics


def _fit_decoder_variance(model: MixturePriorVAE, X: torch.Tensor) -> None:
    """Set a Gaussian decoder's variances to the pretrained reconstruction's.

    Pretraining leaves the learned variance at its initial 1, far above the
    residuals of a trained autoencoder; joint training would then weigh the
    reconstruction far too little against the KL terms until Adam had slowly
    shrunk it, and in that time the codes drift into the prior's modes (the
    clusters merge). The maximum-likelihood variance, per feature, is the
    mean squared residual, over every rank's rows in a distributed fit.
    """
    model.eval()
    with torch.no_grad():
        squared = sum(
            (X[rows] - model.decoder.mean(model.encoder(X[rows])[0])).square().sum(dim=0)
            for rows in iter_row_chunks(len(X), _ENCODE_CHUNK_ROWS)
        )
        n_rows = all_reduce_sum(torch.tensor(len(X), dtype=X.dtype, device=X.device))
        variance = all_reduce_sum(squared) / n_rows - GAUSSIAN_VARIANCE_FLOOR
        model.decoder.log_variance.copy_(variance.clamp_min(GAUSSIAN_VARIANCE_FLOOR).log())


def _elbo(model: MixturePriorVAE, rows: torch.Tensor, seed: int) -> torch.Tensor:
    """VaDE's ELBO per row, averaged over fixed noise draws shared by every row."""
    mean, log_var = model.encoder(rows)
    generator = make_generator(seed, rows.device)
    noise = torch.randn(
        _N_SCORE_DRAWS, mean.shape[1], generator=generator, device=rows.device, dtype=rows.dtype
    )
    z = reparameterize(mean, log_var, noise[:, None, :])
    draws, n_rows, latent_dim = z.shape

    def flat(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.expand(draws, n_rows, latent_dim).reshape(-1, latent_dim)

    log_gamma = model.prior.log_responsibilities(flat(z))
    kl = sum(model.prior.kl_terms(flat(mean), flat(log_var), log_gamma).values())
    reconstruction = model.decoder.log_prob(rows, z)
    return (reconstruction - kl.reshape(draws, n_rows)).mean(dim=0)
