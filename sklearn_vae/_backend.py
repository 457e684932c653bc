"""Device, dtype and random-number policy shared by every estimator.

Data flows one way through the package: a validated numpy array becomes a tensor
on the estimator's device (this module), the model computes in torch, and the
result comes back as numpy (this module again). No other module converts arrays
or seeds torch by hand.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = [
    "DEVICE_CONSTRAINT",
    "TaskCancelled",
    "check_finite_rows",
    "compute_dtype",
    "iter_row_chunks",
    "limited_threads",
    "make_generator",
    "map_row_chunks",
    "numpy_dtype",
    "resolve_device",
    "run_concurrently",
    "seed_from_random_state",
    "seeded_module_init",
    "to_numpy",
    "to_tensor",
    "unchanged_on_error",
]

#: The ``_parameter_constraints`` entry every estimator uses for ``device``.
DEVICE_CONSTRAINT: list[Any] = [str, torch.device]

_DEVICE_PATTERN = re.compile(r"^(cpu|mps|auto|cuda(:\d+)?)$")


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn the ``device`` parameter of an estimator into a ``torch.device``.

    Parameters
    ----------
    device : str or torch.device
        ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'`` or ``'auto'`` (the first
        available of CUDA, MPS and CPU), or a ``torch.device``.

    Returns
    -------
    torch.device
        The device to compute on.

    Raises
    ------
    ValueError
        If the string is not a device name, or names an accelerator this
        machine does not have.
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise TypeError(
            f"device must be a str or torch.device, got {type(device).__name__}."
        )
    if not _DEVICE_PATTERN.match(name):
        raise ValueError(
            f"Unknown device {device!r}. Use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'."
        )
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                "machine. Use device='cpu' or device='auto'."
            )
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible."
            )
    if name == "mps" and not _mps_available():
        raise ValueError(
            "device='mps' was requested but MPS is not available on this machine. "
            "Use device='cpu' or device='auto'."
        )
    return torch.device(name)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def compute_dtype(X: np.ndarray | np.dtype | type) -> torch.dtype:
    """Choose the torch dtype to compute in from an input array or dtype.

    float32 input is computed in float32; every other input in float64.

    Parameters
    ----------
    X : ndarray or dtype
        The input array (or its dtype).

    Returns
    -------
    torch.dtype
        ``torch.float32`` or ``torch.float64``.
    """
    dtype = np.dtype(getattr(X, "dtype", X))
    return torch.float32 if dtype == np.float32 else torch.float64


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """Return the numpy dtype that corresponds to a torch floating dtype.

    Parameters
    ----------
    dtype : torch.dtype
        ``torch.float32`` or ``torch.float64``.

    Returns
    -------
    numpy.dtype
    """
    return np.dtype(np.float32) if dtype == torch.float32 else np.dtype(np.float64)


def to_tensor(
    X: Any,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Move an array to a tensor on ``device`` without copying when possible.

    Parameters
    ----------
    X : array-like
        The data. Already validated by the caller.
    device : torch.device or str, default='cpu'
        Where the tensor lives.
    dtype : torch.dtype, default=None
        Target dtype; ``None`` applies :func:`compute_dtype` to ``X``.

    Returns
    -------
    torch.Tensor
    """
    if isinstance(X, torch.Tensor):
        tensor = X
    else:
        array = np.asarray(X)
        if dtype is None:
            dtype = compute_dtype(array)
        if not array.flags.writeable:
            array = array.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if dtype is None:
        dtype = tensor.dtype
    return tensor.to(device=device, dtype=dtype)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Return a numpy copy of a tensor that lives on any device.

    Parameters
    ----------
    tensor : torch.Tensor

    Returns
    -------
    ndarray
        An array that owns its memory (never a view of the tensor).
    """
    return tensor.detach().to("cpu").numpy().copy()


def seed_from_random_state(random_state: Any) -> int:
    """Draw a 63-bit integer seed from a scikit-learn ``random_state``.

    Parameters
    ----------
    random_state : int, RandomState instance or None
        As everywhere in scikit-learn. ``None`` draws from numpy's global
        random state, as scikit-learn does.

    Returns
    -------
    int
        A seed for :func:`make_generator`.
    """
    rng = check_random_state(random_state)
    return int(rng.randint(0, np.iinfo(np.int32).max)) * (2**31) + int(
        rng.randint(0, np.iinfo(np.int32).max)
    )


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Create a seeded ``torch.Generator`` on ``device``.

    Estimators draw every random number from such a generator, so fitting never
    reads or changes torch's global random state.

    Parameters
    ----------
    seed : int
        From :func:`seed_from_random_state`.
    device : torch.device or str, default='cpu'

    Returns
    -------
    torch.Generator
    """
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator


