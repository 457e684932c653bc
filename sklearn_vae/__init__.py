"""Probabilistic deep learning estimators that behave like scikit-learn's."""

__version__ = "0.1.0.dev0"

from ._model_file import load_model, save_model  # noqa: E402
from ._vade import VariationalGMMPrior  # noqa: E402
from ._vae import VAETransformer  # noqa: E402
from .mixture import EMGaussianMixture  # noqa: E402

__all__: list[str] = [
    "EMGaussianMixture",
    "VAETransformer",
    "VariationalGMMPrior",
    "load_model",
    "save_model",
]
