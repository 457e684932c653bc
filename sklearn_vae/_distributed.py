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
* :func:`agree_on_errors` makes a failure on one rank (bad data in its
  shard) fail every rank, instead of leaving the others waiting in a
  collective the failed rank never reaches;
* :func:`is_main_process` says which rank writes files and progress bars.

Tensors are moved to the device the backend needs (CUDA for NCCL, CPU for
gloo) and back, so callers never look at the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import torch

__all__ = [
    "ProcessGroup",
    "agree_on_errors",
    "all_gather_objects",
    "all_reduce_max",
    "all_reduce_sum",
    "broadcast_tensors_",
    "broadcast_object",
    "current_process_group",
    "is_main_process",
]


_Result = TypeVar("_Result")


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


def all_reduce_max(value: int) -> int:
    """Return the largest of the ranks' integers (``value`` in one process).

    Parameters
    ----------
    value : int

    Returns
    -------
    int
    """
    if current_process_group() is None:
        return value
    return max(int(item) for item in all_gather_objects(int(value)))


def broadcast_tensors_(tensors: list[torch.Tensor]) -> None:
    """Overwrite ``tensors`` on every rank with rank 0's values, in place.

    One collective per dtype: the tensors are flattened into a buffer.

    Parameters
    ----------
    tensors : list of torch.Tensor
        The same shapes and dtypes on every rank, in the same order.
    """
    if current_process_group() is None or not tensors:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    for group in by_dtype.values():
        device = _communication_device(group[0])
        buffer = torch.cat([tensor.detach().reshape(-1).to(device) for tensor in group])
        torch.distributed.broadcast(buffer, src=0)
        offset = 0
        with torch.no_grad():
            for tensor in group:
                size = tensor.numel()
                tensor.copy_(buffer[offset : offset + size].view(tensor.shape))
                offset += size


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


def agree_on_errors(work: Callable[[], _Result]) -> _Result:
    """Run ``work`` (no collectives inside); if it fails on any rank, fail on all.

    In one process this is ``work()``. Under a process group every rank
    learns whether any rank raised: a rank that raised re-raises its own
    exception, the others raise a ValueError naming the failed rank and its
    message.

    Parameters
    ----------
    work : callable
        Local work only, such as validating this rank's shard.

    Returns
    -------
    object
        What ``work`` returned.
    """
    if current_process_group() is None:
        return work()
    error: Exception | None = None
    result = None
    try:
        result = work()
    except Exception as caught:  # re-raised below, on every rank
        error = caught
    failures = all_gather_objects(
        None if error is None else f"{type(error).__name__}: {error}"
    )
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(failures) if message]
    if failed:
        rank, message = failed[0]
        raise ValueError(f"Rank {rank} could not fit its shard: {message}")
    return result
