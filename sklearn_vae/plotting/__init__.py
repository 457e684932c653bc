"""Plots for fitted estimators, following scikit-learn's Display convention.

Each display is built with ``XxxDisplay.from_estimator(estimator, ...)``, draws
with ``.plot(ax=...)`` and keeps its artists as attributes (``ax_``,
``figure_``, ...). matplotlib is an optional dependency, imported on first use:
``pip install 'sklearn-vae[plot]'``.
"""

from ._ellipses import MixtureEllipsesDisplay
from ._latent_space import LatentSpaceDisplay
from ._posterior_map import PosteriorMapDisplay
from ._samples import GeneratedSamplesDisplay
from ._training_curves import TrainingCurvesDisplay

__all__ = [
    "GeneratedSamplesDisplay",
    "LatentSpaceDisplay",
    "MixtureEllipsesDisplay",
    "PosteriorMapDisplay",
    "TrainingCurvesDisplay",
]
