"""VAETransformer side by side with a bare torch loop and with pythae's VAE.

Two parts, each run in this one process:

``throughput``
    VAETransformer against a bare hand-written torch VAE loop with the same
    architecture (encoder 64-256-128-2x2, decoder mirrored, Gaussian likelihood
    with a learned per-feature variance), Adam, batch size and epochs, on
    standardised digits in float32. Timings interleave the two and keep each
    one's best of ``--repeats`` runs, so a noisy shared machine penalises
    neither. Prints throughputs (training samples per second), their ratio
    (estimator / bare; the target is >= 0.9) and the final ELBO of each.

``quality``
    What the codes and the density are worth, on the digits scaled to [0, 1]
    (``X / 16``) over ``--seeds`` seeds: ``VAETransformer(n_components=10)``
    with its defaults, the same with the recipe of earlier releases
    (per-feature decoder variance started at the data's variance), and
    pythae's ``VAE`` (the reference implementation of Chadebec et al., 2022)
    with the same networks (64-256-128-2x10 ReLU, decoder mirrored), Adam at
    the same learning rate, batch size and number of epochs, trained by
    pythae's own trainer, with each of its two likelihoods: ``'mse'`` (a unit
    variance Gaussian) and ``'bce'`` (Bernoulli), beside our
    ``likelihood='bernoulli'``. Columns:

    * ``acc``: Hungarian-matched accuracy of ``GaussianMixture(10)`` on the
      codes (posterior means); PCA(10) codes are the reference;
    * ``active@10`` / ``active@16``: latent units whose posterior mean varies
      by more than 0.01 over the data (Burda et al. 2016), at
      ``n_components`` 10 and 16;
    * ``held-out log p(x)``: fit on 80 % of the rows, the importance-sampled
      log-likelihood (the IWAE bound with 100 draws per row, nats per row) of
      the other 20 %, computed by one function for every model, under each
      model's own likelihood.

    pythae is a benchmark peer only (``pip install -c constraints.txt
    pythae``); without it its rows are skipped with the reason.

Usage::

    python benchmarks/bench_vae.py [--part throughput|quality|all]
        [--epochs 20] [--batch-size 128] [--repeats 3] [--threads 1] [--seeds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import tempfile
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F

from sklearn_vae import VAETransformer
from sklearn_vae.metrics import clustering_accuracy

HIDDEN = (256, 128)
N_COMPONENTS = 2
LEARNING_RATE = 1e-3
N_ELBO_DRAWS = 100
LOG_2PI = math.log(2 * math.pi)

#: Importance samples per row of the held-out log-likelihood (as
#: VAETransformer's default n_importance_samples).
N_IMPORTANCE = 100

#: The recipe of earlier releases: the decoder's per-feature variance started
#: at the data's own variance.
EARLIER_RECIPE = {"shared_variance_epochs": 0}


def mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers)


# -- throughput ----------------------------------------------------------------
class BareVAE(nn.Module):
    """What a torch user writes by hand: no validation, no history, no checks."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.encoder = mlp([n_features, *HIDDEN, 2 * N_COMPONENTS])
        self.decoder = mlp([N_COMPONENTS, *reversed(HIDDEN), n_features])
        self.log_variance = nn.Parameter(torch.zeros(n_features))

    def log_weights(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """log p(x|z) + log p(z) - log q(z|x) for z = mean + std * noise."""
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * log_var) * noise
        variance = torch.exp(self.log_variance) + 1e-6
        log_px = -0.5 * ((x - self.decoder(z)) ** 2 / variance + torch.log(variance) + LOG_2PI).sum(-1)
        log_pz = -0.5 * (z**2 + LOG_2PI).sum(-1)
        log_qz = -0.5 * (noise**2 + log_var + LOG_2PI).sum(-1)
        return log_px + log_pz - log_qz

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        variance = torch.exp(self.log_variance) + 1e-6
        reconstruction = 0.5 * ((x - self.decoder(z)) ** 2 / variance + torch.log(variance) + LOG_2PI).sum(-1)
        kl = 0.5 * (mean**2 + torch.exp(log_var) - 1 - log_var).sum(-1)
        return (reconstruction + kl).mean()


