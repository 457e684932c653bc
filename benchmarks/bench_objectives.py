"""The training objectives side by side on digits.

For each ``objective`` of VAETransformer, trained for the same epochs on the
same split of scikit-learn's digits (X / 16, Bernoulli likelihood), prints:

* the held-out log-likelihood estimated by ``score_samples`` (IWAE bound with
  ``n_importance_samples`` draws; for 'avb' the proposal is the Gaussian of
  the implicit posterior's moments), nats per digit, higher is better;
* the held-out reconstruction error, mean squared error per pixel of
  ``inverse_transform(transform(X))``;
* the recorded I(x; z), the last epoch's ``mutual_information`` (an InfoNCE
  lower bound on one batch, at most log(batch_size) nats);
* the Hungarian-matched clustering accuracy of VariationalGMMPrior trained
  with that objective (defaults otherwise), where it supports the objective;
* the wall-clock time per epoch of the VAE fit.

Usage::

    python benchmarks/bench_objectives.py            # 30 epochs
    python benchmarks/bench_objectives.py --quick    # a smoke run

Torch runs on one thread unless ``--threads`` says otherwise.
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
from sklearn.model_selection import train_test_split

from sklearn_vae import VAETransformer, VariationalGMMPrior
from sklearn_vae.metrics import clustering_accuracy

OBJECTIVES = ("elbo", "iwae", "avb", "mine")
#: The objectives VariationalGMMPrior supports.
CLUSTERING_OBJECTIVES = ("elbo", "mine")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs, for a smoke run")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n-components", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    epochs = 2 if arguments.quick else arguments.epochs

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_test = train_test_split(X, test_size=0.3, random_state=arguments.seed)
    print(
        f"digits: {len(X_train)} training and {len(X_test)} held-out rows, "
        f"n_components={arguments.n_components}, {epochs} epochs, "
        f"{torch.get_num_threads()} thread(s)"
    )
    header = (
        f"{'objective':<10}{'held-out log p(x)':>19}{'recon. MSE':>12}"
        f"{'I(x; z)':>9}{'VaDE acc.':>11}{'s/epoch':>9}"
    )
    print(header)
    print("-" * len(header))
    for objective in OBJECTIVES:
        vae = VAETransformer(
            arguments.n_components,
            likelihood="bernoulli",
            objective=objective,
            max_iter=epochs,
            n_iter_no_change=epochs,
            random_state=arguments.seed,
        )
        started = time.perf_counter()
        vae.fit(X_train)
        seconds_per_epoch = (time.perf_counter() - started) / vae.n_iter_
        log_likelihood = vae.score_samples(X_test).mean()
        reconstruction = np.mean((vae.inverse_transform(vae.transform(X_test)) - X_test) ** 2)
        mutual_information = vae.history_[-1]["mutual_information"]
        accuracy = math.nan
        if objective in CLUSTERING_OBJECTIVES:
            clusterer = VariationalGMMPrior(
                10,
                likelihood="bernoulli",
                objective=objective,
                pretrain_epochs=2 if arguments.quick else 100,
                max_iter=epochs,
                random_state=arguments.seed,
            )
            accuracy = clustering_accuracy(y, clusterer.fit_predict(X))
        print(
            f"{objective:<10}{log_likelihood:>19.2f}{reconstruction:>12.4f}"
            f"{mutual_information:>9.2f}"
            f"{'n/a' if math.isnan(accuracy) else f'{accuracy:.3f}':>11}"
            f"{seconds_per_epoch:>9.3f}"
        )


if __name__ == "__main__":
    main()
