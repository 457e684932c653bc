"""Probabilistic deep learning estimators that behave like scikit-learn's."""

from ._vade import VariationalGMMPrior
from ._vae import VAETransformer
from .mixture import EMGaussianMixture

__version__ = "0.1.0.dev0"

__all__: list[str] = ["EMGaussianMixture", "VAETransformer", "VariationalGMMPrior"]
