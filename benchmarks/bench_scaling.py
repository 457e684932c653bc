"""EMGaussianMixture from 1e3 to 1e7 rows: time per iteration and peak memory.

Four sections, each printed as a table as it runs:

``scaling``
    n = 1e3 ... 1e7 rows of d = 32 features, k = 16 components, 'full' and
    'diag', float32. scikit-learn's ``GaussianMixture`` and ``torchgmm``
    (if installed; a benchmark peer, never a dependency) run side by side
    wherever they fit in memory. The largest size is also fitted from a
    ``numpy.memmap`` (streamed EM), in a fresh process, so that its peak
    anonymous memory is its own. The slope of log(time per iteration) on
    log(n) from 1e5 up is fitted for ours.
``distributed``
    At 1e6 rows: one process against a Dask ``LocalCluster`` (2 workers x 1
    thread, the array persisted on the workers before timing) and 2
    ``torch.distributed`` gloo ranks (1 thread each, each holding half).
``streaming``
    One pass of ``partial_fit`` (stepwise EM) over 1e6 rows in batches of
    1e4, its first batch initialising with ``init_params``, against the
    full-batch ``fit`` from the shared k-means start run to convergence: the
    mean log-likelihood of each on all the rows, their gap (target: at most
    0.02 nats per sample), and the seconds each took.
``small``
    Every covariance type at 1e3 and 1e4 rows (float32 and float64), and the
    demo's digits (1797 x 64 / 16, float64, k = 10, started from one
    scikit-learn iteration after its k-means as ``sklearn-vae demo`` does),
    per iteration and, for the digits, to convergence as in the demo's table.

Time per iteration. Every side fits from the same initial parameters
(scikit-learn's k-means start, computed once per covariance type) with
``tol=0``, once for one iteration and once for M; the time per iteration is
``(t_M - t_1) / (M - 1)``, so what a fit does once (validation, copies,
centring, scikit-learn's final E-step, Lightning's trainer setup and
torchgmm's initialisation passes) cancels; it is reported as "setup".
``--repeats`` alternates the sides and keeps each one's fastest run (the fits
of 1e7 rows run once). torchgmm takes only the means (it derives weights and
covariances from hard assignments), so its bound differs slightly.

Memory. Peak ``RssAnon`` above its level before the M-iteration fit, sampled
every 2 ms in a thread: the process's own allocations, without the page
cache of a mapped file (for the memmap fit the whole process's peak is shown
too). For Dask, the largest worker's; for gloo, the largest rank's.

Data. make_blobs (cluster_std 1, centres drawn in the (-10, 10) box) written
chunk by chunk to one float32 ``.npy`` in a temporary directory; every size
takes its leading rows, so the sizes are samples of one distribution.

Usage::

    python benchmarks/bench_scaling.py                  # everything (long)
    python benchmarks/bench_scaling.py --quick          # a smoke run, < 1 minute
    python benchmarks/bench_scaling.py --threads 1      # one thread per side
    python benchmarks/bench_scaling.py --sizes 1e5 1e6 --sections scaling
    python benchmarks/bench_scaling.py --skip-sklearn-above 1e6

With ``--threads`` above the free cores, every parallel region waits for a
descheduled thread (see ``bench_gmm.py``); on a shared machine compare
``--threads 1`` figures, and ratios measured in one run only.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sklearn
import torch
import torch.multiprocessing as mp
from sklearn.datasets import load_digits, make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from sklearn_vae import EMGaussianMixture

from _common import (
    PeakMemory,
    add_common_arguments,
    cast_parameters,
    initial_parameters,
    limited_threads,
)

SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
N_FEATURES = 32
N_COMPONENTS = 16
SCALING_TYPES = ("full", "diag")
SMALL_SIZES = (1_000, 10_000)
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
DISTRIBUTED_SIZE = 1_000_000
STREAMING_SIZE = 1_000_000
STREAMING_BATCH = 10_000
STREAMING_TOLERANCE = 0.02
QUICK_STREAMING_SIZE = 20_000
DIGITS_COMPONENTS = 10
#: The slope of log(time per iteration) on log(n) is fitted from this size up.
SLOPE_FROM = 100_000
SLOPE_TARGET = (0.9, 1.1)
#: The common start is scikit-learn's k-means on this many leading rows.
INITIALIZATION_ROWS = 100_000
#: Rows generated per make_blobs call when writing the data file.
GENERATION_ROWS = 1_000_000
#: Rows of the untimed fit that imports and warms up each side first.
WARM_UP_ROWS = 10_000
#: Fits of at least this many rows run once whatever --repeats says.
SINGLE_RUN_SIZE = 10_000_000
QUICK_SIZES = (1_000, 2_000)
QUICK_ITERATIONS = 3
GLOO_RANKS = 2
DASK_WORKERS = 2
DASK_BLOCKS = 8
#: Only a share of the available memory is planned for one side's fit.
MEMORY_SHARE = 0.7
#: scikit-learn's and torchgmm's temporaries, in arrays of n x d and n x k
#: elements: per-component (n, d) products and differences in the E- and
#: 'full' M-steps, and the (n, k) log-probabilities, their log-sum-exp and
#: responsibilities (read off their code; an estimate to skip what cannot fit).
PEER_TEMPORARIES = (3, 6)

#: A side's fit: (X, max_iter) -> (mean log-likelihood per sample, iterations).
Fit = Callable[[Any, int], tuple[float, int]]


def iterations_for(n_samples: int, quick: bool) -> int:
    """EM iterations of the long fit: enough for a few seconds at small n."""
    if quick:
        return QUICK_ITERATIONS
    return int(np.clip(2_000_000 // n_samples, 3, 50))


# --------------------------------------------------------------------------- #
# The sides
# --------------------------------------------------------------------------- #
def estimator_parameters(init: dict, covariance_type: str, dtype, tol=0.0) -> dict:
    """Keyword arguments both scikit-learn-style estimators take."""
    return dict(
        n_components=len(init["weights_init"]),
        covariance_type=covariance_type,
        tol=tol,
        **cast_parameters(init, dtype),
    )


def sklearn_fit(parameters: dict) -> Fit:
    def fit(X, max_iter):
        gmm = GaussianMixture(max_iter=max_iter, **parameters).fit(X)
        return float(gmm.lower_bound_), gmm.n_iter_

    return fit


def ours_fit(parameters: dict, device: str = "cpu") -> Fit:
    def fit(X, max_iter):
        gmm = EMGaussianMixture(max_iter=max_iter, device=device, **parameters)
        gmm.fit(X)
        return float(gmm.lower_bound_), gmm.n_iter_

    return fit


def torchgmm_available() -> str | None:
    """None if torchgmm imports, else why not."""
    try:
        import torchgmm.bayes  # noqa: F401
    except Exception as error:  # any failure to import is reported, not raised
        return f"{type(error).__name__}: {error}"
    return None


def torchgmm_fit(parameters: dict, device: str = "cpu") -> Fit:
    """torchgmm's GaussianMixture from our means, on one CPU or GPU.

    With the whole data as one batch torchgmm 0.1.4 takes its mini-batch
    path, two passes per EM iteration (``is_batch_training`` is set when
    there is one batch); its ``num_iter_`` still counts EM iterations.
    """
    from torchgmm.bayes import GaussianMixture as TorchGaussianMixture

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
        # Lightning's own deprecation notices, once per trainer.
        warnings.filterwarnings("ignore", module=name.replace(".", r"\."))
    means = torch.from_numpy(np.asarray(parameters["means_init"]))

    def fit(X, max_iter):
        gmm = TorchGaussianMixture(
            parameters["n_components"],
            covariance_type=parameters["covariance_type"],
            init_means=means,
            convergence_tolerance=0.0,
            trainer_params=dict(
                max_epochs=max_iter,
                accelerator="gpu" if device.startswith("cuda") else "cpu",
                devices=1,
                logger=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                enable_checkpointing=False,
            ),
        )
        gmm.fit(torch.from_numpy(np.asarray(X)))
        return -float(gmm.nll_), int(gmm.num_iter_)

    return fit


# --------------------------------------------------------------------------- #
# Measuring
# --------------------------------------------------------------------------- #
@dataclass
class Timing:
    """The fastest one- and M-iteration fits of one side, and its memory."""

    iterations: int
    one: float = math.inf
    many: float = math.inf
    peak_mb: float = 0.0
    total_mb: float = 0.0
    lower_bound: float = math.nan
    #: Why the side failed, if it did.
    error: str | None = None

    @property
    def per_iteration(self) -> float:
        """Seconds per EM iteration, fixed costs removed (NaN if it failed)."""
        if self.error is not None:
            return math.nan
        return max(self.many - self.one, 0.0) / (self.iterations - 1)

    @property
    def setup(self) -> float:
        """Seconds a fit spends outside its iterations."""
        return self.one - self.per_iteration


def anonymous_memory() -> PeakMemory:
    return PeakMemory("anonymous")


def timed(fit: Fit, X, max_iter: int, memory) -> tuple[float, float, Any]:
    """Seconds and bound of one fit, inside the ``memory`` sampler."""
    with warnings.catch_warnings():
        # tol=0 never converges, by design.
        warnings.simplefilter("ignore", ConvergenceWarning)
        with memory as sampler:
            start = time.perf_counter()
            lower_bound, n_iter = fit(X, max_iter)
            seconds = time.perf_counter() - start
    if n_iter != max_iter:
        raise RuntimeError(f"asked for {max_iter} iterations, the fit ran {n_iter}")
    return seconds, lower_bound, sampler


def measure(
    sides: dict[str, Fit],
    X,
    iterations: int,
    repeats: int,
    memory: Callable[[], Any] = anonymous_memory,
) -> dict[str, Timing]:
    """Alternate the sides' fits ``repeats`` times; keep each one's fastest.

    Each side first fits ``WARM_UP_ROWS`` rows once, untimed, so imports and
    first-call initialisations (thread pools, Dask workers) are not timed. A
    side whose fit raises (an ill-defined covariance, say) is recorded with
    its error and not run again; the others go on.
    """
    timings = {name: Timing(iterations) for name in sides}

    def run(name: str, fit: Fit, step: Callable[[Timing], None]) -> None:
        timing = timings[name]
        if timing.error is not None:
            return
        try:
            step(timing)
        except (ValueError, RuntimeError) as error:
            timing.error = f"{type(error).__name__}: {error}"

    def warm_up(fit: Fit) -> Callable[[Timing], None]:
        return lambda timing: timed(fit, X[:WARM_UP_ROWS], 1, nullcontext())

    def repeat(fit: Fit) -> Callable[[Timing], None]:
        def step(timing: Timing) -> None:
            seconds, timing.lower_bound, sampler = timed(fit, X, iterations, memory())
            timing.many = min(timing.many, seconds)
            timing.peak_mb = max(timing.peak_mb, sampler.megabytes)
            timing.total_mb = max(
                timing.total_mb, getattr(sampler, "total_megabytes", 0)
            )
            timing.one = min(timing.one, timed(fit, X, 1, nullcontext())[0])

        return step

    for name, fit in sides.items():
        run(name, fit, warm_up(fit))
    for _ in range(repeats):
        for name, fit in sides.items():
            run(name, fit, repeat(fit))
    return timings


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemAvailable line")


def peer_bytes(n_samples: int, itemsize: int) -> int:
    """About the temporaries of one scikit-learn or torchgmm iteration."""
    per_feature, per_component = PEER_TEMPORARIES
    return (
        (per_feature * N_FEATURES + per_component * N_COMPONENTS) * n_samples * itemsize
    )


def relative_difference(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
def write_blobs(path: str, n_samples: int) -> np.memmap:
    """Write make_blobs rows to a float32 .npy chunk by chunk; return its map."""
    centers = np.random.RandomState(0).uniform(-10.0, 10.0, (N_COMPONENTS, N_FEATURES))
    X = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(n_samples, N_FEATURES)
    )
    for chunk, start in enumerate(range(0, n_samples, GENERATION_ROWS)):
        stop = min(start + GENERATION_ROWS, n_samples)
        X[start:stop], _ = make_blobs(
            stop - start, centers=centers, cluster_std=1.0, random_state=1 + chunk
        )
    X.flush()
    return np.load(path, mmap_mode="r")


# --------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------- #
def milliseconds(timing: Timing | None) -> str:
    if timing is None:
        return "-"
    if timing.error is not None:
        return "failed"
    return f"{timing.per_iteration * 1e3:.3f}"


def ratio(theirs: Timing | None, ours: Timing | None) -> float | None:
    """Their seconds per iteration over ours: None if a side failed.

    NaN if either side's per-iteration time is zero: its M-iteration fit was
    no slower than its one-iteration fit, which timing noise does to the few
    iterations of a quick run on a busy machine. That is no measurement, and
    no failure either.
    """
    if theirs is None or ours is None or theirs.error or ours.error:
        return None
    if ours.per_iteration == 0 or theirs.per_iteration == 0:
        return math.nan
    return theirs.per_iteration / ours.per_iteration


def number(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


@dataclass
class Table:
    """A plain-text table printed row by row, as the measurements come."""

    columns: list[tuple[str, int]]
    notes: list[str] = field(default_factory=list)

    def header(self, title: str) -> None:
        print(f"\n## {title}")
        line = " ".join(f"{name:>{width}}" for name, width in self.columns)
        print(line)
        print("-" * len(line), flush=True)

    def row(self, *cells) -> None:
        print(
            " ".join(
                f"{cell:>{width}}" for cell, (_, width) in zip(cells, self.columns)
            ),
            flush=True,
        )

    def note_failures(self, label: str, timings: dict[str, Timing | None]) -> None:
        for name, timing in timings.items():
            if timing is not None and timing.error is not None:
                self.notes.append(f"{label}: {name} failed: {timing.error}")

    def footer(self) -> None:
        for note in self.notes:
            print(f"  note: {note}")


# --------------------------------------------------------------------------- #
# Section 1: scaling in n
# --------------------------------------------------------------------------- #
def memmap_timings(
    path: str,
    n_samples: int,
    starts: dict[str, dict],
    iterations: int,
    threads: int,
    device: str,
) -> dict[str, Timing]:
    """Ours on the leading rows of the mapped file, in this (fresh) process."""
    with limited_threads(threads):
        X = np.load(path, mmap_mode="r")[:n_samples]
        return {
            covariance_type: measure(
                {"memmap": ours_fit(parameters, device)}, X, iterations, 1
            )["memmap"]
            for covariance_type, parameters in starts.items()
        }


class CommonStarts:
    """scikit-learn's k-means start on the leading min(n, INITIALIZATION_ROWS) rows.

    Computed once per row count and covariance type: from 1e5 rows up, every
    size and every section start from the same parameters.
    """

    def __init__(self, data: np.memmap) -> None:
        self.data = data
        self._starts: dict[tuple[int, str], dict] = {}

    def __call__(self, n_samples: int, covariance_type: str) -> dict:
        key = (min(n_samples, INITIALIZATION_ROWS), covariance_type)
        if key not in self._starts:
            init = initial_parameters(
                np.asarray(self.data[: key[0]]), N_COMPONENTS, covariance_type
            )
            self._starts[key] = estimator_parameters(init, covariance_type, np.float32)
        return self._starts[key]


@dataclass
class ScalingResult:
    per_iteration: dict[str, dict[int, float]] = field(default_factory=dict)
    ratios: list[tuple[str, float]] = field(default_factory=list)
    memmap: dict[str, Timing] = field(default_factory=dict)


def run_scaling(
    data: np.memmap, path: str, starts_for: CommonStarts, options
) -> ScalingResult:
    table = Table(
        [
            ("cov", 5),
            ("n", 9),
            ("iters", 5),
            ("sk ms/it", 11),
            ("ours ms/it", 10),
            ("sk/ours", 7),
            ("tgmm ms/it", 11),
            ("tgmm/ours", 9),
            ("our setup s", 11),
            ("sk MB", 7),
            ("ours MB", 7),
            ("tgmm MB", 7),
            ("bound diff", 10),
            ("tgmm diff", 9),
            ("load", 5),
        ]
    )
    table.header(
        f"scaling: d={N_FEATURES} k={N_COMPONENTS} float32, time per iteration "
        "(ms), peak RssAnon above baseline (MiB), bound diff = |ours - sk| / |sk|"
    )
    result = ScalingResult()
    torchgmm_missing = (
        "--skip-torchgmm" if options.skip_torchgmm else torchgmm_available()
    )
    if torchgmm_missing is not None:
        table.notes.append(f"torchgmm not run: {torchgmm_missing}")
    largest = max(options.sizes)
    starts, at_largest = {}, {}
    for covariance_type in SCALING_TYPES:
        ours_by_size = result.per_iteration.setdefault(covariance_type, {})
        for n_samples in options.sizes:
            parameters = starts_for(n_samples, covariance_type)
            if n_samples == largest:
                starts[covariance_type] = parameters
            X = np.array(data[:n_samples])
            sides = {
                "sklearn": sklearn_fit(parameters),
                "ours": ours_fit(parameters, options.device),
            }
            room = MEMORY_SHARE * available_bytes()
            need = peer_bytes(n_samples, X.itemsize)
            if options.skip_sklearn_above and n_samples > options.skip_sklearn_above:
                del sides["sklearn"]
            elif need > room:
                del sides["sklearn"]
                table.notes.append(
                    f"{covariance_type} n={n_samples}: scikit-learn skipped, needs "
                    f"~{need / 2**30:.1f} GiB of {room / 2**30:.1f} GiB"
                )
            if torchgmm_missing is None:
                if need > room:
                    table.notes.append(
                        f"{covariance_type} n={n_samples}: torchgmm skipped, needs "
                        f"~{need / 2**30:.1f} GiB of {room / 2**30:.1f} GiB"
                    )
                else:
                    sides["torchgmm"] = torchgmm_fit(parameters, options.device)
            iterations = iterations_for(n_samples, options.quick)
            repeats = 1 if n_samples >= SINGLE_RUN_SIZE else options.repeats
            timings = measure(sides, X, iterations, repeats)
            del X
            table.note_failures(f"{covariance_type} n={n_samples}", timings)
            sk, ours, tg = (
                timings.get(name) for name in ("sklearn", "ours", "torchgmm")
            )
            ours_by_size[n_samples] = ours.per_iteration
            if n_samples == largest:
                at_largest[covariance_type] = timings
            if sk is not None:
                result.ratios.append(
                    (f"{covariance_type} n={n_samples}", ratio(sk, ours))
                )
            table.row(
                covariance_type,
                n_samples,
                iterations,
                milliseconds(sk),
                milliseconds(ours),
                number(ratio(sk, ours), ".2f"),
                milliseconds(tg),
                number(ratio(tg, ours), ".2f"),
                f"{ours.setup:.3f}",
                number(sk and sk.peak_mb, ".0f"),
                f"{ours.peak_mb:.0f}",
                number(tg and tg.peak_mb, ".0f"),
                number(
                    sk and relative_difference(ours.lower_bound, sk.lower_bound), ".1e"
                ),
                number(
                    sk and tg and relative_difference(tg.lower_bound, sk.lower_bound),
                    ".1e",
                ),
                f"{os.getloadavg()[0]:.1f}",
            )
    if starts:
        iterations = iterations_for(largest, options.quick)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            result.memmap = pool.submit(
                memmap_timings,
                path,
                largest,
                starts,
                iterations,
                torch.get_num_threads(),
                options.device,
            ).result()
    for covariance_type, memmap in result.memmap.items():
        table.note_failures(f"{covariance_type} n={largest}", {"ours (memmap)": memmap})
        sk = at_largest[covariance_type].get("sklearn")
        tg = at_largest[covariance_type].get("torchgmm")
        table.row(
            covariance_type,
            largest,
            iterations,
            "memmap:",
            milliseconds(memmap),
            number(ratio(sk, memmap), ".2f"),
            "-",
            number(ratio(tg, memmap), ".2f"),
            f"{memmap.setup:.3f}",
            "-",
            f"{memmap.peak_mb:.0f}",
            "-",
            number(
                sk and relative_difference(memmap.lower_bound, sk.lower_bound), ".1e"
            ),
            "-",
            f"{os.getloadavg()[0]:.1f}",
        )
        table.notes.append(
            f"{covariance_type} n={largest} from a memmap, in a fresh process: "
            f"peak RssAnon {memmap.peak_mb:.0f} MiB above the level before the fit, "
            f"{memmap.total_mb:.0f} MiB for the whole process (torch included)"
        )
    table.footer()
    return result


def slope(by_size: dict[int, float]) -> float | None:
    """Least-squares slope of log(time per iteration) on log(n) from SLOPE_FROM up."""
    sizes = sorted(n for n in by_size if n >= SLOPE_FROM and math.isfinite(by_size[n]))
    if len(sizes) < 2:
        return None
    times = [by_size[n] for n in sizes]
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


# --------------------------------------------------------------------------- #
# Section 2: Dask and torch.distributed at 1e6
# --------------------------------------------------------------------------- #
def _one_torch_thread() -> None:
    import sklearn_vae  # noqa: F401  (imported once, before the first task)

    torch.set_num_threads(1)


def _start_worker_memory(dask_worker) -> None:
    dask_worker.benchmark_memory = PeakMemory("anonymous").__enter__()


def _stop_worker_memory(dask_worker) -> float:
    memory = dask_worker.benchmark_memory
    memory.__exit__(None, None, None)
    return memory.megabytes


class WorkerPeakMemory:
    """The largest peak RssAnon of the Dask workers during a block."""

    def __init__(self, client) -> None:
        self.client = client

    def __enter__(self) -> WorkerPeakMemory:
        self.client.run(_start_worker_memory)
        return self

    def __exit__(self, *exc_info) -> None:
        self.megabytes = max(self.client.run(_stop_worker_memory).values())


def dask_timings(X: np.ndarray, starts: dict[str, dict], options) -> dict[str, Timing]:
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    with (
        LocalCluster(
            n_workers=DASK_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_one_torch_thread)
        X_dask = da.from_array(
            X, chunks=(math.ceil(len(X) / DASK_BLOCKS), -1)
        ).persist()
        wait(X_dask)
        return {
            covariance_type: measure(
                {"dask": ours_fit(parameters, options.device)},
                X_dask,
                iterations_for(len(X), options.quick),
                options.repeats,
                memory=lambda: WorkerPeakMemory(client),
            )["dask"]
            for covariance_type, parameters in starts.items()
        }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _gloo_rank(rank, port, path, n_samples, starts, iterations, repeats, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=GLOO_RANKS)
    try:
        rows = np.array_split(np.arange(n_samples), GLOO_RANKS)[rank]
        shard = np.array(np.load(path, mmap_mode="r")[rows[0] : rows[-1] + 1])
        with limited_threads(1):
            timings = {
                covariance_type: measure(
                    {"gloo": ours_fit(parameters)}, shard, iterations, repeats
                )["gloo"]
                for covariance_type, parameters in starts.items()
            }
        queue.put((rank, timings))
    finally:
        torch.distributed.destroy_process_group()


def gloo_timings(
    path: str, n_samples: int, starts: dict[str, dict], options
) -> dict[str, Timing]:
    """Time both ranks; the slower rank's times and the larger peak count."""
    queue = mp.get_context("spawn").SimpleQueue()
    context = mp.spawn(
        _gloo_rank,
        args=(
            _free_port(),
            path,
            n_samples,
            starts,
            iterations_for(n_samples, options.quick),
            options.repeats,
            queue,
        ),
        nprocs=GLOO_RANKS,
        join=False,
    )
    while not context.join(timeout=1):
        pass
    ranks = [queue.get()[1] for _ in range(GLOO_RANKS)]
    merged = {}
    for covariance_type in starts:
        timings = [rank[covariance_type] for rank in ranks]
        merged[covariance_type] = Timing(
            timings[0].iterations,
            one=max(t.one for t in timings),
            many=max(t.many for t in timings),
            peak_mb=max(t.peak_mb for t in timings),
            lower_bound=timings[0].lower_bound,
            error=next((t.error for t in timings if t.error), None),
        )
    return merged


