"""Warnings and errors of sklearn-vae, next to scikit-learn's own.

:class:`~sklearn.exceptions.ConvergenceWarning` and
:class:`~sklearn.exceptions.NotFittedError` keep their scikit-learn meaning;
this module adds what a neural estimator can report beyond them.
"""

from __future__ import annotations

from .neural._engine import NonFiniteLossError

__all__ = ["NonFiniteLossError", "PosteriorCollapseWarning"]


class PosteriorCollapseWarning(UserWarning):
    """Warning that most latent units of a fitted VAE carry no information.

    A latent unit ``j`` is *active* when its posterior mean varies with the
    input, ``Cov_x(E_q[z_j | x]) > 0.01`` (Burda et al., 2016); an inactive
    unit's posterior equals the prior for every row, so the decoder ignores
    it. Raised by :class:`~sklearn_vae.VAETransformer` at the end of ``fit``
    when fewer than half of the ``n_components`` units are active; the
    message says what to try.

    Filter it like any warning, e.g.
    ``warnings.simplefilter("ignore", PosteriorCollapseWarning)``.

    Examples
    --------
    >>> from sklearn_vae.exceptions import PosteriorCollapseWarning
    >>> issubclass(PosteriorCollapseWarning, UserWarning)
    True
    """
