import threading
import time

import numpy as np
import pytest
import torch

from sklearn_vae._backend import (
    TaskCancelled,
    compute_dtype,
    make_generator,
    map_row_chunks,
    numpy_dtype,
    resolve_device,
    run_concurrently,
    seed_from_random_state,
    to_numpy,
    to_tensor,
)


@pytest.mark.parametrize("name", ["cpu", "CPU", " cpu "])
def test_resolve_device_cpu(name):
    assert resolve_device(name) == torch.device("cpu")


def test_resolve_device_accepts_torch_device():
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_resolve_device_auto_prefers_accelerator():
    expected = "cuda" if torch.cuda.is_available() else None
    got = resolve_device("auto")
    if expected:
        assert got.type == "cuda"
    else:
        assert got.type in {"cpu", "mps"}


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", ""])
def test_resolve_device_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="Unknown device"):
        resolve_device(name)


def test_resolve_device_rejects_non_string():
    with pytest.raises(TypeError, match="device must be"):
        resolve_device(0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_resolve_device_missing_cuda_says_what_to_do():
    with pytest.raises(ValueError, match="CUDA is not available.*device='cpu'"):
        resolve_device("cuda:0")


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (np.float32, torch.float32),
        (np.float64, torch.float64),
        (np.int64, torch.float64),
        (np.float16, torch.float64),
        (bool, torch.float64),
    ],
)
def test_compute_dtype_keeps_float32_only(dtype, expected):
    assert compute_dtype(np.zeros(2, dtype=dtype)) == expected
    assert numpy_dtype(compute_dtype(np.dtype(dtype))) == np.dtype(
        np.float32 if expected == torch.float32 else np.float64
    )


def test_tensor_round_trip_preserves_values_and_dtype():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    t = to_tensor(X, device="cpu")
    assert t.dtype == torch.float32
    back = to_numpy(t)
    np.testing.assert_array_equal(back, X)
    back[0, 0] = 99.0
    assert X[0, 0] == 0.0


def test_to_tensor_handles_read_only_and_fortran_arrays():
    X = np.asfortranarray(np.ones((3, 2)))
    X.setflags(write=False)
    t = to_tensor(X, dtype=torch.float32)
    assert t.dtype == torch.float32 and t.shape == (3, 2)


def test_seed_is_deterministic_and_leaves_global_state_alone():
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    assert seed_from_random_state(0) == seed_from_random_state(0)
    assert seed_from_random_state(0) != seed_from_random_state(1)
    g1 = make_generator(seed_from_random_state(3))
    g2 = make_generator(seed_from_random_state(3))
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))
    assert torch.equal(torch_state, torch.random.get_rng_state())
    np.testing.assert_array_equal(np_state, np.random.get_state()[1])


def test_seed_from_random_state_instance_advances():
    rng = np.random.RandomState(0)
    assert seed_from_random_state(rng) != seed_from_random_state(rng)


def test_map_row_chunks_matches_unchunked_and_handles_tuples():
    X = np.random.RandomState(0).randn(103, 4)

    def f(t):
        return t * 2, t.sum(dim=1)

    doubled, sums = map_row_chunks(
        f, X, device=torch.device("cpu"), dtype=torch.float64, chunk_size=10
    )
    np.testing.assert_allclose(doubled, 2 * X)
    np.testing.assert_allclose(sums, X.sum(axis=1))
    single = map_row_chunks(
        lambda t: t + 1, X, device=torch.device("cpu"), dtype=torch.float64,
        chunk_size=1000,
    )
    np.testing.assert_allclose(single, X + 1)


@pytest.fixture
def two_torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_run_concurrently_overlaps_tasks_and_shares_torch_threads(two_torch_threads):
    # The barrier only opens when both tasks run at the same time.
    barrier = threading.Barrier(2, timeout=10)
    seen = []

    def task(value):
        def run(cancelled):
            seen.append((threading.current_thread().name, torch.get_num_threads()))
            barrier.wait()
            return value * 10

        return run

    assert run_concurrently([task(1), task(2)], n_workers=4) == [10, 20]
    assert len({name for name, _ in seen}) == 2
    assert all(name.startswith("sklearn-vae") for name, _ in seen)
    assert [threads for _, threads in seen] == [1, 1]  # 2 threads shared by 2 workers
    assert torch.get_num_threads() == 2  # put back


def test_run_concurrently_with_one_worker_runs_in_order_in_the_caller():
    calls = []

    def task(value):
        def run(cancelled):
            calls.append((value, threading.current_thread()))
            return value

        return run

    assert run_concurrently([task(i) for i in range(3)], n_workers=1) == [0, 1, 2]
    assert calls == [(i, threading.current_thread()) for i in range(3)]


def test_run_concurrently_cancels_the_others_and_raises_the_first_failure():
    started = []

    def failing(cancelled):
        started.append("failing")
        raise KeyError("broken task")

    def patient(cancelled):
        started.append("patient")
        # Works in small units and gives up once cancelled, as a training does.
        for _ in range(1000):
            if cancelled.wait(0.01):
                raise TaskCancelled("stopped")
        return "finished"

    def queued(cancelled):
        started.append("queued")
        return "ran"

    began = time.perf_counter()
    with pytest.raises(KeyError, match="broken task"):
        run_concurrently([patient, failing, queued], n_workers=2)
    assert time.perf_counter() - began < 5  # not the patient task's 10 s
    # The third task was still queued when the second failed: it never started.
    assert sorted(started) == ["failing", "patient"]
    assert not [t for t in threading.enumerate() if t.name.startswith("sklearn-vae")]


def test_run_concurrently_stops_its_workers_when_the_caller_is_interrupted(monkeypatch):
    cancelled_seen = []

    def patient(cancelled):
        while not cancelled.wait(0.01):
            pass
        cancelled_seen.append(True)
        raise TaskCancelled("stopped")

    def interrupted_wait(futures, return_when):
        time.sleep(0.05)  # the workers are running
        raise KeyboardInterrupt

    monkeypatch.setattr("concurrent.futures.wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        run_concurrently([patient, patient], n_workers=2)
    assert cancelled_seen == [True, True]  # both saw the cancellation and ended
    assert not [t for t in threading.enumerate() if t.name.startswith("sklearn-vae")]
