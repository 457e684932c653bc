"""Starting points shared by the mixture tests."""

from sklearn.mixture import GaussianMixture


def sklearn_initialisation(X, n_components, covariance_type):
    """scikit-learn's k-means start, as ``*_init`` parameters.

    Fitting ours and scikit-learn's from it compares the EM iterations alone.
    """
    start = GaussianMixture(
        n_components, covariance_type=covariance_type, max_iter=0, random_state=0
    ).fit(X)
    return dict(
        weights_init=start.weights_,
        means_init=start.means_,
        precisions_init=start.precisions_,
    )
