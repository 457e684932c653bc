"""The importance-weighted autoencoder bound as a training objective.

Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
With ``K`` draws ``z_k ~ q(z|x)`` and ``log w_k = log p(x, z_k) - log q(z_k|x)``::

    L_K(x) = log (1/K) sum_k w_k  <=  log p(x)

``L_1`` is the ELBO; ``L_K`` is non-decreasing in ``K``. Maximising it trains
the decoder toward a higher likelihood than the ELBO does, because the gap
between the bound and ``log p(x)`` shrinks as ``K`` grows.
"""

from __future__ import annotations

import torch

from ._engine import Batch, Objective, StepContext
from ._modules import VariationalAutoencoder
from ._objectives import (
    elbo_from_log_weights,
    importance_weighted_bound,
    log_importance_weights,
    mutual_information_diagnostics,
)

__all__ = ["ImportanceWeightedBound"]


class ImportanceWeightedBound(Objective):
    """The negative IWAE bound with ``n_train_samples`` draws per row.

    Terms, means per sample in nats: ``loss`` (the negative bound) and
    ``elbo`` (the ELBO estimated from the same draws, logged only). The draws
    are independent across rows. Once per epoch
    :func:`~sklearn_vae.neural._objectives.mutual_information_diagnostics`
    logs ``mutual_information``.

    Parameters
    ----------
    n_train_samples : int
        Importance samples per row, ``K`` (1 gives the ELBO).
    """

    def __init__(self, n_train_samples: int) -> None:
        self.n_train_samples = n_train_samples

    def loss_terms(
        self, model: VariationalAutoencoder, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        mean, log_var = model.encoder(batch.X)
        noise = torch.randn(
            (self.n_train_samples, *mean.shape),
            generator=context.generator,
            device=mean.device,
            dtype=mean.dtype,
        )
        log_weights = log_importance_weights(
            model, batch.X, noise, posterior=(mean, log_var)
        )
        bound = importance_weighted_bound(log_weights).mean()
        return {
            "loss": -bound,
            "elbo": elbo_from_log_weights(log_weights).mean().detach(),
        }

    def diagnostics(
        self, model: VariationalAutoencoder, batch: Batch, context: StepContext
    ) -> dict[str, torch.Tensor]:
        return mutual_information_diagnostics(model, batch, context)
