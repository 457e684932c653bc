"""Lazy access to matplotlib, an optional dependency, and shared drawing helpers."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "component_colors",
    "figure_and_axes",
    "import_pyplot",
    "legend_beside",
    "scatter_by_component",
]


def import_pyplot(caller: str) -> Any:
    """Import ``matplotlib.pyplot``, or say how to install it.

    matplotlib is imported here, on first use, so that importing the package
    never needs it.

    Parameters
    ----------
    caller : str
        The name of the display that needs matplotlib, for the error message.

    Returns
    -------
    module
        ``matplotlib.pyplot``.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            f"{caller} needs matplotlib; install it with: "
            "pip install 'sklearn-vae[plot]'"
        ) from error
    return plt


def figure_and_axes(ax: Any, caller: str) -> tuple[Any, Any]:
    """Return ``(figure, axes)`` to draw on: ``ax`` or a new figure's axes.

    Parameters
    ----------
    ax : matplotlib Axes or None
        Where to draw; ``None`` creates a new figure with one axes.
    caller : str
        The name of the display, for the error message if matplotlib is missing.

    Returns
    -------
    figure : matplotlib Figure
    ax : matplotlib Axes
    """
    plt = import_pyplot(caller)
    if ax is None:
        _, ax = plt.subplots()
    return ax.figure, ax


def component_colors(n_colors: int) -> np.ndarray:
    """Distinct RGBA colours, one per mixture component or class.

    Parameters
    ----------
    n_colors : int

    Returns
    -------
    ndarray of shape (n_colors, 4)
        ``tab10`` up to 10 colours, ``tab20`` up to 20, evenly spaced ``turbo``
        beyond, where qualitative palettes run out.
    """
    from matplotlib import colormaps

    if n_colors <= 10:
        return colormaps["tab10"](np.arange(n_colors))
    if n_colors <= 20:
        return colormaps["tab20"](np.arange(n_colors))
    return colormaps["turbo"](np.linspace(0.0, 1.0, n_colors))


def scatter_by_component(
    ax: Any,
    points: np.ndarray | None,
    labels: np.ndarray | None,
    colors: np.ndarray | None,
    defaults: dict[str, Any],
    scatter_kwargs: dict[str, Any] | None,
) -> Any:
    """Scatter 2-D points coloured by their component, if there are points.

    Parameters
    ----------
    ax : matplotlib Axes
    points : ndarray of shape (n_samples, 2) or None
        ``None`` draws nothing.
    labels : ndarray of shape (n_samples,) or None
        Component index of each point; ``None`` draws them all in grey.
    colors : ndarray of shape (n_components, 3 or 4) or None
        One colour per component; unused without labels.
    defaults : dict
        Keyword arguments of :meth:`matplotlib.axes.Axes.scatter` that
        ``scatter_kwargs`` may override.
    scatter_kwargs : dict or None
        The user's keyword arguments.

    Returns
    -------
    matplotlib PathCollection or None
    """
    if points is None:
        return None
    kwargs = {**defaults, **(scatter_kwargs or {})}
    point_colors = "grey" if labels is None else colors[np.asarray(labels)]
    return ax.scatter(points[:, 0], points[:, 1], c=point_colors, **kwargs)


def legend_beside(ax: Any, *args: Any) -> Any:
    """Put the legend to the right of the axes, where it hides no data.

    Parameters
    ----------
    ax : matplotlib Axes
    *args
        Handles and labels, as for :meth:`matplotlib.axes.Axes.legend`;
        none takes them from the labelled artists.

    Returns
    -------
    matplotlib Legend
    """
    return ax.legend(
        *args,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
        fontsize="small",
    )
