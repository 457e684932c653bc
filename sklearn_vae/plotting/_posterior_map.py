"""The seed's picture: the plane coloured by each component's responsibility."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._matplotlib import component_colors, figure_and_axes, scatter_by_component
from ._mixture import axis_labels, mixture_points, responsibilities

__all__ = ["PosteriorMapDisplay"]


class PosteriorMapDisplay:
    """Colour a 2-D plane by the posterior responsibility of each component.

    Every point of the plane gets the colour of each mixture component mixed in
    proportion to that component's responsibility there: pure colours where
    one component is certain, blends along the boundaries between clusters.
    Works for a mixture in a 2-D data space (:class:`EMGaussianMixture`) and
    for a mixture prior in a 2-D latent space (:class:`VariationalGMMPrior`
    with ``latent_dim=2``).

    Use :meth:`from_estimator` to create one; the constructor only stores what
    :meth:`plot` draws.

    Parameters
    ----------
    xx0 : ndarray of shape (grid_resolution, grid_resolution)
        First coordinate of the grid, as from :func:`numpy.meshgrid`.
    xx1 : ndarray of shape (grid_resolution, grid_resolution)
        Second coordinate of the grid.
    responsibilities : ndarray of shape (grid_resolution, grid_resolution, \
n_components)
        Posterior probability of each component at each grid point.
    points : ndarray of shape (n_samples, 2), default=None
        Points drawn over the map (the data, or its latent codes).
    labels : ndarray of shape (n_samples,), default=None
        Component of each point, which sets its colour.
    xlabel, ylabel : str, default=None
        Axis labels.

    Attributes
    ----------
    image_ : matplotlib AxesImage
        The coloured plane.
    scatter_ : matplotlib PathCollection or None
        The points, if any.
    ax_ : matplotlib Axes
        Axes with the map.
    figure_ : matplotlib Figure
        Figure containing the map.

    See Also
    --------
    MixtureEllipsesDisplay : The components as 1, 2 and 3 sigma ellipses.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from sklearn_vae import EMGaussianMixture
    >>> from sklearn_vae.plotting import PosteriorMapDisplay
    >>> X, _ = make_blobs(n_samples=200, centers=3, random_state=0)
    >>> gmm = EMGaussianMixture(n_components=3, random_state=0).fit(X)
    >>> display = PosteriorMapDisplay.from_estimator(gmm, X)
    >>> display.image_.get_array().shape
    (200, 200, 3)
    """

    def __init__(
        self,
        xx0: np.ndarray,
        xx1: np.ndarray,
        responsibilities: np.ndarray,
        *,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        xlabel: str | None = None,
        ylabel: str | None = None,
    ) -> None:
        self.xx0 = xx0
        self.xx1 = xx1
        self.responsibilities = responsibilities
        self.points = points
        self.labels = labels
        self.xlabel = xlabel
        self.ylabel = ylabel

    def plot(
        self, ax: Any = None, *, scatter_kwargs: dict[str, Any] | None = None
    ) -> PosteriorMapDisplay:
        """Draw the map.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure.
        scatter_kwargs : dict, default=None
            Passed to :meth:`matplotlib.axes.Axes.scatter` for the points.

        Returns
        -------
        display : PosteriorMapDisplay
            The object itself, with the drawn artists as attributes.
        """
        figure, ax = figure_and_axes(ax, type(self).__name__)
        colors = component_colors(self.responsibilities.shape[-1])[:, :3]
        # Mix the component colours by responsibility: the blend is the
        # posterior, and the boundaries show how uncertain it is there.
        rgb = np.clip(self.responsibilities @ colors, 0.0, 1.0)
        self.image_ = ax.imshow(
            rgb,
            origin="lower",
            extent=(
                self.xx0.min(),
                self.xx0.max(),
                self.xx1.min(),
                self.xx1.max(),
            ),
            aspect="auto",
            interpolation="bilinear",
            alpha=0.55,
        )
        self.scatter_ = scatter_by_component(
            ax,
            self.points,
            self.labels,
            colors,
            {"s": 8, "edgecolors": "black", "linewidths": 0.3},
            scatter_kwargs,
        )
        ax.set(xlabel=self.xlabel or "", ylabel=self.ylabel or "")
        self.ax_ = ax
        self.figure_ = figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any,
        *,
        grid_resolution: int = 200,
        margin: float = 0.1,
        show_points: bool = True,
        ax: Any = None,
        scatter_kwargs: dict[str, Any] | None = None,
    ) -> PosteriorMapDisplay:
        """Compute the posterior map of a fitted mixture and draw it.

        Parameters
        ----------
        estimator : fitted EMGaussianMixture or VariationalGMMPrior
            Its mixture must live in two dimensions: 2-D data for
            EMGaussianMixture, ``latent_dim=2`` for VariationalGMMPrior.
        X : array-like of shape (n_samples, n_features)
            Data whose points (or latent codes) set the extent of the plane
            and are drawn over it.
        grid_resolution : int, default=200
            Grid points along each axis.
        margin : float, default=0.1
            Extra room around the points, as a fraction of their range.
        show_points : bool, default=True
            Whether to draw the points, coloured by their most likely component.
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure.
        scatter_kwargs : dict, default=None
            Passed to :meth:`matplotlib.axes.Axes.scatter` for the points.

        Returns
        -------
        display : PosteriorMapDisplay

        Raises
        ------
        ValueError
            If the mixture does not live in two dimensions.
        """
        points = mixture_points(estimator, X)
        if points.shape[1] != 2:
            raise ValueError(
                "PosteriorMapDisplay needs a mixture over two dimensions; this "
                f"one has {points.shape[1]}. Fit on 2-D data, or use latent_dim=2."
            )
        low, high = points.min(axis=0), points.max(axis=0)
        pad = margin * np.where(high > low, high - low, 1.0)
        xx0, xx1 = np.meshgrid(
            np.linspace(low[0] - pad[0], high[0] + pad[0], grid_resolution),
            np.linspace(low[1] - pad[1], high[1] + pad[1], grid_resolution),
        )
        grid = np.column_stack([xx0.ravel(), xx1.ravel()])
        grid_responsibilities = responsibilities(estimator, grid).reshape(
            grid_resolution, grid_resolution, -1
        )
        xlabel, ylabel = axis_labels(estimator, (0, 1))
        display = cls(
            xx0,
            xx1,
            grid_responsibilities,
            points=points if show_points else None,
            labels=responsibilities(estimator, points).argmax(axis=1)
            if show_points
            else None,
            xlabel=xlabel,
            ylabel=ylabel,
        )
        return display.plot(ax=ax, scatter_kwargs=scatter_kwargs)
