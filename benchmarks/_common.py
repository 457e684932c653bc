"""What the benchmark scripts share: memory sampling, thread limits, a common start.

The scripts import it as ``_common`` (Python puts a script's own folder first
on ``sys.path``); it is not part of the package.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits


class PeakMemory:
    """Peak memory of this process above the starting level, sampled in a thread.

    Covers numpy and torch allocations alike (tracemalloc sees only the
    former).

    Parameters
    ----------
    kind : {'resident', 'anonymous'}, default='resident'
        'resident' is the resident set size (``/proc/self/statm``), which also
        counts the pages of memory-mapped files that were read; 'anonymous'
        is ``RssAnon`` (``/proc/self/status``), the process's own allocations
        only: a mapped file's pages are page cache, which the kernel drops
        when it needs the memory.
    interval : float, default=0.002
        Seconds between samples.
    """

    def __init__(self, kind: str = "resident", interval: float = 0.002) -> None:
        if kind not in ("resident", "anonymous"):
            raise ValueError(f"kind must be 'resident' or 'anonymous', got {kind!r}")
        self.kind = kind
        self.interval = interval
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _bytes(self) -> int:
        if self.kind == "resident":
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * self._page
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        raise OSError("/proc/self/status has no RssAnon line")

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self._bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = self._bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._bytes())

    @property
    def megabytes(self) -> float:
        """Peak above the level on entry, in MiB."""
        return (self.peak - self.baseline) / 2**20

    @property
    def total_megabytes(self) -> float:
        """Peak of the whole process, in MiB."""
        return self.peak / 2**20


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads`` and ``--repeats``, which every benchmark takes."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for torch and for scikit-learn's BLAS (default: torch's)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="alternating runs per side; the fastest of each is reported",
    )


@contextmanager
def limited_threads(threads: int | None) -> Iterator[int]:
    """Limit torch and the BLAS / OpenMP pools of numpy and scikit-learn alike.

    Parameters
    ----------
    threads : int or None
        None keeps torch's setting and gives the BLAS as many.

    Yields
    ------
    int
        The number of threads.
    """
    previous = torch.get_num_threads()
    threads = threads or previous
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield threads
    finally:
        torch.set_num_threads(previous)


def initial_parameters(X, n_components: int, covariance_type: str) -> dict:
    """scikit-learn's k-means initialisation, as ``*_init`` keyword arguments.

    ``max_iter=0`` stops scikit-learn right after its initialisation.
    """
    init = GaussianMixture(
        n_components, covariance_type=covariance_type, max_iter=0, random_state=0
    ).fit(X)
    return dict(
        weights_init=init.weights_,
        means_init=init.means_,
        precisions_init=init.precisions_,
    )


def cast_parameters(init: dict, dtype) -> dict:
    """The ``*_init`` arrays in ``dtype``, as both estimators expect for float32."""
    return {name: np.asarray(value).astype(dtype) for name, value in init.items()}
