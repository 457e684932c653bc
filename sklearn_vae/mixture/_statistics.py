"""Sufficient statistics of a mixture's E-step, additive across row chunks.

The M-step of EM needs the data only through a handful of responsibility-weighted
sums. Each row chunk contributes its own sums; adding the contributions of all
chunks (or, later, of all processes with an all-reduce, or of successive
mini-batches for ``partial_fit``) gives the statistics of the whole data set.
Keeping them in one small object is what makes streaming and distributed EM a
change of the loop, not of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["SufficientStatistics"]

#: Statistics are accumulated in float64 whatever the compute dtype: a float32
#: sum over a million rows loses the digits the lower bound's change is made of.
ACCUMULATION_DTYPE = torch.float64


@dataclass(frozen=True)
class SufficientStatistics:
    """Responsibility-weighted sums of one or more row chunks.

    With sample weights ``w_i`` and responsibilities ``r_ik``, and writing
    ``v_ik = w_i r_ik``, every field is a sum over the rows ``i`` seen so far.

    Parameters
    ----------
    component_weight : torch.Tensor of shape (n_components,)
        ``N_k = sum_i v_ik``.
    weighted_sum : torch.Tensor of shape (n_components, n_features)
        ``sum_i v_ik x_i``.
    weighted_scatter : torch.Tensor
        The second moments the covariance type needs: ``sum_i v_ik x_i x_i^T``
        of shape (n_components, n_features, n_features) for 'full',
        ``sum_i w_i x_i x_i^T`` of shape (n_features, n_features) for 'tied',
        and ``sum_i v_ik x_i**2`` of shape (n_components, n_features) for
        'diag' and 'spherical'.
    log_likelihood : torch.Tensor of shape ()
        ``sum_i w_i log p(x_i)`` under the parameters of the E-step, in nats.
    total_weight : torch.Tensor of shape ()
        ``sum_i w_i``.
    """

    component_weight: torch.Tensor
    weighted_sum: torch.Tensor
    weighted_scatter: torch.Tensor
    log_likelihood: torch.Tensor
    total_weight: torch.Tensor

    def __add__(self, other: SufficientStatistics) -> SufficientStatistics:
        return SufficientStatistics(
            *(
                getattr(self, field.name) + getattr(other, field.name)
                for field in fields(self)
            )
        )

    def to(self, dtype: torch.dtype) -> SufficientStatistics:
        """Return the statistics cast to ``dtype`` (no copy if already there).

        Parameters
        ----------
        dtype : torch.dtype

        Returns
        -------
        SufficientStatistics
        """
        return SufficientStatistics(
            *(getattr(self, field.name).to(dtype) for field in fields(self))
        )

    @property
    def mean_log_likelihood(self) -> float:
        """The weighted mean log-likelihood per sample, in nats.

        This is the EM lower bound of the parameters the E-step used.
        """
        return float(self.log_likelihood / self.total_weight)