def train_bare(X: torch.Tensor, epochs: int, batch_size: int) -> BareVAE:
    torch.manual_seed(0)
    model = BareVAE(X.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    for _ in range(epochs):
        for rows in torch.randperm(len(X)).split(batch_size):
            loss = model.loss(X[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def bare_elbo(model: BareVAE, X: torch.Tensor) -> float:
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(N_ELBO_DRAWS, 1, N_COMPONENTS, generator=generator)
    with torch.no_grad():
        return float(model.log_weights(X, noise).mean())


def train_estimator(X: np.ndarray, epochs: int, batch_size: int) -> VAETransformer:
    # alpha=0 and tol=0 with n_iter_no_change=epochs: the same plain Adam loop
    # for exactly `epochs` epochs, as in the bare version, with its decoder.
    return VAETransformer(
        n_components=N_COMPONENTS,
        hidden_layer_sizes=HIDDEN,
        learning_rate_init=LEARNING_RATE,
        batch_size=batch_size,
        max_iter=epochs,
        n_iter_no_change=epochs,
        tol=0.0,
        alpha=0.0,
        random_state=0,
        **EARLIER_RECIPE,
    ).fit(X)


def best_time(function, repeats: int) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def throughput(args: argparse.Namespace) -> None:
    X = StandardScaler().fit_transform(load_digits().data).astype(np.float32)
    X_tensor = torch.from_numpy(X)
    n_trained = len(X) * args.epochs
    bare_times, estimator_times = [], []
    for _ in range(args.repeats):  # interleaved: both see the same machine load
        time_bare, bare = best_time(lambda: train_bare(X_tensor, args.epochs, args.batch_size), 1)
        time_estimator, estimator = best_time(
            lambda: train_estimator(X, args.epochs, args.batch_size), 1
        )
        bare_times.append(time_bare)
        estimator_times.append(time_estimator)
    bare_throughput = n_trained / min(bare_times)
    estimator_throughput = n_trained / min(estimator_times)

    print(f"digits {X.shape}, float32, {args.epochs} epochs, batch {args.batch_size}, "
          f"hidden {HIDDEN}, {N_COMPONENTS}-D latent, torch threads {args.threads}, "
          f"best of {args.repeats}")
    print(f"{'':16s}{'samples/s':>12s}{'fit time (s)':>14s}{'final ELBO (nats)':>20s}")
    print(f"{'bare torch loop':16s}{bare_throughput:12.0f}{min(bare_times):14.3f}"
          f"{bare_elbo(bare, X_tensor):20.2f}")
    print(f"{'VAETransformer':16s}{estimator_throughput:12.0f}{min(estimator_times):14.3f}"
          f"{estimator.score(X):20.2f}")
    print(f"throughput ratio (VAETransformer / bare): "
          f"{estimator_throughput / bare_throughput:.3f}  (target >= 0.9)")


# -- quality -------------------------------------------------------------------
def log_likelihood(encode, log_prob, X: np.ndarray, seed: int) -> float:
    """Mean IWAE estimate of log p(x) over the rows of X, in nats.

    ``encode(x) -> (mean, log_var)``; ``log_prob(x, z) -> log p(x|z)`` for z
    of shape (draws, rows, latent). The same draws serve every model.
    """
    x = torch.from_numpy(X)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mean, log_var = encode(x)
        noise = torch.randn((N_IMPORTANCE, *mean.shape), generator=generator, dtype=x.dtype)
        z = mean + torch.exp(0.5 * log_var) * noise
        log_prior = -0.5 * (z.square() + LOG_2PI).sum(-1)
        log_posterior = -0.5 * (noise.square() + log_var + LOG_2PI).sum(-1)
        log_weights = log_prob(x, z) + log_prior - log_posterior
        bound = torch.logsumexp(log_weights, dim=0) - math.log(N_IMPORTANCE)
    return float(bound.mean())


def ours(params: dict, n_components: int, seed: int) -> VAETransformer:
    return VAETransformer(n_components=n_components, random_state=seed, **params)


def _ours_log_likelihood(vae: VAETransformer, X: np.ndarray, seed: int) -> float:
    def log_prob(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return vae.decoder_.log_prob(x, z)

    return log_likelihood(vae.encoder_, log_prob, X, seed)


def pythae_vae(X: np.ndarray, n_components: int, epochs: int, loss: str, seed: int):
    """Train pythae's VAE with our architecture; return (encode, log_prob)."""
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    n_features = X.shape[1]
    torch.manual_seed(seed)

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.network = mlp([n_features, *HIDDEN, 2 * n_components])

        def forward(self, x: torch.Tensor):
            mean, log_var = self.network(x).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.network = mlp([n_components, *reversed(HIDDEN), n_features])

        def forward(self, z: torch.Tensor):
            out = self.network(z)
            return ModelOutput(reconstruction=torch.sigmoid(out) if loss == "bce" else out)

    model = VAE(
        VAEConfig(input_dim=(n_features,), latent_dim=n_components, reconstruction_loss=loss),
        encoder=Encoder(),
        decoder=Decoder(),
    )
    with tempfile.TemporaryDirectory() as output_dir, contextlib.redirect_stdout(io.StringIO()):
        config = BaseTrainerConfig(
            output_dir=output_dir,
            num_epochs=epochs,
            learning_rate=LEARNING_RATE,
            per_device_train_batch_size=min(200, len(X)),
            seed=seed,
            no_cuda=True,
        )
        TrainingPipeline(model=model, training_config=config)(train_data=X)
    model.eval()
    network = model.decoder.network

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = model.encoder(x)
        return output.embedding, output.log_covariance

    def log_prob(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = network(z)
        if loss == "bce":
            return -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
        return -0.5 * ((x - out).square() + LOG_2PI).sum(-1)

    return encode, log_prob


def _codes_accuracy(codes: np.ndarray, y: np.ndarray, seed: int) -> float:
    return clustering_accuracy(y, GaussianMixture(10, random_state=seed).fit_predict(codes))


def _active(codes: np.ndarray) -> int:
    return int((codes.var(axis=0) > 0.01).sum())


def quality(args: argparse.Namespace) -> None:
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    seeds = list(range(args.seeds))
    rows: dict[str, dict[str, list[float]]] = {}

    def add(method: str, **values: float) -> None:
        for name, value in values.items():
            rows.setdefault(method, {}).setdefault(name, []).append(value)

    try:
        import pythae  # noqa: F401

        pythae_reason = None
    except ImportError as error:
        pythae_reason = f"pythae not importable ({error})"
    logging.getLogger("pythae").setLevel(logging.ERROR)

    configurations = {
        "VAETransformer (defaults)": {},
        "VAETransformer (earlier recipe)": EARLIER_RECIPE,
        "VAETransformer (bernoulli)": {"likelihood": "bernoulli"},
    }
    for seed in seeds:
        add("PCA(10)", acc=_codes_accuracy(PCA(10, random_state=seed).fit_transform(X), y, seed))
        X_train, X_test = train_test_split(X, test_size=0.2, random_state=seed)
        for method, params in configurations.items():
            started = time.process_time()
            vae = ours(params, 10, seed).fit(X)
            fit_cpu = time.process_time() - started
            codes = vae.transform(X)
            held_out = ours(params, 10, seed).fit(X_train)
            add(
                method,
                acc=_codes_accuracy(codes, y, seed),
                active10=_active(codes),
                active16=_active(ours(params, 16, seed).fit(X).transform(X)),
                loglik=_ours_log_likelihood(held_out, X_test, seed),
                epochs=vae.n_iter_,
                cpu=fit_cpu,
            )
            if pythae_reason is None and params.get("likelihood") != "bernoulli":
                # pythae runs as many epochs as our fit of the same data did.
                for loss, name in (("mse", "pythae VAE (mse)"), ("bce", "pythae VAE (bce)")):
                    if method != "VAETransformer (defaults)":
                        continue
                    started = time.process_time()
                    encode, _ = pythae_vae(X, 10, vae.n_iter_, loss, seed)
                    fit_cpu = time.process_time() - started
                    with torch.no_grad():
                        codes = encode(torch.from_numpy(X))[0].numpy()
                    _, log_prob_16 = None, None
                    encode_16, _ = pythae_vae(X, 16, vae.n_iter_, loss, seed)
                    with torch.no_grad():
                        codes_16 = encode_16(torch.from_numpy(X))[0].numpy()
                    held_encode, held_log_prob = pythae_vae(
                        X_train, 10, held_out.n_iter_, loss, seed
                    )
                    add(
                        name,
                        acc=_codes_accuracy(codes, y, seed),
                        active10=_active(codes),
                        active16=_active(codes_16),
                        loglik=log_likelihood(held_encode, held_log_prob, X_test, seed),
                        epochs=vae.n_iter_,
                        cpu=fit_cpu,
                    )
        print(f"seed {seed} done", flush=True)

    print(f"\ndigits / 16 {X.shape}, float32, seeds {seeds}, torch threads {args.threads}; "
          f"held-out: 20 % of the rows, {N_IMPORTANCE} importance draws")
    header = (f"{'method':34s} {'acc (GMM on codes)':>19s} {'active@10':>10s} "
              f"{'active@16':>10s} {'held-out log p(x)':>18s} {'epochs':>7s} {'fit cpu s':>10s}")
    print(header)
    print("-" * len(header))
    for method, values in rows.items():
        def cell(name: str, width: int, digits: int) -> str:
            if name not in values:
                return f"{'':>{width}s}"
            mean, std = np.mean(values[name]), np.std(values[name])
            text = f"{mean:.{digits}f} ± {std:.{digits}f}" if digits else f"{mean:.1f}"
            return f"{text:>{width}s}"

        print(f"{method:34s} {cell('acc', 19, 3)} {cell('active10', 10, 0)} "
              f"{cell('active16', 10, 0)} {cell('loglik', 18, 2)} {cell('epochs', 7, 0)} "
              f"{cell('cpu', 10, 0)}")
    if pythae_reason is not None:
        print(f"pythae rows skipped: {pythae_reason}")
    print("pythae 'mse' is a unit-variance Gaussian likelihood, 'bce' a Bernoulli one; "
          "compare its 'bce' row with ours 'bernoulli'.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["throughput", "quality", "all"], default="all")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    if args.part in ("throughput", "all"):
        throughput(args)
    if args.part in ("quality", "all"):
        quality(args)


if __name__ == "__main__":
    main()
