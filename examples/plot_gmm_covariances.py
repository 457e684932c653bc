"""
=========================================
Gaussian mixture covariance types
=========================================

:class:`~sklearn_vae.EMGaussianMixture` constrains each component's covariance
in four ways (``covariance_type``): its own full matrix, one matrix shared by
all components, a diagonal matrix, or a single variance. This example fits all
four to the iris measurements, initialised from the class means as in
scikit-learn's own ``plot_gmm_covariances``, and draws each component at 1, 2
and 3 standard deviations with
:class:`~sklearn_vae.plotting.MixtureEllipsesDisplay`.
"""

# %%
# Fit one mixture per covariance type
# -----------------------------------
#
# Half of the iris flowers train the mixtures, the other half test them. The
# means start at each species' mean, so that component ``k`` models species
# ``k`` and the accuracy of ``predict`` can be read directly.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_iris
from sklearn.model_selection import StratifiedKFold

from sklearn_vae import EMGaussianMixture
from sklearn_vae.plotting import MixtureEllipsesDisplay

iris = load_iris()
train_index, test_index = next(
    iter(StratifiedKFold(n_splits=4).split(iris.data, iris.target))
)
X_train, y_train = iris.data[train_index], iris.target[train_index]
X_test, y_test = iris.data[test_index], iris.target[test_index]
class_means = np.array([X_train[y_train == k].mean(axis=0) for k in range(3)])

fig, axes = plt.subplots(
    2, 2, figsize=(9, 8), sharex=True, sharey=True, layout="constrained"
)
for ax, covariance_type in zip(axes.ravel(), ["spherical", "diag", "tied", "full"]):
    gmm = EMGaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        means_init=class_means,
        max_iter=20,
        random_state=0,
    ).fit(X_train)
    MixtureEllipsesDisplay.from_estimator(gmm, X_train, dimensions=(0, 1), ax=ax)
    ax.scatter(*X_test[:, :2].T, marker="x", color="black", s=15, label="test")
    train_accuracy = np.mean(gmm.predict(X_train) == y_train)
    test_accuracy = np.mean(gmm.predict(X_test) == y_test)
    ax.set_title(
        f"{covariance_type}: train accuracy {train_accuracy:.2f}, "
        f"test {test_accuracy:.2f}"
    )
    ax.set(xlabel=iris.feature_names[0], ylabel=iris.feature_names[1])
axes[0, 0].legend(loc="lower right")
plt.show()

# %%
# 'spherical' draws circles, 'diag' axis-aligned ellipses, 'tied' the same
# ellipse for every component and 'full' any ellipse. The ellipses are the
# projections on the first two features of four-dimensional Gaussians, so
# points may sit outside them and still belong to them. The most constrained
# models need fewest parameters; 'full' fits best but needs the most data.
