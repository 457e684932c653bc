"""
===============================================
Anomaly detection with ``score_samples``
===============================================

A density model flags as anomalies the rows it finds unlikely. Both
:class:`~sklearn_vae.VAETransformer` (an importance-sampled log-likelihood)
and :class:`~sklearn_vae.EMGaussianMixture` (the exact mixture log-likelihood)
give one per row through ``score_samples``. Here they are trained on digits and
asked to tell held-out digits from digits turned upside down: the same strokes
in unusual places. Some digits (0, 1, 8) look much the same either way, so no
model can catch them all.
"""

# %%
# Normal and anomalous images
# ---------------------------
# ``SKLEARN_VAE_DOCS_QUICK=1`` (set by the documentation's test build) trains
# for a few epochs only.
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from sklearn_vae import EMGaussianMixture, VAETransformer
from sklearn_vae.plotting import GeneratedSamplesDisplay

quick = os.environ.get("SKLEARN_VAE_DOCS_QUICK") == "1"
X, _ = load_digits(return_X_y=True)
X = X / 16.0
X_train, X_test = train_test_split(X, test_size=300, random_state=0)
X_anomalies = X_test[:100].reshape(-1, 8, 8)[:, ::-1].reshape(-1, 64)
X_eval = np.vstack([X_test, X_anomalies])
is_anomaly = np.r_[np.zeros(len(X_test)), np.ones(len(X_anomalies))]

# %%
# Fit and score
# -------------
# A low log-likelihood means an anomaly, so the anomaly score is its negative.
vae = VAETransformer(
    n_components=8,
    likelihood="bernoulli",
    max_iter=2 if quick else 100,
    early_stopping=not quick,
    n_importance_samples=10 if quick else 100,
    random_state=0,
).fit(X_train)
gmm = EMGaussianMixture(n_components=10, covariance_type="diag", random_state=0).fit(
    X_train
)

scores = {
    "VAETransformer": vae.score_samples(X_eval),
    "EMGaussianMixture": gmm.score_samples(X_eval),
}
for name, log_likelihood in scores.items():
    print(f"{name:>18}: ROC AUC {roc_auc_score(is_anomaly, -log_likelihood):.3f}")

# %%
# Log-likelihoods of normal and upside-down images
# ------------------------------------------------
fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for ax, (name, log_likelihood) in zip(axes, scores.items()):
    bins = np.histogram_bin_edges(log_likelihood, bins=40)
    ax.hist(
        log_likelihood[is_anomaly == 0], bins=bins, alpha=0.7, label="held-out digits"
    )
    ax.hist(log_likelihood[is_anomaly == 1], bins=bins, alpha=0.7, label="upside down")
    ax.set(title=name, xlabel="log-likelihood per image (nats)", ylabel="images")
    ax.legend()
plt.show()

# %%
# The least likely held-out digits
# --------------------------------
# Among the real digits, the VAE's least likely ones are the oddly written.
least_likely = np.argsort(scores["VAETransformer"][: len(X_test)])[:10]
fig, ax = plt.subplots(figsize=(8, 1.6))
GeneratedSamplesDisplay(X_test[least_likely][np.newaxis], image_shape=(8, 8)).plot(
    ax=ax
)
ax.set_title("The 10 least likely held-out digits under the VAE")
plt.show()
