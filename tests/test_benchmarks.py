"""The benchmark scripts still run: their ``--quick`` smoke modes, end to end.

The scripts are not package modules; each runs as a subprocess, the way a
reader runs it. Beyond the exit status, the tests read the printed tables for
what must hold at any size: every section printed, no side failed, and the
models that must be equal (ours against scikit-learn from the same start,
Dask and gloo against one process) have equal lower bounds.
"""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: float32 fits of a few thousand rows, same start, three iterations.
BOUND_TOLERANCE = 1e-5

#: nats per sample between one pass of 10 partial_fit batches and fit.
STREAMING_GAP = 0.2


def run_script(name, *arguments):
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, (
        completed.stdout[-2000:] + completed.stderr[-4000:]
    )
    return completed.stdout


def table_rows(output, title):
    """The rows of the table whose header line starts with ``## title``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {title}"))
    rows = []
    for line in lines[start + 3 :]:
        if not line.strip() or line.startswith(("  note:", "(", "##")):
            break
        rows.append(line.split())
    return rows


def test_bench_scaling_quick_prints_every_section_with_equal_models():
    pytest.importorskip("distributed")
    output = run_script(
        "bench_scaling.py", "--quick", "--threads", "1", "--skip-torchgmm"
    )

    scaling = table_rows(output, "scaling")
    assert {row[0] for row in scaling} == {"full", "diag"}
    assert sum(row[3] == "memmap:" for row in scaling) == 2
    assert len(scaling) == 6
    # The 13th column: ours against scikit-learn (in memory) from one start.
    assert all(float(row[12]) < BOUND_TOLERANCE for row in scaling)

    distributed = table_rows(output, "distributed")
    assert [" ".join(row[2:-5]) for row in distributed] == [
        "one process",
        "Dask LocalCluster",
        "torch.distributed gloo",
    ]
    assert all(float(row[-1]) < BOUND_TOLERANCE for row in distributed)

    # One streamed pass of 10 batches: close to the full-batch fit, if not
    # within the 0.02 nats/sample that 100 batches of 1e4 rows reach.
    streaming = table_rows(output, "streaming")
    assert [row[0] for row in streaming] == ["full", "diag"]
    assert all(row[-1] == "10" for row in streaming)
    assert all(abs(float(row[5])) < STREAMING_GAP for row in streaming)

    small = table_rows(output, "small data")
    assert {row[1] for row in small} == {"full", "tied", "diag", "spherical"}
    assert all(float(row[-1]) < BOUND_TOLERANCE for row in small)

    assert "## digits to convergence" in output
    assert "## targets" in output
    assert "failed" not in output


def test_bench_gmm_quick_runs():
    output = run_script("bench_gmm.py", "--quick", "--threads", "1")
    rows = [line.split() for line in output.splitlines() if line.startswith("n=")]
    # Four configurations, two dtypes, two runs each; relative bound difference.
    assert len(rows) == 16
    assert all(float(row[-3]) < BOUND_TOLERANCE for row in rows)


def test_scaling_ratio_tells_timing_noise_from_a_failed_side(monkeypatch):
    # A quick run on a busy machine can time M iterations no slower than one:
    # that is no measurement (NaN, printed as "not measured"), not a failed
    # side (None), which the smoke test above forbids.
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its _common
    spec = importlib.util.spec_from_file_location("bench_scaling", BENCHMARKS / "bench_scaling.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_scaling", bench)  # its dataclasses look it up
    spec.loader.exec_module(bench)
    timed = bench.Timing(iterations=3, one=1.0, many=2.0)
    noisy = bench.Timing(iterations=3, one=1.0, many=0.9)
    failed = bench.Timing(iterations=3, error="MemoryError")
    assert bench.ratio(timed, timed) == 1.0
    assert math.isnan(bench.ratio(timed, noisy)) and math.isnan(bench.ratio(noisy, timed))
    assert bench.ratio(failed, timed) is None and bench.ratio(timed, None) is None


def test_bench_clustering_runs_chosen_rows_on_a_few_feature_set():
    output = run_script(
        "bench_clustering.py", "--datasets", "sheared2", "--seeds", "1", "--peers",
        "--methods", "defaults",
    )
    rows = {" ".join(row[: row.index("±") - 1]): row for row in table_rows(output, "sheared2")}
    assert set(rows) == {
        "KMeans",
        "GaussianMixture raw",
        "PCA(10)+GaussianMixture",
        "VAETransformer(10)+GaussianMixture",
        "VariationalGMMPrior (defaults)",
    }
    # Anisotropic 2-D clusters: the defaults run plain VaDE in a 2-D latent
    # space and separate them as the raw mixture does (1.00 when calibrating;
    # a 10-D latent space with the neighbour graph gives 0.77).
    defaults = rows["VariationalGMMPrior (defaults)"]
    assert float(defaults[defaults.index("±") - 1]) >= 0.95


def test_bench_clustering_runs_every_fit_on_the_threads_asked_for(monkeypatch):
    # A peer that changes torch's thread count (umap-learn does, through
    # numba's OpenMP) must not change it for the fits after it.
    import numpy as np
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_clustering", BENCHMARKS / "bench_clustering.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_clustering", bench)
    spec.loader.exec_module(bench)
    seen = []

    class ChangesThreads:
        def fit_predict(self, X):
            seen.append(torch.get_num_threads())
            torch.set_num_threads(seen[-1] + 1)
            return np.arange(len(X)) % 2

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        X, y = np.zeros((6, 2)), np.arange(6) % 2
        scores = bench.evaluate(lambda k, n_features, seed: ChangesThreads(), X, y, [0, 1, 2])
        assert seen == [1, 1, 1] and torch.get_num_threads() == 1
        assert scores["acc"] == [1.0, 1.0, 1.0]
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def bench_vade_starts(monkeypatch):
    """benchmarks/bench_vade_starts.py as a module (it imports bench_clustering)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(
        "bench_vade_starts", BENCHMARKS / "bench_vade_starts.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_vade_starts", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bench_vade_starts_one_start_is_the_fit_that_keeps_it(bench_vade_starts):
    # The benchmark scores each start by fitting it alone: that fit must be
    # the estimator's own fit when the start wins, and every start's
    # entropy the one the estimator compared.
    import numpy as np
    import torch
    from sklearn.datasets import make_blobs

    from sklearn_vae import VariationalGMMPrior

    X, _ = make_blobs(120, n_features=6, centers=3, random_state=0)
    params = dict(
        n_components=3, n_pretrain=2, pretrain_epochs=4, max_iter=3, n_init=2,
        hidden_layer_sizes=(16,), latent_dim=2, random_state=3,
    )
    both = VariationalGMMPrior(**params).fit(X)
    winner = int(np.argmax(both.pretrain_entropies_))
    assert winner == 1  # this seed covers a later start loaded into the model
    for start in (0, 1):
        alone = bench_vade_starts._OneStart(**{**params, "n_pretrain": 1})
        alone.only_start = start
        alone.fit(X)
        assert alone.pretrain_entropies_[0] == both.pretrain_entropies_[start]
        if start == winner:
            np.testing.assert_array_equal(alone.labels_, both.labels_)
            for name, value in both.encoder_.state_dict().items():
                assert torch.equal(alone.encoder_.state_dict()[name], value)


def test_bench_vade_starts_scores_rows_under_the_best_matching(bench_vade_starts):
    import numpy as np

    y = np.array([5, 5, 5, 7, 7, 9, 9])
    # Clusters named differently from the classes, one more cluster (3) than
    # classes, which no class is matched to, and one row of class 9 in the
    # cluster of class 7.
    labels = np.array([2, 2, 3, 0, 0, 0, 8])
    np.testing.assert_array_equal(
        bench_vade_starts.correct_rows(y, labels), [True, True, False, True, True, False, True]
    )
    reference = np.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(
        bench_vade_starts.aligned_to(reference, np.array([2, 2, 0, 0, 1, 0]), 3),
        [0, 0, 1, 1, 2, 1],
    )
    # Ties go to the first start with the largest entropy and, in the vote,
    # to the tie-breaking start's cluster.
    assert bench_vade_starts.kept_start(np.array([1.0, 2.0, 2.0])) == 1
    aligned = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])
    np.testing.assert_array_equal(bench_vade_starts.majority_vote(aligned, 1), [0, 2, 1])
    # Row 2 sits among the other class: its three nearest neighbours are rows 3-5.
    X = np.array([[0.0], [0.1], [0.95], [1.0], [1.1], [1.2]])
    np.testing.assert_array_equal(
        bench_vade_starts.neighbors_agree(X, np.array([4, 4, 4, 6, 6, 6]), 3),
        [True, True, False, True, True, True],
    )


