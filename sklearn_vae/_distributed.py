"""The seam between one process and many: ``torch.distributed`` collectives.

An estimator fitted inside an initialised process group (a script launched
with ``torchrun``, or any code that called
:func:`torch.distributed.init_process_group`) treats the rows each rank passes
to ``fit`` as that rank's shard of one data set. Everything the ranks must
agree on goes through the few functions here, which are no-ops (or identities)
in a single process, so the single-process code path is the distributed one
with the reductions removed:

* :func:`all_reduce_sum` adds tensors over ranks (sufficient statistics,
  gradients, loss sums);
* :func:`all_gather_objects` and :func:`broadcast_object` carry small Python
  objects (row samples for initialisation, random states, decisions);
* :func:`is_main_process` says which rank writes files and progress bars.

Tensors are moved to the device the backend needs (CUDA for NCCL, CPU for
gloo) and back, so callers never look at the backend.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

__all__ = [
    "ProcessGroup",
    "all_gather_objects",
    "all_reduce_sum",
    "broadcast_object",
    "current_process_group",
    "is_main_process",
]


class ProcessGroup(NamedTuple):
    """The rank of this process and the number of processes."""

    rank: int
    world_size: int


def current_process_group() -> ProcessGroup | None:
    """Return the default process group, or None outside a multi-process run.

    A group of one process counts as none: there is nothing to reduce.

    Returns
    -------
    ProcessGroup or None
    """
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()):
        return None
    world_size = distributed.get_world_size()
    if world_size < 2:
        return None
    return ProcessGroup(distributed.get_rank(), world_size)


def is_main_process() -> bool:
    """True in a single process and on rank 0 of a process group.

    Returns
    -------
    bool
    """
    group = current_process_group()
    return group is None or group.rank == 0


def _communication_device(tensor: torch.Tensor) -> torch.device:
    backend = torch.distributed.get_backend()
    if backend == "nccl":
        if tensor.device.type == "cuda":
            return tensor.device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Return the sum of ``tensor`` over every rank (``tensor`` itself alone).

    Every rank receives bit-identical values, so decisions taken from them
    (convergence, early stopping) agree.

    Parameters
    ----------
    tensor : torch.Tensor
        Same shape and dtype on every rank; not modified.

    Returns
    -------
    torch.Tensor
        On the device and in the dtype of ``tensor``.
    """
    if current_process_group() is None:
        return tensor
    device = _communication_device(tensor)
    buffer = tensor.detach().to(device, copy=True)
    torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
    return buffer.to(tensor.device)


def all_gather_objects(value: Any) -> list[Any]:
    """Return ``[value of rank 0, value of rank 1, ...]`` on every rank.

    Parameters
    ----------
    value : picklable object
        Keep it small: it is pickled and sent to every rank.

    Returns
    -------
    list
        ``[value]`` in a single process.
    """
    group = current_process_group()
    if group is None:
        return [value]
    gathered: list[Any] = [None] * group.world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any) -> Any:
    """Return rank 0's ``value`` on every rank (``value`` in a single process).

    Parameters
    ----------
    value : picklable object

    Returns
    -------
    object
    """
    if current_process_group() is None:
        return value
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]