def run_distributed(
    data: np.memmap, path: str, starts_for: CommonStarts, options
) -> dict[str, float]:
    n_samples = options.distributed_size
    X = np.array(data[:n_samples])
    starts = {
        covariance_type: starts_for(n_samples, covariance_type)
        for covariance_type in options.distributed_types
    }
    table = Table(
        [
            ("cov", 5),
            ("n", 9),
            ("run", 22),
            ("ms/it", 10),
            ("single/run", 10),
            ("setup s", 8),
            ("peak MB", 8),
            ("bound diff", 10),
        ]
    )
    table.header(
        f"distributed at n={n_samples}: one process ({torch.get_num_threads()} "
        f"threads) vs Dask ({DASK_WORKERS} workers x 1 thread) vs gloo "
        f"({GLOO_RANKS} ranks x 1 thread); bound diff against the one process"
    )
    single = {
        covariance_type: measure(
            {"ours": ours_fit(parameters, options.device)},
            X,
            iterations_for(n_samples, options.quick),
            options.repeats,
        )["ours"]
        for covariance_type, parameters in starts.items()
    }
    runs = {"one process": single}
    try:
        runs["Dask LocalCluster"] = dask_timings(X, starts, options)
    except ImportError as error:
        table.notes.append(f"Dask not run: {error}")
    del X
    runs["torch.distributed gloo"] = gloo_timings(path, n_samples, starts, options)
    speedups = {}
    for covariance_type in starts:
        reference = single[covariance_type]
        for name, timings in runs.items():
            timing = timings[covariance_type]
            table.note_failures(f"{covariance_type} n={n_samples}", {name: timing})
            speedups[f"{covariance_type} {name}"] = ratio(reference, timing)
            table.row(
                covariance_type,
                n_samples,
                name,
                milliseconds(timing),
                number(ratio(reference, timing), ".2f"),
                f"{timing.setup:.3f}",
                f"{timing.peak_mb:.0f}",
                number(
                    relative_difference(timing.lower_bound, reference.lower_bound),
                    ".1e",
                ),
            )
    table.footer()
    return speedups


