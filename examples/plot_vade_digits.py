"""
=========================================================
Deep clustering of digits with VariationalGMMPrior
=========================================================

:class:`~sklearn_vae.VariationalGMMPrior` learns a VAE whose latent prior is a
Gaussian mixture (VaDE), so that every cluster of the data becomes a component
of the prior. This example clusters the 8 x 8 digits without their labels,
compares the clusters with the classes and with KMeans, and draws new digits
from each cluster.
"""

# %%
# Fit the models
# --------------
# ``SKLEARN_VAE_DOCS_QUICK=1`` (set by the documentation's test build) trains
# for a few epochs only.
import os
import time

import matplotlib.pyplot as plt
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.metrics import normalized_mutual_info_score

from sklearn_vae import VariationalGMMPrior
from sklearn_vae.metrics import clustering_accuracy
from sklearn_vae.plotting import GeneratedSamplesDisplay, LatentSpaceDisplay

quick = os.environ.get("SKLEARN_VAE_DOCS_QUICK") == "1"
X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype("float32")

# The defaults are the robust recipe; the quick build only shortens training.
short_training = {"pretrain_epochs": 2, "max_iter": 1, "n_init": 1} if quick else {}
started = time.perf_counter()
vade = VariationalGMMPrior(
    n_components=10, likelihood="bernoulli", random_state=0, **short_training
)
clusters = vade.fit_predict(X)
vade_seconds = time.perf_counter() - started
kmeans = KMeans(n_clusters=10, n_init=10, random_state=0).fit_predict(X)

for name, labels, seconds in [
    ("VariationalGMMPrior", clusters, vade_seconds),
    ("KMeans", kmeans, None),
]:
    print(
        f"{name:>20}: accuracy {clustering_accuracy(y, labels):.3f}, "
        f"NMI {normalized_mutual_info_score(y, labels):.3f}"
        + (f", {seconds:.1f} s" if seconds else "")
    )

# %%
# The latent space
# ----------------
# The 10-D latent means, projected on their first two principal components,
# coloured by the true digit (left) and by the cluster found (right).
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
LatentSpaceDisplay.from_estimator(vade, X, y, ax=left)
left.set_title("coloured by digit")
LatentSpaceDisplay.from_estimator(vade, X, ax=right)
right.set_title("coloured by cluster")
plt.show()

# %%
# New digits from each cluster
# ----------------------------
# ``sample(n, component=k)`` draws codes from the prior's component ``k`` and
# decodes them: each row shows what the model believes cluster ``k`` looks like.
GeneratedSamplesDisplay.from_estimator(vade, n_samples=10)
plt.title("Generated digits, one row per cluster")
plt.show()
