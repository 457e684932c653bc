"""The Display objects: rendered with Agg, checked by their artists."""

import matplotlib
import numpy as np
import pytest
from sklearn.datasets import load_digits, make_blobs
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from sklearn_vae.plotting import (
    GeneratedSamplesDisplay,
    LatentSpaceDisplay,
    MixtureEllipsesDisplay,
    PosteriorMapDisplay,
    TrainingCurvesDisplay,
)
from sklearn_vae.plotting._mixture import full_covariances, responsibilities

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=150, centers=3, random_state=0)
    return X, y


def fit_mixture(X, covariance_type="full", n_components=3):
    return GaussianMixture(
        n_components=n_components, covariance_type=covariance_type, random_state=0
    ).fit(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_full_covariances_match_the_mixtures_own_densities(blobs, covariance_type):
    X, _ = blobs
    gmm = fit_mixture(X, covariance_type)
    assert full_covariances(gmm).shape == (3, 2, 2)
    np.testing.assert_allclose(
        responsibilities(gmm, X), gmm.predict_proba(X), atol=1e-8
    )


def test_posterior_map_colours_the_plane_by_responsibility(blobs):
    X, _ = blobs
    gmm = fit_mixture(X)
    display = PosteriorMapDisplay.from_estimator(gmm, X, grid_resolution=30)
    assert display.responsibilities.shape == (30, 30, 3)
    np.testing.assert_allclose(display.responsibilities.sum(axis=-1), 1.0)
    assert display.image_.get_array().shape == (30, 30, 3)
    assert display.scatter_.get_offsets().shape == (150, 2)
    assert display.ax_.get_xlabel() == "feature 1"
    assert display.figure_ is display.ax_.figure
    # The data's extent, plus the margin, is covered by the image.
    left, right, bottom, top = display.image_.get_extent()
    assert left < X[:, 0].min() and right > X[:, 0].max()
    assert bottom < X[:, 1].min() and top > X[:, 1].max()


def test_posterior_map_draws_on_given_axes_without_points(blobs):
    X, _ = blobs
    _, ax = plt.subplots()
    display = PosteriorMapDisplay.from_estimator(
        fit_mixture(X), X, grid_resolution=10, show_points=False, ax=ax
    )
    assert display.ax_ is ax
    assert display.scatter_ is None
    assert len(ax.images) == 1


def test_posterior_map_needs_two_dimensions():
    X, _ = make_blobs(n_samples=60, n_features=3, random_state=0)
    with pytest.raises(ValueError, match="two dimensions; this one has 3"):
        PosteriorMapDisplay.from_estimator(fit_mixture(X), X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_ellipses_for_every_covariance_type(blobs, covariance_type):
    X, _ = blobs
    gmm = fit_mixture(X, covariance_type)
    display = MixtureEllipsesDisplay.from_estimator(gmm, X)
    assert [len(row) for row in display.ellipses_] == [3, 3, 3]
    assert len(display.ax_.patches) == 9
    one_sigma, _, three_sigma = display.ellipses_[0]
    np.testing.assert_allclose(three_sigma.width, 3 * one_sigma.width)
    np.testing.assert_allclose(one_sigma.center, gmm.means_[0])
    # The 1-sigma ellipse's axes are twice the standard deviations along the
    # covariance's principal directions.
    variances = np.linalg.eigvalsh(full_covariances(gmm)[0])
    np.testing.assert_allclose(
        sorted([one_sigma.width, one_sigma.height]), 2 * np.sqrt(variances)
    )
    if covariance_type == "spherical":
        np.testing.assert_allclose(one_sigma.width, one_sigma.height)


def test_ellipses_alone_on_chosen_dimensions():
    X, _ = make_blobs(n_samples=90, n_features=3, random_state=0)
    gmm = fit_mixture(X, "diag")
    display = MixtureEllipsesDisplay.from_estimator(gmm, dimensions=(0, 2), n_std=(2,))
    assert display.scatter_ is None
    assert [len(row) for row in display.ellipses_] == [1, 1, 1]
    np.testing.assert_allclose(display.ellipses_[1][0].center, gmm.means_[1, [0, 2]])
    assert display.ax_.get_ylabel() == "feature 3"


def test_ellipses_use_feature_names(blobs):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(blobs[0], columns=["width", "height"])
    display = MixtureEllipsesDisplay.from_estimator(fit_mixture(X), X)
    assert (display.ax_.get_xlabel(), display.ax_.get_ylabel()) == ("width", "height")


def test_latent_space_projects_larger_codes_and_labels_them():
    X, y = load_digits(return_X_y=True)
    display = LatentSpaceDisplay.from_estimator(PCA(5).fit(X), X, y)
    assert display.codes.shape == (len(X), 2)
    assert display.scatter_.get_offsets().shape == (len(X), 2)
    assert [text.get_text() for text in display.legend_.get_texts()] == [
        str(label) for label in range(10)
    ]
    assert display.ax_.get_xlabel() == "latent principal component 1"


def test_latent_space_of_two_dimensional_codes_without_labels():
    X, _ = load_digits(return_X_y=True)
    display = LatentSpaceDisplay.from_estimator(PCA(2).fit(X), X)
    assert display.legend_ is None
    assert display.ax_.get_xlabel() == "latent dimension 1"


def test_latent_space_needs_two_dimensions():
    X, _ = load_digits(return_X_y=True)
    with pytest.raises(ValueError, match="at least two dimensions"):
        LatentSpaceDisplay.from_estimator(PCA(1).fit(X), X)


def test_samples_of_square_features_are_images():
    X, _ = load_digits(return_X_y=True)
    gmm = fit_mixture(X, "diag", n_components=2)
    display = GeneratedSamplesDisplay.from_estimator(gmm, n_samples=5, n_rows=3)
    assert display.samples.shape == (3, 5, 64)
    assert display.image_shape == (8, 8)
    # Three rows of five 8 x 8 tiles, one blank line between tiles.
    assert display.image_.get_array().shape == (3 * 9 - 1, 5 * 9 - 1)
    assert display.row_labels is None


def test_samples_of_other_features_are_heat_maps(blobs):
    X, _ = blobs
    display = GeneratedSamplesDisplay.from_estimator(fit_mixture(X), n_samples=4)
    assert display.image_shape is None
    assert display.image_.get_array().shape == (4 * 5 - 1, 2)


def test_samples_image_shape_must_hold_the_features(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match=r"image_shape=\(3, 3\) holds 9 values"):
        GeneratedSamplesDisplay.from_estimator(fit_mixture(X), image_shape=(3, 3))


def test_samples_plot_labels_rows():
    samples = np.random.default_rng(0).random((2, 3, 4))
    display = GeneratedSamplesDisplay(
        samples, image_shape=(2, 2), row_labels=["a", "b"]
    ).plot()
    assert [t.get_text() for t in display.ax_.get_yticklabels()] == ["a", "b"]
    np.testing.assert_allclose(display.ax_.get_yticks(), [0.5, 3.5])


def test_training_curves_plot_every_numeric_entry():
    history = [
        {"epoch": 1, "loss": 3.0, "kl": 1.0, "time": 0.1, "note": "start"},
        {"epoch": 2, "loss": 2.0, "kl": 0.5, "val_loss": 2.5, "learning_rate": 0.1},
    ]
    display = TrainingCurvesDisplay.from_estimator(_Fitted(history_=history))
    assert list(display.lines_) == ["loss", "kl", "val_loss"]
    np.testing.assert_array_equal(display.lines_["loss"].get_ydata(), [3.0, 2.0])
    np.testing.assert_array_equal(display.lines_["val_loss"].get_ydata(), [np.nan, 2.5])
    assert display.lines_["val_loss"].get_linestyle() == "--"
    assert display.lines_["val_loss"].get_color() == display.lines_["loss"].get_color()
    assert display.lines_["kl"].get_color() != display.lines_["loss"].get_color()
    assert display.ax_.get_xlabel() == "epoch"


def test_training_curves_of_an_em_fit(blobs):
    X, _ = blobs
    gmm = GaussianMixture(2, random_state=0).fit(X)
    gmm.lower_bounds_ = [-3.0, -2.5, -2.4]
    display = TrainingCurvesDisplay.from_estimator(gmm)
    np.testing.assert_array_equal(display.lines_["lower bound"].get_xdata(), [1, 2, 3])


def test_training_curves_need_a_history(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="records no training history"):
        TrainingCurvesDisplay.from_estimator(PCA(1).fit(X))


def test_missing_matplotlib_says_how_to_install_it(monkeypatch, blobs):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.pyplot", None)
    X, _ = blobs
    with pytest.raises(ImportError, match=r"pip install 'sklearn-vae\[plot\]'"):
        PosteriorMapDisplay.from_estimator(fit_mixture(X), X, grid_resolution=5)


class _Fitted:
    """A fitted estimator reduced to its recorded history."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


@pytest.fixture(scope="module")
def vade_2d():
    from sklearn_vae import VariationalGMMPrior

    X, y = make_blobs(n_samples=120, n_features=6, centers=3, random_state=0)
    vade = VariationalGMMPrior(
        n_components=3,
        latent_dim=2,
        hidden_layer_sizes=(16,),
        n_neighbors=5,
        pretrain_epochs=2,
        max_iter=2,
        n_init=1,
        random_state=0,
    )
    with pytest.warns(ConvergenceWarning):  # two epochs are enough for plots
        vade.fit(X)
    return vade, X, y


def test_posterior_map_of_a_latent_mixture_prior(vade_2d):
    vade, X, _ = vade_2d
    display = PosteriorMapDisplay.from_estimator(vade, X, grid_resolution=20)
    np.testing.assert_allclose(display.points, vade.transform(X))
    # The points are coloured by the prior's posterior at their codes, which is
    # the estimator's own cluster posterior at the posterior mean.
    np.testing.assert_array_equal(display.labels, vade.predict(X))
    assert display.ax_.get_xlabel() == "latent dimension 1"


def test_ellipses_of_a_latent_mixture_prior(vade_2d):
    vade, X, _ = vade_2d
    display = MixtureEllipsesDisplay.from_estimator(vade, X)
    assert len(display.ellipses_) == 3
    np.testing.assert_allclose(display.ellipses_[2][0].center, vade.means_[2])


def test_latent_space_coloured_by_clusters_without_labels(vade_2d):
    vade, X, _ = vade_2d
    display = LatentSpaceDisplay.from_estimator(vade, X)
    np.testing.assert_array_equal(display.labels, vade.predict(X))


def test_samples_of_a_mixture_prior_come_one_row_per_component(vade_2d):
    vade, _, _ = vade_2d
    display = GeneratedSamplesDisplay.from_estimator(vade, n_samples=3)
    assert display.samples.shape == (3, 3, 6)
    assert [t.get_text() for t in display.ax_.get_yticklabels()] == [
        "component 0",
        "component 1",
        "component 2",
    ]


def test_training_curves_of_a_neural_estimator(vade_2d):
    vade, _, _ = vade_2d
    display = TrainingCurvesDisplay.from_estimator(vade)
    assert "loss" in display.lines_
    assert "learning_rate" not in display.lines_
    assert len(display.lines_["loss"].get_xdata()) == len(vade.history_)
