"""
==========================================
The latent space of a VAE on digits
==========================================

A :class:`~sklearn_vae.VAETransformer` with two latent dimensions compresses
each 8 x 8 digit into a point of the plane. Nothing tells it which digit is
which, yet similar digits land close together. This example draws the codes
coloured by digit, the training curves, and digits decoded from the prior.
"""

# %%
# Fit the VAE
# -----------
# Pixels are scaled to [0, 1] and modelled as Bernoulli probabilities.
# ``SKLEARN_VAE_DOCS_QUICK=1`` (set by the documentation's test build) trains
# for a few epochs only.
import os

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

from sklearn_vae import VAETransformer
from sklearn_vae.plotting import (
    GeneratedSamplesDisplay,
    LatentSpaceDisplay,
    TrainingCurvesDisplay,
)

quick = os.environ.get("SKLEARN_VAE_DOCS_QUICK") == "1"
X, y = load_digits(return_X_y=True)
X = X / 16.0
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)

vae = VAETransformer(
    n_components=2,
    likelihood="bernoulli",
    kl_warmup=10,
    max_iter=2 if quick else 100,
    early_stopping=not quick,
    random_state=0,
)
vae.fit(X_train)

# %%
# Codes of held-out digits
# ------------------------
# A k-nearest-neighbour classifier on the 2-D codes measures how well they
# separate the classes (chance is 0.1).
codes_train, codes_test = vae.transform(X_train), vae.transform(X_test)
knn = KNeighborsClassifier().fit(codes_train, y_train)
print(f"k-NN accuracy on the 2-D codes: {knn.score(codes_test, y_test):.3f}")

LatentSpaceDisplay.from_estimator(vae, X_test, y_test)
plt.title("Held-out digits in the VAE's latent plane")
plt.show()

# %%
# Training curves
# ---------------
# The loss is the negative ELBO per sample: reconstruction plus KL term. The
# dashed line is the loss on the held-out validation split.
TrainingCurvesDisplay.from_estimator(vae)
plt.show()

# %%
# Digits from the prior
# ---------------------
# Codes drawn from the standard normal prior and decoded.
GeneratedSamplesDisplay.from_estimator(vae, n_samples=12, n_rows=5)
plt.title("Decoded samples of the prior")
plt.show()
