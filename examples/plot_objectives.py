"""
==================================================
Four ways to train a VAE: ELBO, IWAE, AVB and MINE
==================================================

:class:`~sklearn_vae.VAETransformer` trains the same encoder and decoder under
one of four objectives, chosen by its ``objective`` parameter:

- ``'elbo'``: the evidence lower bound;
- ``'iwae'``: the importance-weighted bound (Burda et al. 2016), tighter, so
  the decoder reaches a higher likelihood;
- ``'avb'``: Adversarial Variational Bayes (Mescheder et al. 2017), an implicit
  encoder whose posterior may take any shape, with the KL term estimated by a
  discriminator;
- ``'mine'``: the ELBO plus a MINE lower bound on the mutual information
  I(x; z) between digits and codes (Belghazi et al. 2018), which keeps the
  codes informative.

Every objective records an estimate of I(x; z) in ``history_``. This example
compares held-out log-likelihoods, that estimate over training, and the 2-D
codes each objective learns.
"""

# %%
# Train one VAE per objective
# ---------------------------
# Each model trains for the same number of epochs, so the comparison is fair
# (and the convergence warning is expected). ``SKLEARN_VAE_DOCS_QUICK=1`` (set
# by the documentation's test build) trains for a few epochs only.
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from sklearn_vae import VAETransformer

warnings.filterwarnings("ignore", category=ConvergenceWarning)
quick = os.environ.get("SKLEARN_VAE_DOCS_QUICK") == "1"
X, y = load_digits(return_X_y=True)
X = X / 16.0
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)

objectives = ["elbo", "iwae", "avb", "mine"]
models = {
    objective: VAETransformer(
        n_components=2,
        hidden_layer_sizes=(64,),
        likelihood="bernoulli",
        objective=objective,
        max_iter=2 if quick else 20,
        n_iter_no_change=20,
        learning_rate_init=3e-3,
        random_state=0,
    ).fit(X_train)
    for objective in objectives
}

# %%
# Held-out log-likelihood
# -----------------------
# ``score_samples`` estimates log p(x) by importance sampling (higher is
# better); for AVB the proposal is the Gaussian with the moments of its
# implicit posterior. The importance-weighted bound is the tighter training
# objective, but how much any objective gains at equal epochs depends on the
# data and the training length: ``benchmarks/bench_objectives.py`` compares
# them on 10-D codes.
log_likelihoods = [models[name].score_samples(X_test).mean() for name in objectives]
fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(objectives, log_likelihoods, color="tab:blue")
ax.set(xlabel="held-out log p(x), nats per digit", xlim=(min(log_likelihoods) - 1, None))
ax.invert_yaxis()
plt.tight_layout()
plt.show()

# %%
# Information in the codes
# ------------------------
# The recorded ``mutual_information`` is an InfoNCE lower bound on I(x; z),
# in nats, on one fixed batch of training digits. The MINE term rewards the
# encoder for informative codes, so its curve ends highest.
fig, ax = plt.subplots(figsize=(6, 3.5))
for name in objectives:
    history = models[name].history_
    ax.plot(
        [record["epoch"] for record in history],
        [record["mutual_information"] for record in history],
        label=name,
    )
ax.set(xlabel="epoch", ylabel="I(x; z) estimate (nats)")
ax.legend()
plt.tight_layout()
plt.show()

# %%
# The codes of held-out digits
# ----------------------------
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, name in zip(axes, objectives):
    codes = models[name].transform(X_test)
    ax.scatter(codes[:, 0], codes[:, 1], c=y_test, cmap="tab10", s=6)
    ax.set(title=name, xticks=[], yticks=[])
plt.tight_layout()
plt.show()

print(
    "Held-out log p(x):",
    ", ".join(f"{name} {value:.2f}" for name, value in zip(objectives, log_likelihoods)),
)
print("Differences from the ELBO:", np.round(np.subtract(log_likelihoods, log_likelihoods[0]), 2))
