"""The latent codes of an autoencoder, in two dimensions, coloured by label."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from ._matplotlib import (
    component_colors,
    figure_and_axes,
    legend_beside,
    scatter_by_component,
)

__all__ = ["LatentSpaceDisplay"]


class LatentSpaceDisplay:
    """Scatter the latent codes of a fitted autoencoder, coloured by label.

    Two-dimensional codes are drawn as they are; larger codes are projected on
    their first two principal components.

    Use :meth:`from_estimator` to create one; the constructor only stores what
    :meth:`plot` draws.

    Parameters
    ----------
    codes : ndarray of shape (n_samples, 2)
        The points to draw.
    labels : ndarray of shape (n_samples,), default=None
        Class or cluster of each point; ``None`` draws them all in one colour.
    xlabel, ylabel : str, default=None
        Axis labels.

    Attributes
    ----------
    scatter_ : matplotlib PathCollection
        The codes.
    legend_ : matplotlib Legend or None
        One entry per label, when there are labels.
    ax_ : matplotlib Axes
        Axes with the codes.
    figure_ : matplotlib Figure
        Figure containing the codes.

    See Also
    --------
    PosteriorMapDisplay : The latent plane coloured by a mixture prior's posterior.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_vae import VAETransformer
    >>> from sklearn_vae.plotting import LatentSpaceDisplay
    >>> X, y = load_digits(return_X_y=True)
    >>> vae = VAETransformer(n_components=2, max_iter=2, random_state=0).fit(X / 16)
    >>> display = LatentSpaceDisplay.from_estimator(vae, X / 16, y)
    >>> len(display.legend_.get_texts())
    10
    """

    def __init__(
        self,
        codes: np.ndarray,
        *,
        labels: np.ndarray | None = None,
        xlabel: str | None = None,
        ylabel: str | None = None,
    ) -> None:
        self.codes = codes
        self.labels = labels
        self.xlabel = xlabel
        self.ylabel = ylabel

    def plot(
        self, ax: Any = None, *, scatter_kwargs: dict[str, Any] | None = None
    ) -> LatentSpaceDisplay:
        """Draw the codes.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure.
        scatter_kwargs : dict, default=None
            Passed to :meth:`matplotlib.axes.Axes.scatter`.

        Returns
        -------
        display : LatentSpaceDisplay
            The object itself, with the drawn artists as attributes.
        """
        figure, ax = figure_and_axes(ax, type(self).__name__)
        defaults = {"s": 6, "alpha": 0.8}
        self.legend_ = None
        if self.labels is None:
            self.scatter_ = scatter_by_component(
                ax, self.codes, None, None, defaults, scatter_kwargs
            )
        else:
            classes, indices = np.unique(self.labels, return_inverse=True)
            colors = component_colors(len(classes))
            self.scatter_ = scatter_by_component(
                ax, self.codes, indices, colors, defaults, scatter_kwargs
            )
            handles = [
                ax.plot([], [], "o", color=color, markersize=5, linestyle="")[0]
                for color in colors
            ]
            self.legend_ = legend_beside(ax, handles, [str(label) for label in classes])
        ax.set(xlabel=self.xlabel or "", ylabel=self.ylabel or "")
        self.ax_ = ax
        self.figure_ = figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any,
        y: Any = None,
        *,
        ax: Any = None,
        scatter_kwargs: dict[str, Any] | None = None,
    ) -> LatentSpaceDisplay:
        """Encode data with a fitted autoencoder and draw its codes.

        Parameters
        ----------
        estimator : fitted VAETransformer or VariationalGMMPrior
            Any fitted transformer whose ``transform`` returns codes.
        X : array-like of shape (n_samples, n_features)
            Data to encode.
        y : array-like of shape (n_samples,), default=None
            Labels that colour the codes. ``None`` colours them by the
            estimator's clusters (``predict``) where it has them.
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure.
        scatter_kwargs : dict, default=None
            Passed to :meth:`matplotlib.axes.Axes.scatter`.

        Returns
        -------
        display : LatentSpaceDisplay

        Raises
        ------
        ValueError
            If the codes have a single dimension.
        """
        codes = np.asarray(estimator.transform(X), dtype=float)
        if codes.shape[1] < 2:
            raise ValueError(
                "LatentSpaceDisplay needs codes with at least two dimensions; "
                f"these have {codes.shape[1]}."
            )
        if codes.shape[1] == 2:
            xlabel, ylabel = "latent dimension 1", "latent dimension 2"
        else:
            codes = PCA(n_components=2).fit_transform(codes)
            xlabel = "latent principal component 1"
            ylabel = "latent principal component 2"
        if y is None and hasattr(estimator, "predict"):
            y = estimator.predict(X)
        display = cls(
            codes,
            labels=None if y is None else np.asarray(y),
            xlabel=xlabel,
            ylabel=ylabel,
        )
        return display.plot(ax=ax, scatter_kwargs=scatter_kwargs)
