"""Sufficient statistics of a mixture's E-step, additive across row chunks.

The M-step of EM needs the data only through a handful of responsibility-weighted
sums. Each row chunk contributes its own sums; adding the contributions of all
chunks (or, later, of all processes with an all-reduce, or of successive
mini-batches for ``partial_fit``) gives the statistics of the whole data set.
Keeping them in one small object is what makes streaming and distributed EM a
change of the loop, not of the model:

* a pass over row chunks, over the blocks of a Dask array, or over the shards
  of a process group is a sum of statistics (:func:`sum_statistics`,
  :meth:`SufficientStatistics.all_reduce`);
* stepwise (online) EM for ``partial_fit`` blends the running statistics with
  a mini-batch's (:meth:`SufficientStatistics.blend`, :func:`stepwise_step_size`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

import numpy as np
import torch

from .._backend import to_numpy, to_tensor
from .._distributed import all_reduce_sum, current_process_group

__all__ = ["SufficientStatistics", "stepwise_step_size", "sum_statistics"]

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
        ``sum_i v_ik x_i**2`` of shape (n_components, n_features) for 'diag',
        and ``sum_i v_ik |x_i|^2`` of shape (n_components,) for 'spherical'.
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

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Return the fields as numpy arrays by name (plain to pickle or save).

        Returns
        -------
        dict of str to ndarray
        """
        return {field.name: to_numpy(getattr(self, field.name)) for field in fields(self)}

    @classmethod
    def from_numpy(
        cls, arrays: dict[str, np.ndarray], device: torch.device | str = "cpu"
    ) -> SufficientStatistics:
        """Rebuild statistics from :meth:`to_numpy`'s arrays, on ``device``.

        Parameters
        ----------
        arrays : dict of str to ndarray
        device : torch.device or str, default='cpu'

        Returns
        -------
        SufficientStatistics
        """
        return cls(
            *(
                to_tensor(np.asarray(arrays[field.name]), device, ACCUMULATION_DTYPE)
                for field in fields(cls)
            )
        )

    def all_reduce(self) -> SufficientStatistics:
        """Return the statistics summed over the ranks of the process group.

        One collective for all fields; the statistics themselves outside a
        multi-process run.

        Returns
        -------
        SufficientStatistics
        """
        if current_process_group() is None:
            return self
        tensors = [getattr(self, field.name) for field in fields(self)]
        reduced = all_reduce_sum(torch.cat([tensor.reshape(-1) for tensor in tensors]))
        pieces = reduced.split([tensor.numel() for tensor in tensors])
        return SufficientStatistics(
            *(piece.view(tensor.shape) for piece, tensor in zip(pieces, tensors))
        )

    def per_unit_weight(self) -> SufficientStatistics:
        """Return the statistics divided by their total weight.

        Statistics of batches of any size become averages that
        :meth:`blend` can mix; the M-step gives the same parameters from
        either form.

        Returns
        -------
        SufficientStatistics
        """
        return SufficientStatistics(
            *(getattr(self, field.name) / self.total_weight for field in fields(self))
        )

    def blend(self, other: SufficientStatistics, step_size: float) -> SufficientStatistics:
        """Return ``(1 - step_size) * self + step_size * other``, field by field.

        The update of stepwise EM (Cappe & Moulines 2009): ``self`` holds the
        running per-unit-weight statistics, ``other`` a mini-batch's.

        Parameters
        ----------
        other : SufficientStatistics
        step_size : float
            In [0, 1].

        Returns
        -------
        SufficientStatistics
        """
        return SufficientStatistics(
            *(
                torch.lerp(getattr(self, field.name), getattr(other, field.name), step_size)
                for field in fields(self)
            )
        )

    @property
    def mean_log_likelihood(self) -> float:
        """The weighted mean log-likelihood per sample, in nats.

        This is the EM lower bound of the parameters the E-step used.
        """
        return float(self.log_likelihood / self.total_weight)


def sum_statistics(chunks: Iterable[SufficientStatistics]) -> SufficientStatistics:
    """Add the statistics of several chunks (at least one).

    Parameters
    ----------
    chunks : iterable of SufficientStatistics

    Returns
    -------
    SufficientStatistics

    Raises
    ------
    ValueError
        If ``chunks`` is empty.
    """
    total = None
    for statistics in chunks:
        total = statistics if total is None else total + statistics
    if total is None:
        raise ValueError("sum_statistics needs the statistics of at least one chunk.")
    return total


def stepwise_step_size(step: int, decay: float) -> float:
    """The step size ``eta_t = (t + 2) ** -decay`` of stepwise EM.

    Liang & Klein (2009)'s schedule: with ``decay`` in (0.5, 1] the step
    sizes sum to infinity while their squares do not, the condition under
    which stepwise EM converges (Cappe & Moulines 2009). Smaller ``decay``
    forgets old batches faster.

    Parameters
    ----------
    step : int
        ``t``, the number of updates made before this one.
    decay : float
        ``alpha`` in (0.5, 1].

    Returns
    -------
    float
        In (0, 1).

    Examples
    --------
    >>> round(stepwise_step_size(0, 1.0), 3)
    0.5
    >>> stepwise_step_size(8, 0.5) > stepwise_step_size(8, 1.0)
    True
    """
    return float((step + 2) ** -decay)