def test_bench_vade_starts_runs_and_its_oracle_bounds_every_rule():
    import numpy as np

    output = run_script(
        "bench_vade_starts.py", "--dataset", "wine", "--seeds", "2", "--starts", "2",
        "--jobs", "2", "--params", '{"pretrain_epochs": 5, "max_iter": 5}',
    )
    lines = output.splitlines()
    per_seed = [line.split() for line in lines[2:4]]
    assert [int(row[0]) for row in per_seed] == [0, 1]
    kept = {}
    for line in lines:
        fields = line.split()
        if fields and fields[0] in ("1", "2", "oracle") and "±" in fields:
            kept[fields[0]] = float(fields[1])
    # One start keeps start 0: the mean of the first accuracy column.
    assert math.isclose(kept["1"], np.mean([float(row[3]) for row in per_seed]), abs_tol=1e-4)
    assert kept["oracle"] >= max(kept["1"], kept["2"])
    assert "of the kept fit's errors are made by every start" in output
    assert "the input's 15 nearest neighbours are mostly of a row's own class" in output
    by_class = output.split("errors by class (mean per seed): ")[1].splitlines()[0]
    assert [item.split(":")[0] for item in by_class.split(", ")] == ["0", "1", "2"]
    # The errors of the fit kept from both starts are its misassigned rows (178 in wine).
    errors = sum(float(item.split(": ")[1]) for item in by_class.split(", "))
    assert math.isclose(errors / 178, 1 - kept["2"], abs_tol=2e-3)


def _running(pid):
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_bench_vade_starts_workers_end_when_the_benchmark_is_killed(tmp_path):
    # A benchmark that dies without shutting its pool down (as under
    # SIGKILL) must not leave its workers behind.
    import time

    parent = tmp_path / "parent.py"
    parent.write_text(
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "import bench_vade_starts\n"
        "def pid_after(seconds):\n"
        "    time.sleep(seconds)\n"
        "    return os.getpid()\n"
        "if __name__ == '__main__':\n"
        "    pool = bench_vade_starts.worker_pool(2, 1)\n"
        "    print(*set(pool.map(pid_after, [1.0, 1.0])), flush=True)\n"
        "    os._exit(9)\n"
    )
    # Files, not pipes: workers left behind would hold a pipe open.
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        returncode = subprocess.run(
            [sys.executable, str(parent)], stdout=out, stderr=err, timeout=120
        ).returncode
    assert returncode == 9, (tmp_path / "err").read_text()[-2000:]
    workers = [int(pid) for pid in (tmp_path / "out").read_text().split()]
    assert len(workers) == 2
    deadline = time.monotonic() + 30
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_running, workers))
