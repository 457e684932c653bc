"""VAETransformer against a bare hand-written torch VAE loop, side by side.

Both train the same architecture (encoder 64-256-128-2x2, decoder mirrored,
Gaussian likelihood with a learned per-feature variance) with Adam, the same
batch size and number of epochs, on standardised digits in float32, in this
one process. Timings interleave the two and keep each one's best of
``--repeats`` runs, so a noisy shared machine penalises neither. Prints
throughputs (training samples per second), their ratio (estimator / bare; the
target is >= 0.9) and the final ELBO of each, estimated the same way (mean over
100 posterior draws per sample, nats).

Usage::

    python benchmarks/bench_vae.py [--epochs 20] [--batch-size 128]
                                   [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from torch import nn

from sklearn_vae import VAETransformer

HIDDEN = (256, 128)
N_COMPONENTS = 2
LEARNING_RATE = 1e-3
N_ELBO_DRAWS = 100
LOG_2PI = math.log(2 * math.pi)


def mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers)


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
    # for exactly `epochs` epochs, as in the bare version.
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
    ).fit(X)


def best_time(function, repeats: int) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)

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


if __name__ == "__main__":
    main()