# --------------------------------------------------------------------------- #
# Section 3: one streamed pass of partial_fit
# --------------------------------------------------------------------------- #
def run_streaming(data: np.memmap, starts_for: CommonStarts, options) -> list:
    """One pass of partial_fit against the full-batch fit; returns verdicts."""
    n_samples, batch = options.streaming_size, options.streaming_batch
    table = Table(
        [
            ("cov", 5),
            ("n", 9),
            ("batch", 6),
            ("full ll", 10),
            ("online ll", 10),
            ("gap", 8),
            ("full s", 7),
            ("full iters", 10),
            ("online s", 8),
            ("batches", 7),
        ]
    )
    table.header(
        f"streaming: one pass of partial_fit vs fit, d={N_FEATURES} "
        f"k={N_COMPONENTS} float32, mean log-likelihood per sample on all rows"
    )
    X = np.asarray(data[:n_samples])
    verdicts = []
    for covariance_type in SCALING_TYPES:
        parameters = starts_for(n_samples, covariance_type)
        started = time.perf_counter()
        full = EMGaussianMixture(
            max_iter=200, device=options.device, **{**parameters, "tol": 1e-3}
        ).fit(X)
        full_seconds = time.perf_counter() - started
        online = EMGaussianMixture(
            N_COMPONENTS,
            covariance_type=covariance_type,
            random_state=0,
            device=options.device,
        )
        started = time.perf_counter()
        for first in range(0, n_samples, batch):
            online.partial_fit(X[first : first + batch])
        online_seconds = time.perf_counter() - started
        full_ll, online_ll = float(full.score(X)), float(online.score(X))
        gap = full_ll - online_ll
        table.row(
            covariance_type,
            n_samples,
            batch,
            f"{full_ll:.4f}",
            f"{online_ll:.4f}",
            f"{gap:.4f}",
            f"{full_seconds:.1f}",
            full.n_iter_,
            f"{online_seconds:.1f}",
            online.n_steps_,
        )
        verdicts.append(
            (
                f"{covariance_type}: one streamed pass within "
                f"{STREAMING_TOLERANCE} nats/sample of the full-batch fit",
                f"gap {gap:.4f} at n={n_samples}, batches of {batch}",
                abs(gap) <= STREAMING_TOLERANCE,
            )
        )
    table.footer()
    return verdicts


