"""Gaussian mixture components drawn as 1, 2 and 3 sigma ellipses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._matplotlib import component_colors, figure_and_axes, scatter_by_component
from ._mixture import axis_labels, full_covariances, mixture_points, responsibilities

__all__ = ["MixtureEllipsesDisplay"]


class MixtureEllipsesDisplay:
    """Draw each mixture component as ellipses of constant Mahalanobis distance.

    The ellipse at ``n`` sigma is the set of points at Mahalanobis distance
    ``n`` from the component's mean, projected on two chosen dimensions. It
    shows all four covariance types: free ellipses ('full'), one shared shape
    ('tied'), axis-aligned ellipses ('diag') and circles ('spherical').

    Use :meth:`from_estimator` to create one; the constructor only stores what
    :meth:`plot` draws.

    Parameters
    ----------
    means : ndarray of shape (n_components, 2)
        Component means on the two plotted dimensions.
    covariances : ndarray of shape (n_components, 2, 2)
        Component covariances on the two plotted dimensions.
    weights : ndarray of shape (n_components,)
        Mixture weights; the ellipses' opacity grows with them.
    n_std : sequence of float, default=(1, 2, 3)
        Mahalanobis radii of the ellipses drawn for each component.
    points : ndarray of shape (n_samples, 2), default=None
        Points drawn under the ellipses.
    labels : ndarray of shape (n_samples,), default=None
        Component of each point, which sets its colour.
    xlabel, ylabel : str, default=None
        Axis labels.

    Attributes
    ----------
    ellipses_ : list of list of matplotlib Ellipse
        ``ellipses_[k][i]`` is component ``k``'s ellipse at ``n_std[i]``.
    scatter_ : matplotlib PathCollection or None
        The points, if any.
    ax_ : matplotlib Axes
        Axes with the ellipses.
    figure_ : matplotlib Figure
        Figure containing the ellipses.

    See Also
    --------
    PosteriorMapDisplay : The plane coloured by each component's posterior.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn_vae import EMGaussianMixture
    >>> from sklearn_vae.plotting import MixtureEllipsesDisplay
    >>> X = load_iris().data[:, :2]
    >>> gmm = EMGaussianMixture(n_components=3, covariance_type="diag",
    ...                         random_state=0).fit(X)
    >>> display = MixtureEllipsesDisplay.from_estimator(gmm, X)
    >>> len(display.ellipses_), len(display.ellipses_[0])
    (3, 3)
    """

    def __init__(
        self,
        means: np.ndarray,
        covariances: np.ndarray,
        weights: np.ndarray,
        *,
        n_std: Sequence[float] = (1, 2, 3),
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        xlabel: str | None = None,
        ylabel: str | None = None,
    ) -> None:
        self.means = means
        self.covariances = covariances
        self.weights = weights
        self.n_std = n_std
        self.points = points
        self.labels = labels
        self.xlabel = xlabel
        self.ylabel = ylabel

    def plot(
        self, ax: Any = None, *, scatter_kwargs: dict[str, Any] | None = None
    ) -> MixtureEllipsesDisplay:
        """Draw the ellipses (and the points, if any).

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure.
        scatter_kwargs : dict, default=None
            Passed to :meth:`matplotlib.axes.Axes.scatter` for the points.

        Returns
        -------
        display : MixtureEllipsesDisplay
            The object itself, with the drawn artists as attributes.
        """
        from matplotlib.patches import Ellipse

        figure, ax = figure_and_axes(ax, type(self).__name__)
        colors = component_colors(len(self.means))
        self.scatter_ = scatter_by_component(
            ax, self.points, self.labels, colors, {"s": 6, "alpha": 0.6}, scatter_kwargs
        )
        # Heavier components are drawn more opaque, so that empty ones fade out.
        opacity = 0.25 + 0.75 * np.asarray(self.weights) / np.max(self.weights)
        self.ellipses_ = []
        for mean, covariance, color, alpha in zip(
            self.means, self.covariances, colors, opacity
        ):
            variances, axes = np.linalg.eigh(covariance)
            angle = np.degrees(np.arctan2(axes[1, -1], axes[0, -1]))
            lengths = 2.0 * np.sqrt(np.clip(variances[::-1], 0.0, None))
            component_ellipses = []
            for radius in self.n_std:
                ellipse = Ellipse(
                    mean,
                    width=radius * lengths[0],
                    height=radius * lengths[1],
                    angle=angle,
                    facecolor="none",
                    edgecolor=color,
                    linewidth=1.5,
                    alpha=alpha,
                )
                ax.add_patch(ellipse)
                component_ellipses.append(ellipse)
            self.ellipses_.append(component_ellipses)
        ax.plot(*np.asarray(self.means).T, "k+", markersize=8)
        ax.autoscale_view()
        ax.set(xlabel=self.xlabel or "", ylabel=self.ylabel or "")
        self.ax_ = ax
        self.figure_ = figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any = None,
        *,
        dimensions: tuple[int, int] = (0, 1),
        n_std: Sequence[float] = (1, 2, 3),
        ax: Any = None,
        scatter_kwargs: dict[str, Any] | None = None,
    ) -> MixtureEllipsesDisplay:
        """Draw the components of a fitted mixture over its data.

        Parameters
        ----------
        estimator : fitted EMGaussianMixture or VariationalGMMPrior
            Any ``covariance_type``; for VariationalGMMPrior the ellipses
            live in the latent space.
        X : array-like of shape (n_samples, n_features), default=None
            Data drawn under the ellipses (encoded first for a latent
            mixture), coloured by most likely component; ``None`` draws the
            ellipses alone.
        dimensions : tuple of two int, default=(0, 1)
            The two dimensions of the mixture's space to draw.
        n_std : sequence of float, default=(1, 2, 3)
            Mahalanobis radii of the ellipses.
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure.
        scatter_kwargs : dict, default=None
            Passed to :meth:`matplotlib.axes.Axes.scatter` for the points.

        Returns
        -------
        display : MixtureEllipsesDisplay
        """
        dims = list(dimensions)
        covariances = full_covariances(estimator)[:, dims][:, :, dims]
        points = labels = None
        if X is not None:
            points = mixture_points(estimator, X)
            labels = responsibilities(estimator, points).argmax(axis=1)
            points = points[:, dims]
        xlabel, ylabel = axis_labels(estimator, dimensions)
        display = cls(
            np.asarray(estimator.means_)[:, dims],
            covariances,
            np.asarray(estimator.weights_),
            n_std=n_std,
            points=points,
            labels=labels,
            xlabel=xlabel,
            ylabel=ylabel,
        )
        return display.plot(ax=ax, scatter_kwargs=scatter_kwargs)