@contextlib.contextmanager
def seeded_module_init(seed: int) -> Iterator[None]:
    """Run ``torch.nn`` module construction under a fixed seed, in isolation.

    Module constructors initialise their weights from torch's global CPU
    generator. Inside this context that generator is seeded with ``seed`` and
    its previous state is restored on exit, so building a model is
    reproducible and leaves the caller's random state untouched. Build on CPU
    and move the model afterwards: the weights are then the same on every
    device.

    Parameters
    ----------
    seed : int

    Examples
    --------
    >>> before = torch.random.get_rng_state()
    >>> with seeded_module_init(0):
    ...     a = torch.nn.Linear(2, 2)
    >>> with seeded_module_init(0):
    ...     b = torch.nn.Linear(2, 2)
    >>> bool(torch.equal(a.weight, b.weight))
    True
    >>> bool(torch.equal(before, torch.random.get_rng_state()))
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


@contextlib.contextmanager
def limited_threads(n_threads: int | None) -> Iterator[None]:
    """Run torch's CPU operations on at most ``n_threads`` threads, then restore.

    Operations on small tensors finish before a thread pool wakes up; on a
    machine with more threads than idle cores, OpenMP's spinning workers then
    make them many times slower (scikit-learn's KMeans limits its BLAS
    threads for the same reason). torch's setting is process-wide, so the
    previous value is put back on exit.

    Parameters
    ----------
    n_threads : int or None
        None leaves the setting alone.

    Examples
    --------
    >>> before = torch.get_num_threads()
    >>> with limited_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    previous = torch.get_num_threads()
    if n_threads is None or n_threads >= previous:
        yield
        return
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_Result = TypeVar("_Result")