# --------------------------------------------------------------------------- #
# Section 4: small data, every covariance type
# --------------------------------------------------------------------------- #
def demo_start(X: np.ndarray, covariance_type: str) -> dict:
    """The demo's shared start: one scikit-learn iteration after its k-means."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = GaussianMixture(
            DIGITS_COMPONENTS,
            covariance_type=covariance_type,
            max_iter=1,
            random_state=0,
        ).fit(X)
    return dict(
        weights_init=start.weights_,
        means_init=start.means_,
        precisions_init=start.precisions_,
    )


def converged_seconds(
    parameters: dict, X, repeats: int
) -> dict[str, tuple[float, int]]:
    """Fastest whole fit to convergence (max_iter=500), as the demo's table times it."""
    sides = {"sklearn": sklearn_fit(parameters), "ours": ours_fit(parameters)}
    best = {name: (math.inf, 0) for name in sides}
    for _ in range(repeats):
        for name, fit in sides.items():
            start = time.perf_counter()
            n_iter = fit(X, 500)[1]
            seconds = time.perf_counter() - start
            best[name] = min(best[name], (seconds, n_iter))
    return best


def run_small(data: np.memmap, options) -> list[tuple[str, float]]:
    table = Table(
        [
            ("data", 14),
            ("cov", 9),
            ("dtype", 7),
            ("iters", 5),
            ("sk ms/it", 9),
            ("ours ms/it", 10),
            ("sk/ours", 7),
            ("sk setup", 8),
            ("our setup", 9),
            ("bound diff", 10),
        ]
    )
    table.header(
        "small data: every covariance type, time per iteration (ms), setup (ms)"
    )
    ratios = []

    def compare(name, X, covariance_type, init, iterations):
        parameters = estimator_parameters(init, covariance_type, X.dtype)
        timings = measure(
            {"sklearn": sklearn_fit(parameters), "ours": ours_fit(parameters)},
            X,
            iterations,
            options.repeats,
        )
        sk, ours = timings["sklearn"], timings["ours"]
        table.note_failures(f"{name} {covariance_type} {X.dtype}", timings)
        ratios.append((f"{name} {covariance_type} {X.dtype}", ratio(sk, ours)))
        table.row(
            name,
            covariance_type,
            X.dtype.name,
            iterations,
            milliseconds(sk),
            milliseconds(ours),
            number(ratio(sk, ours), ".2f"),
            f"{sk.setup * 1e3:.2f}",
            f"{ours.setup * 1e3:.2f}",
            number(relative_difference(ours.lower_bound, sk.lower_bound), ".1e"),
        )

    for n_samples in options.small_sizes:
        for dtype in (np.float32, np.float64):
            X = np.array(data[:n_samples], dtype=dtype)  # a copy: not a view of the map
            for covariance_type in COVARIANCE_TYPES:
                init = initial_parameters(X, N_COMPONENTS, covariance_type)
                compare(
                    f"n={n_samples}",
                    X,
                    covariance_type,
                    init,
                    iterations_for(n_samples, options.quick),
                )
    digits = (load_digits().data / 16.0).astype(np.float64)
    demo_types = ("diag",) if options.quick else COVARIANCE_TYPES
    converged = []
    for covariance_type in demo_types:
        init = demo_start(digits, covariance_type)
        compare(
            "digits",
            digits,
            covariance_type,
            init,
            iterations_for(len(digits), options.quick),
        )
        parameters = estimator_parameters(init, covariance_type, digits.dtype, tol=1e-3)
        converged.append(
            (covariance_type, converged_seconds(parameters, digits, options.repeats))
        )
    table.footer()
    print(
        "\n## digits to convergence from the demo's start (tol=1e-3), "
        "whole fits as the demo times them"
    )
    print(f"{'cov':>9} {'sk s':>7} {'ours s':>7} {'sk/ours':>7} {'iters':>9}")
    for covariance_type, best in converged:
        (sk_seconds, sk_iter), (our_seconds, our_iter) = best["sklearn"], best["ours"]
        ratios.append((f"digits {covariance_type} converged", sk_seconds / our_seconds))
        print(
            f"{covariance_type:>9} {sk_seconds:>7.3f} {our_seconds:>7.3f} "
            f"{sk_seconds / our_seconds:>7.2f} {sk_iter:>4}/{our_iter:<4}",
            flush=True,
        )
    return ratios


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def size(text: str) -> int:
    """'1e6' or '1000000' -> 1000000."""
    return int(float(text))


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run, under a minute"
    )
    parser.add_argument(
        "--sizes", type=size, nargs="+", default=None, help="scaling sizes"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=("scaling", "distributed", "streaming", "small"),
        default=("scaling", "distributed", "streaming", "small"),
    )
    parser.add_argument(
        "--skip-sklearn-above",
        type=size,
        default=None,
        metavar="N",
        help="no scikit-learn fits above N rows (it runs wherever it fits otherwise)",
    )
    parser.add_argument(
        "--distributed-size",
        type=size,
        default=None,
        help="rows of the Dask and gloo fits",
    )
    parser.add_argument(
        "--streaming-size", type=size, default=None, help="rows of the streamed pass"
    )
    parser.add_argument(
        "--streaming-batch", type=size, default=None, help="rows per partial_fit"
    )
    parser.add_argument("--skip-torchgmm", action="store_true", help="no torchgmm fits")
    parser.add_argument(
        "--device", default="cpu", help="device of ours and of torchgmm"
    )
    add_common_arguments(parser)
    options = parser.parse_args(argv)
    if options.sizes is None:
        options.sizes = QUICK_SIZES if options.quick else SIZES
    if options.distributed_size is None:
        options.distributed_size = (
            max(QUICK_SIZES) if options.quick else DISTRIBUTED_SIZE
        )
    if options.streaming_size is None:
        options.streaming_size = (
            QUICK_STREAMING_SIZE if options.quick else STREAMING_SIZE
        )
    if options.streaming_batch is None:
        options.streaming_batch = (
            options.streaming_size // 10 if options.quick else STREAMING_BATCH
        )
    options.small_sizes = QUICK_SIZES[:1] if options.quick else SMALL_SIZES
    # The quick run starts the same clusters and ranks for one type only.
    options.distributed_types = SCALING_TYPES[1:] if options.quick else SCALING_TYPES
    return options


