"""Training curves: each recorded loss term per epoch."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._matplotlib import figure_and_axes, legend_beside

__all__ = ["TrainingCurvesDisplay"]


# Recorded every epoch but not training quantities: the x axis, the epoch's
# duration and the optimiser's learning rate.
_NOT_CURVES = frozenset({"epoch", "time", "learning_rate"})
_VALIDATION_PREFIX = "val_"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _curves(history: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Every numeric entry of a history that is a training quantity.

    An entry missing from some epochs is NaN there, which matplotlib leaves as
    a gap.
    """
    names: list[str] = []
    for record in history:
        for name, value in record.items():
            if name not in names and name not in _NOT_CURVES and _is_number(value):
                names.append(name)
    return {
        name: np.array(
            [
                float(record[name]) if _is_number(record.get(name)) else np.nan
                for record in history
            ]
        )
        for name in names
    }


class TrainingCurvesDisplay:
    """Plot each quantity recorded during training against the epoch.

    Use :meth:`from_estimator` to create one; the constructor only stores what
    :meth:`plot` draws.

    Parameters
    ----------
    curves : dict of str to ndarray of shape (n_epochs,)
        One curve per recorded quantity (loss, each loss term, validation
        loss...). A curve named ``"val_<name>"`` (measured on the validation
        split) is drawn dashed, in the colour of the curve ``<name>``.
    ylabel : str, default="loss"
        Label of the vertical axis.

    Attributes
    ----------
    lines_ : dict of str to matplotlib Line2D
        The line of each curve.
    ax_ : matplotlib Axes
        Axes with the curves.
    figure_ : matplotlib Figure
        Figure containing the curves.

    See Also
    --------
    LatentSpaceDisplay : The codes the training produced.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_vae import VAETransformer
    >>> from sklearn_vae.plotting import TrainingCurvesDisplay
    >>> X, _ = load_digits(return_X_y=True)
    >>> vae = VAETransformer(max_iter=3, random_state=0).fit(X / 16)
    >>> display = TrainingCurvesDisplay.from_estimator(vae)
    >>> len(next(iter(display.lines_.values())).get_xdata())
    3
    """

    def __init__(self, curves: Mapping[str, np.ndarray], *, ylabel: str = "loss"):
        self.curves = curves
        self.ylabel = ylabel

    def plot(self, ax: Any = None) -> TrainingCurvesDisplay:
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure.

        Returns
        -------
        display : TrainingCurvesDisplay
            The object itself, with the drawn artists as attributes.
        """
        from matplotlib.ticker import MaxNLocator

        figure, ax = figure_and_axes(ax, type(self).__name__)
        self.lines_ = {}
        for name, values in self.curves.items():
            epochs = np.arange(1, len(values) + 1)
            training_name = name.removeprefix(_VALIDATION_PREFIX)
            if training_name != name and training_name in self.lines_:
                style = {"color": self.lines_[training_name].get_color()}
            else:
                style = {}
            (self.lines_[name],) = ax.plot(
                epochs,
                values,
                "--" if name.startswith(_VALIDATION_PREFIX) else "-",
                label=name,
                **style,
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(self.ylabel)
        if self.lines_:
            legend_beside(ax)
        self.ax_ = ax
        self.figure_ = figure
        return self

    @classmethod
    def from_estimator(cls, estimator: Any, *, ax: Any = None) -> TrainingCurvesDisplay:
        """Plot the training history of a fitted estimator.

        Parameters
        ----------
        estimator : fitted estimator
            A neural estimator with ``history_`` (a list with one dict of
            recorded quantities per epoch), or a mixture fitted by EM with
            ``lower_bounds_`` (drawn as the lower bound per iteration).
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a new figure.

        Returns
        -------
        display : TrainingCurvesDisplay

        Raises
        ------
        ValueError
            If the estimator records no training history.
        """
        if hasattr(estimator, "history_"):
            display = cls(_curves(estimator.history_))
        elif hasattr(estimator, "lower_bounds_"):
            display = cls(
                {"lower bound": np.asarray(estimator.lower_bounds_, dtype=float)},
                ylabel="lower bound per sample (nats)",
            )
        else:
            check_is_fitted(estimator)
            raise ValueError(
                f"{type(estimator).__name__} records no training history "
                "(neither history_ nor lower_bounds_)."
            )
        return display.plot(ax=ax)
