"""A grid of samples drawn from a fitted generative model."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._matplotlib import figure_and_axes

__all__ = ["GeneratedSamplesDisplay"]


def _square_side(n_features: int) -> int | None:
    side = math.isqrt(n_features)
    return side if side * side == n_features else None


class GeneratedSamplesDisplay:
    """Show samples of a generative model as a grid, one row per component.

    When the features form a square image (64 features: 8 x 8 digits) or
    ``image_shape`` says how, every sample is drawn as a small image. Otherwise
    each row of the grid is a heat map whose lines are samples and whose
    columns are features.

    Use :meth:`from_estimator` to create one; the constructor only stores what
    :meth:`plot` draws.

    Parameters
    ----------
    samples : ndarray of shape (n_rows, n_per_row, n_features)
        The samples, grouped by row.
    image_shape : tuple of two int, default=None
        ``(height, width)`` with ``height * width == n_features`` to draw each
        sample as an image; ``None`` draws heat maps.
    row_labels : sequence of str, default=None
        A label for each row, such as its component.

    Attributes
    ----------
    image_ : matplotlib AxesImage
        The whole grid, drawn as one image.
    ax_ : matplotlib Axes
        Axes with the grid.
    figure_ : matplotlib Figure
        Figure containing the grid.

    See Also
    --------
    LatentSpaceDisplay : Where the samples come from, in the latent space.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_vae import EMGaussianMixture
    >>> from sklearn_vae.plotting import GeneratedSamplesDisplay
    >>> X, _ = load_digits(return_X_y=True)
    >>> gmm = EMGaussianMixture(n_components=3, covariance_type="diag",
    ...                         random_state=0).fit(X)
    >>> display = GeneratedSamplesDisplay.from_estimator(gmm, n_samples=5)
    >>> display.samples.shape
    (4, 5, 64)
    """

    def __init__(
        self,
        samples: np.ndarray,
        *,
        image_shape: tuple[int, int] | None = None,
        row_labels: Sequence[str] | None = None,
    ) -> None:
        self.samples = samples
        self.image_shape = image_shape
        self.row_labels = row_labels

    def plot(
        self, ax: Any = None, *, imshow_kwargs: dict[str, Any] | None = None
    ) -> GeneratedSamplesDisplay:
        """Draw the grid.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure.
        imshow_kwargs : dict, default=None
            Passed to :meth:`matplotlib.axes.Axes.imshow`.

        Returns
        -------
        display : GeneratedSamplesDisplay
            The object itself, with the drawn artists as attributes.
        """
        from matplotlib import colormaps

        figure, ax = figure_and_axes(ax, type(self).__name__)
        n_rows, n_per_row, n_features = self.samples.shape
        if self.image_shape is None:
            # One heat map per row: its lines are the samples of that row.
            tiles = self.samples[:, np.newaxis]
            colormap = "viridis"
        else:
            tiles = self.samples.reshape(n_rows, n_per_row, *self.image_shape)
            colormap = "gray_r"
        kwargs = {
            "cmap": colormaps[colormap].with_extremes(bad="white"),
            "interpolation": "nearest",
            "aspect": "equal" if self.image_shape is not None else "auto",
        }
        kwargs.update(imshow_kwargs or {})
        mosaic, row_centres = _mosaic(tiles)
        self.image_ = ax.imshow(mosaic, **kwargs)
        ax.set_xticks([])
        if self.row_labels is None:
            ax.set_yticks([])
        else:
            ax.set_yticks(row_centres, labels=list(self.row_labels))
        for spine in ax.spines.values():
            spine.set_visible(False)
        self.ax_ = ax
        self.figure_ = figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        *,
        n_samples: int = 10,
        n_rows: int = 4,
        image_shape: tuple[int, int] | None = None,
        ax: Any = None,
        imshow_kwargs: dict[str, Any] | None = None,
    ) -> GeneratedSamplesDisplay:
        """Draw samples from a fitted generative model and show them.

        Parameters
        ----------
        estimator : fitted estimator with a ``sample`` method
            An estimator whose ``sample`` takes a ``component`` (such as
            VariationalGMMPrior) gets one row per mixture component;
            any other (VAETransformer, EMGaussianMixture) gets ``n_rows``
            rows of independent samples.
        n_samples : int, default=10
            Samples per row.
        n_rows : int, default=4
            Rows, for estimators that cannot sample a given component.
        image_shape : tuple of two int, default=None
            ``(height, width)`` of the images the features form; ``None``
            draws square images when the number of features is a perfect
            square and heat maps otherwise.
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure.
        imshow_kwargs : dict, default=None
            Passed to :meth:`matplotlib.axes.Axes.imshow`.

        Returns
        -------
        display : GeneratedSamplesDisplay
        """
        if "component" in inspect.signature(estimator.sample).parameters:
            n_components = len(estimator.weights_)
            samples = np.stack(
                [
                    _sampled_features(estimator.sample(n_samples, component=k))
                    for k in range(n_components)
                ]
            )
            row_labels = [f"component {k}" for k in range(n_components)]
        else:
            drawn = _sampled_features(estimator.sample(n_samples * n_rows))
            # Mixtures return samples sorted by component; filling the grid row
            # by row keeps each component's samples together.
            samples = drawn.reshape(n_rows, n_samples, -1)
            row_labels = None
        n_features = samples.shape[-1]
        if image_shape is None:
            side = _square_side(n_features)
            image_shape = None if side is None else (side, side)
        elif math.prod(image_shape) != n_features:
            raise ValueError(
                f"image_shape={tuple(image_shape)} holds {math.prod(image_shape)} "
                f"values but the samples have {n_features} features."
            )
        display = cls(samples, image_shape=image_shape, row_labels=row_labels)
        return display.plot(ax=ax, imshow_kwargs=imshow_kwargs)


def _sampled_features(result: Any) -> np.ndarray:
    # Mixtures return (X, component labels); autoencoders return X alone.
    return np.asarray(result[0] if isinstance(result, tuple) else result, dtype=float)


def _mosaic(tiles: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Lay out a (rows, columns, height, width) array of tiles as one image.

    Tiles are separated by a line of NaN, which the colour map draws blank.
    Also returns the vertical centre of each row, for its tick label.
    """
    n_rows, n_columns, height, width = tiles.shape
    mosaic = np.full((n_rows * (height + 1) - 1, n_columns * (width + 1) - 1), np.nan)
    for row in range(n_rows):
        for column in range(n_columns):
            top, left = row * (height + 1), column * (width + 1)
            mosaic[top : top + height, left : left + width] = tiles[row, column]
    return mosaic, [row * (height + 1) + (height - 1) / 2 for row in range(n_rows)]