def targets(scaling: ScalingResult | None, ratios: list) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the issue's targets that this run measured."""
    verdicts = []
    if scaling is not None:
        for covariance_type, by_size in scaling.per_iteration.items():
            fitted = slope(by_size)
            if fitted is None:
                continue
            with_memmap = dict(by_size)
            if covariance_type in scaling.memmap:
                memmap = scaling.memmap[covariance_type]
                with_memmap[max(by_size)] = memmap.per_iteration
            verdicts.append(
                (
                    f"{covariance_type}: slope of log(s/it) on log(n) from "
                    f"{SLOPE_FROM:.0e} in {SLOPE_TARGET}",
                    f"{fitted:.3f} in memory, {number(slope(with_memmap), '.3f')} "
                    "with the largest size from the memmap",
                    SLOPE_TARGET[0] <= fitted <= SLOPE_TARGET[1],
                )
            )
        for covariance_type, memmap in scaling.memmap.items():
            verdicts.append(
                (
                    f"{covariance_type}: the largest fit from a memmap completes",
                    f"{memmap.per_iteration:.3f} s/it, peak RssAnon "
                    f"+{memmap.peak_mb:.0f} MiB",
                    memmap.error is None,
                )
            )
    for name, value in ratios:
        if value is None:
            verdicts.append((f"ratio vs scikit-learn, {name}", "a side failed", False))
        elif math.isnan(value):
            verdicts.append(
                (
                    f"ratio vs scikit-learn, {name}",
                    "not measured: the iterations took no time beside the fixed costs "
                    "(timing noise; rerun on a quiet machine or with more iterations)",
                    False,
                )
            )
        elif value < 1.0:
            verdicts.append((f"ratio vs scikit-learn, {name}", f"{value:.3f}", False))
    measured = [value for _, value in ratios if value is not None and not math.isnan(value)]
    if measured:
        verdicts.append(
            (
                "ratio vs scikit-learn >= 1 everywhere",
                f"lowest {min(measured):.3f}",
                min(measured) >= 1.0,
            )
        )
    return verdicts


