"""
====================================================
VAE features in a classification pipeline
====================================================

:class:`~sklearn_vae.VAETransformer` is a scikit-learn transformer, so its
codes feed any classifier inside a :class:`~sklearn.pipeline.Pipeline`, and the
whole pipeline is cross-validated in one call. This example compares logistic
regression on the raw pixels, on PCA features and on VAE features of the same
size.
"""

# %%
# Three pipelines
# ---------------
# ``SKLEARN_VAE_DOCS_QUICK=1`` (set by the documentation's test build) trains
# for a few epochs only.
import os

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from sklearn_vae import VAETransformer

quick = os.environ.get("SKLEARN_VAE_DOCS_QUICK") == "1"
X, y = load_digits(return_X_y=True)
n_features = 8

pipelines = {
    "raw pixels": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    f"PCA ({n_features})": make_pipeline(
        StandardScaler(), PCA(n_features), LogisticRegression(max_iter=2000)
    ),
    f"VAE ({n_features})": make_pipeline(
        MinMaxScaler(),
        VAETransformer(
            n_components=n_features,
            likelihood="bernoulli",
            max_iter=2 if quick else 60,
            random_state=0,
        ),
        StandardScaler(),
        LogisticRegression(max_iter=2000),
    ),
}

# %%
# Cross-validate
# --------------
# The VAE is refitted inside each fold, on that fold's training part only.
cv = 2 if quick else 5
accuracies = {
    name: cross_val_score(pipeline, X, y, cv=cv) for name, pipeline in pipelines.items()
}
for name, scores in accuracies.items():
    print(f"{name:>12}: accuracy {scores.mean():.3f} +- {scores.std():.3f}")

fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(
    list(accuracies),
    [scores.mean() for scores in accuracies.values()],
    xerr=[scores.std() for scores in accuracies.values()],
)
ax.set(xlabel=f"accuracy ({cv}-fold cross-validation)", xlim=(0.5, 1.0))
plt.show()

# %%
# The VAE's eight features are learned without the labels, like PCA's; how
# close their accuracy comes to the raw pixels' shows how much of the class
# information the unsupervised code keeps. Unlike PCA, the same fitted step
# also gives a likelihood for every image (``score_samples``) and new images
# (``sample``).
