"""Mixture models fitted by EM in torch."""

from ._gaussian import EMGaussianMixture

__all__ = ["EMGaussianMixture"]
