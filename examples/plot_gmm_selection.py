"""
==============================================================
Choosing the number of components by BIC with GridSearchCV
==============================================================

Because :class:`~sklearn_vae.EMGaussianMixture` is a scikit-learn estimator,
:class:`~sklearn.model_selection.GridSearchCV` can choose its ``n_components``
and ``covariance_type``. Here the score is the negative Bayesian information
criterion (BIC), which rewards the likelihood and penalises the number of
parameters, as in scikit-learn's ``plot_gmm_selection``.
"""

# %%
# Data: a mixture of four elongated clusters
# ------------------------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_blobs
from sklearn.model_selection import GridSearchCV

from sklearn_vae import EMGaussianMixture
from sklearn_vae.plotting import MixtureEllipsesDisplay

X, _ = make_blobs(n_samples=600, centers=4, cluster_std=0.8, random_state=1)
X = X @ np.array([[0.6, -0.6], [-0.4, 0.8]])


def negative_bic(estimator, X, y=None):
    """GridSearchCV maximises its score, so the BIC is negated."""
    return -estimator.bic(X)


# %%
# Search the grid
# ---------------
search = GridSearchCV(
    EMGaussianMixture(random_state=0),
    param_grid={
        "n_components": range(1, 7),
        "covariance_type": ["spherical", "tied", "diag", "full"],
    },
    scoring=negative_bic,
    # SKLEARN_VAE_DOCS_QUICK=1 (the documentation's test build) uses fewer folds.
    cv=2 if os.environ.get("SKLEARN_VAE_DOCS_QUICK") == "1" else 3,
)
search.fit(X)
print("Best parameters:", search.best_params_)

# %%
# The BIC of every candidate
# --------------------------
# Lower is better. It falls steeply until the four clusters are covered and
# rises slowly afterwards, as every extra component costs parameters without
# adding much likelihood.
results = search.cv_results_
fig, ax = plt.subplots(figsize=(8, 4))
width = 0.2
for offset, covariance_type in enumerate(["spherical", "tied", "diag", "full"]):
    mask = results["param_covariance_type"] == covariance_type
    ax.bar(
        np.asarray(results["param_n_components"][mask], dtype=int)
        + (offset - 1.5) * width,
        -results["mean_test_score"][mask],
        width=width,
        label=covariance_type,
    )
bics = -results["mean_test_score"]
ax.set(
    xlabel="n_components",
    ylabel="BIC (mean over folds)",
    ylim=(0.95 * bics.min(), 1.02 * bics.max()),
)
ax.legend()
plt.show()

# %%
# The chosen model
# ----------------
MixtureEllipsesDisplay.from_estimator(search.best_estimator_, X)
plt.title(
    f"{search.best_params_['n_components']} components, "
    f"'{search.best_params_['covariance_type']}' covariance"
)
plt.show()