def main(argv=None) -> None:
    options = parse_arguments(argv)
    with (
        limited_threads(options.threads) as threads,
        tempfile.TemporaryDirectory() as tmp,
    ):
        print(
            f"torch {torch.__version__} ({threads} threads), scikit-learn "
            f"{sklearn.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}"
        )
        print("ratios: time per iteration of the other side / ours (> 1: ours faster)")
        n_rows = max(
            [
                *options.sizes,
                options.distributed_size,
                options.streaming_size,
                *options.small_sizes,
            ]
            + [WARM_UP_ROWS]
        )
        path = os.path.join(tmp, "blobs.npy")
        data = write_blobs(path, n_rows)
        starts_for = CommonStarts(data)
        scaling, ratios = None, []
        if "scaling" in options.sections:
            started = time.perf_counter()
            scaling = run_scaling(data, path, starts_for, options)
            ratios += scaling.ratios
            print(f"(scaling: {time.perf_counter() - started:.0f} s)")
        if "distributed" in options.sections:
            started = time.perf_counter()
            run_distributed(data, path, starts_for, options)
            print(f"(distributed: {time.perf_counter() - started:.0f} s)")
        streaming = []
        if "streaming" in options.sections:
            started = time.perf_counter()
            streaming = run_streaming(data, starts_for, options)
            print(f"(streaming: {time.perf_counter() - started:.0f} s)")
        if "small" in options.sections:
            started = time.perf_counter()
            ratios += run_small(data, options)
            print(f"(small: {time.perf_counter() - started:.0f} s)")
        print("\n## targets")
        for name, value, met in [*targets(scaling, ratios), *streaming]:
            print(f"{'met ' if met else 'MISS'}  {name}: {value}")
        print(f"load average at the end {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