def run_concurrently(
    tasks: Sequence[Callable[[threading.Event], _Result]], n_workers: int
) -> list[_Result]:
    """Run independent tasks on ``n_workers`` threads; return their results in order.

    torch releases the GIL inside its operations, so tasks that train separate
    small networks on the CPU overlap almost fully on separate cores (two
    digits pretrainings on two cores: 1.66 times the throughput of one after
    the other). torch's intra-op threads are shared out among the workers
    while they run (at least one each), so the cores are not oversubscribed,
    and the setting is put back afterwards. Each task receives a
    ``threading.Event`` that is set when another task failed or the caller was
    interrupted (Ctrl-C reaches only the main thread); a task should check it
    between units of work and give up when it is set. With ``n_workers=1``
    the tasks run one after the other in the calling thread.

    Parameters
    ----------
    tasks : sequence of callable
        Each called with the cancellation event. They must not share mutable
        state (their own modules, generators and optimisers each), and must
        not use torch's global random generator.
    n_workers : int
        Threads to run on (capped at ``len(tasks)``).

    Returns
    -------
    list
        ``tasks[i](event)`` at position ``i``.

    Raises
    ------
    BaseException
        The exception of the first task (in the order given) that failed
        other than by being cancelled, or the caller's ``KeyboardInterrupt``;
        every worker has stopped by then.

    Examples
    --------
    >>> run_concurrently([lambda cancelled: 1, lambda cancelled: 2], n_workers=2)
    [1, 2]
    """
    cancelled = threading.Event()
    n_workers = max(1, min(n_workers, len(tasks)))
    if n_workers == 1:
        return [task(cancelled) for task in tasks]
    threads_each = max(1, torch.get_num_threads() // n_workers)
    with limited_threads(threads_each), concurrent.futures.ThreadPoolExecutor(
        n_workers, thread_name_prefix="sklearn-vae"
    ) as pool:
        futures = [pool.submit(_unless_cancelled, task, cancelled) for task in tasks]
        try:
            concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C in the caller's thread
            cancelled.set()
            raise
        failed = [future for future in futures if future.done() and future.exception()]
        if failed:
            cancelled.set()
    # The pool has joined every worker here; report the first real failure.
    for future in futures:
        error = future.exception()
        if error is not None and not (cancelled.is_set() and isinstance(error, TaskCancelled)):
            raise error
    return [future.result() for future in futures]


class TaskCancelled(Exception):
    """Raised by a task of :func:`run_concurrently` that stopped because it was cancelled."""


def _unless_cancelled(task: Callable[[threading.Event], _Result], cancelled: threading.Event) -> _Result:
    # A task still queued when another failed must not start at all.
    if cancelled.is_set():
        raise TaskCancelled("cancelled before it started")
    return task(cancelled)


@contextlib.contextmanager
def unchanged_on_error(estimator: Any) -> Iterator[None]:
    """Put back every attribute of ``estimator``, network weights included, on error.

    A failed fit must leave an estimator unfitted or in its last good state,
    never half-updated: not a new ``n_features_in_`` beside old parameters, and
    not networks that a warm start trained in place before the error. The
    attributes are saved by reference, the state of each ``torch.nn.Module``
    among them by value. ``KeyboardInterrupt`` counts as an error here: code
    that wants to keep a partial result (the training engine) catches it
    itself.

    Parameters
    ----------
    estimator : object

    Examples
    --------
    >>> class Box:
    ...     pass
    >>> box = Box()
    >>> box.layer = torch.nn.Linear(1, 1)
    >>> weight = box.layer.weight.detach().clone()
    >>> try:
    ...     with unchanged_on_error(box):
    ...         box.n_features_in_ = 5
    ...         _ = box.layer.weight.data.fill_(7.0)
    ...         raise ValueError("bad data")
    ... except ValueError:
    ...     pass
    >>> hasattr(box, "n_features_in_"), bool(torch.equal(box.layer.weight, weight))
    (False, True)
    """
    saved = dict(vars(estimator))
    weights = {
        name: {key: value.detach().clone() for key, value in module.state_dict().items()}
        for name, module in saved.items()
        if isinstance(module, torch.nn.Module)
    }
    try:
        yield
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(saved)
        for name, state in weights.items():
            saved[name].load_state_dict(state)
        raise


def check_finite_rows(finite: np.ndarray, X: np.ndarray, estimator: Any) -> None:
    """Raise a ValueError that explains why some rows gave non-finite results.

    With finite inputs and finite fitted parameters, a non-finite result can
    only come from a row so far from what the estimator was fitted on that an
    intermediate (a squared distance, an exponential) overflows the dtype.

    Parameters
    ----------
    finite : ndarray of bool of shape (n_samples,)
        Whether each row's result is finite.
    X : ndarray of shape (n_samples, n_features)
        The validated input.
    estimator : object
        Named in the message.

    Raises
    ------
    ValueError
        If any entry of ``finite`` is False.
    """
    n_bad = finite.size - int(np.count_nonzero(finite))
    if n_bad:
        raise ValueError(
            f"{n_bad} of {finite.size} rows of X gave non-finite results in "
            f"{type(estimator).__name__}: they are too far from the data it was "
            f"fitted on for {X.dtype} arithmetic (the largest absolute value in "
            f"X is {np.abs(X).max():.3g}). Check that X is on the scale of the "
            "training data and transformed as they were; score_samples gives "
            "such rows a log-density of -inf."
        )


def iter_row_chunks(n_samples: int, chunk_size: int) -> Iterator[slice]:
    """Yield consecutive row slices of at most ``chunk_size`` rows.

    Parameters
    ----------
    n_samples : int
    chunk_size : int

    Yields
    ------
    slice
    """
    chunk_size = max(1, int(chunk_size))
    for start in range(0, n_samples, chunk_size):
        yield slice(start, min(start + chunk_size, n_samples))


def map_row_chunks(
    function: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    X: np.ndarray,
    *,
    device: torch.device,
    dtype: torch.dtype,
    chunk_size: int,
) -> np.ndarray | tuple[np.ndarray, ...]:
    """Apply a tensor function to an array chunk by chunk and return numpy.

    Only one chunk of the input lives on the device at a time, so inference on
    a million rows does not run out of device memory. Runs under
    ``torch.no_grad``.

    Parameters
    ----------
    function : callable
        Takes a ``(chunk_rows, n_features)`` tensor and returns a tensor (or a
        tuple of tensors) whose first dimension is ``chunk_rows``.
    X : ndarray of shape (n_samples, n_features)
    device : torch.device
    dtype : torch.dtype
    chunk_size : int

    Returns
    -------
    ndarray or tuple of ndarray
        The chunk results concatenated along the first axis.
    """
    pieces: list[Any] = []
    with torch.no_grad():
        for rows in iter_row_chunks(X.shape[0], chunk_size):
            out = function(to_tensor(X[rows], device=device, dtype=dtype))
            if isinstance(out, tuple):
                pieces.append(tuple(to_numpy(o) for o in out))
            else:
                pieces.append(to_numpy(out))
    if not pieces:
        raise ValueError("map_row_chunks needs at least one row.")
    if isinstance(pieces[0], tuple):
        return tuple(np.concatenate(parts, axis=0) for parts in zip(*pieces))
    return np.concatenate(pieces, axis=0)
