"""
=====================================
The posterior map in two dimensions
=====================================

The picture this project grew from: colour every point of a plane by the
posterior probability of each mixture component there. Each point mixes the
components' colours in proportion to their responsibilities

.. math:: r_k(z) = \\frac{\\pi_k \\mathcal{N}(z \\mid \\mu_k, \\Sigma_k)}
                        {\\sum_j \\pi_j \\mathcal{N}(z \\mid \\mu_j, \\Sigma_j)},

so pure colours show confident regions and blends the uncertain boundaries.
:class:`~sklearn_vae.plotting.PosteriorMapDisplay` draws it for a mixture on
2-D data and for the mixture prior of a VaDE with a 2-D latent space.
"""

# %%
# A mixture on 2-D data
# ---------------------
# Six Gaussian components cover the two half-moons.
import os

import matplotlib.pyplot as plt
from sklearn.datasets import load_wine, make_moons
from sklearn.preprocessing import StandardScaler

from sklearn_vae import EMGaussianMixture, VariationalGMMPrior
from sklearn_vae.metrics import clustering_accuracy
from sklearn_vae.plotting import MixtureEllipsesDisplay, PosteriorMapDisplay

X, _ = make_moons(n_samples=500, noise=0.08, random_state=0)
gmm = EMGaussianMixture(n_components=6, random_state=0).fit(X)

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
PosteriorMapDisplay.from_estimator(gmm, X, ax=left)
left.set_title("posterior responsibilities")
MixtureEllipsesDisplay.from_estimator(gmm, X, ax=right)
right.set_title("components at 1, 2 and 3 sigma")
plt.show()

# %%
# A mixture prior in a 2-D latent space
# -------------------------------------
# A :class:`~sklearn_vae.VariationalGMMPrior` with ``latent_dim=2`` clusters the
# 13 standardised measurements of the wine data set into three clusters. Its
# map lives in the latent plane: the points are the encoded wines, the colours
# the posterior of the learned prior. ``SKLEARN_VAE_DOCS_QUICK=1`` (set by the
# documentation's test build) trains for a few epochs only.
quick = os.environ.get("SKLEARN_VAE_DOCS_QUICK") == "1"
wine = load_wine()
X_wine = StandardScaler().fit_transform(wine.data)
vade = VariationalGMMPrior(
    n_components=3,
    latent_dim=2,
    hidden_layer_sizes=(64, 32),
    n_neighbors=10,
    pretrain_epochs=3 if quick else 100,
    max_iter=2 if quick else 100,
    batch_size=32,
    random_state=0,
).fit(X_wine)
accuracy = clustering_accuracy(wine.target, vade.predict(X_wine))
print(f"Clustering accuracy against the three cultivars: {accuracy:.3f}")

PosteriorMapDisplay.from_estimator(vade, X_wine)
plt.title("VariationalGMMPrior: posterior of the prior over the latent plane")
plt.show()
