"""Fault injection for the command line: damaged models, unwritable and full
disks, a process killed mid-write, failed trainings and warnings.

Each fault must end with exit status 1 (130 when interrupted) and one line on
stderr, and must leave every existing output and model file as it was, with no
temporary file behind (except after SIGKILL, which no process survives).
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_iris

from sklearn_vae import EMGaussianMixture, VAETransformer
from sklearn_vae.cli import main
from sklearn_vae.neural._engine import NonFiniteLossError


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Small networks run 10-100x slower when threads oversubscribe the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A data file and a fitted model, shared read-only by the tests."""
    folder = tmp_path_factory.mktemp("faults")
    data = folder / "iris.npy"
    np.save(data, load_iris().data)
    model = folder / "gmm.skvae"
    argv = ["fit", "gmm", "--data", str(data), "--param", "n_components=2"]
    assert main([*argv, "--param", "random_state=0", "--out", str(model)]) == 0
    return data, model


def fails_with_one_line(argv, capsys, status=1):
    assert main([str(arg) for arg in argv]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_truncated_model(workspace, tmp_path, capsys):
    data, model = workspace
    content = model.read_bytes()
    for length in [10, len(content) // 2, len(content) - 10]:
        (tmp_path / "cut.skvae").write_bytes(content[:length])
        err = fails_with_one_line(
            [
                "predict",
                "--model",
                tmp_path / "cut.skvae",
                "--data",
                data,
                "--out",
                tmp_path / "p.csv",
            ],
            capsys,
        )
        assert err.startswith("sklearn-vae: error: ")
        assert "truncated" in err or "corrupted" in err or "not a sklearn-vae" in err
    assert not (tmp_path / "p.csv").exists()


def test_corrupted_model(workspace, tmp_path, capsys):
    data, model = workspace
    content = bytearray(model.read_bytes())
    content[len(content) // 3] ^= 0xFF
    (tmp_path / "bad.skvae").write_bytes(bytes(content))
    err = fails_with_one_line(
        ["sample", "--model", tmp_path / "bad.skvae", "--out", tmp_path / "s.csv"],
        capsys,
    )
    assert "corrupted" in err or "checksum mismatch" in err


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "--data", "{data}", "--model", "{model}"],
        ["sample", "--model", "{model}"],
        ["fit", "gmm", "--data", "{data}"],
    ],
)
def test_unwritable_output_is_reported_before_any_work(
    command, workspace, tmp_path, capsys, monkeypatch
):
    data, model = workspace
    monkeypatch.setattr(EMGaussianMixture, "fit", lambda *a: pytest.fail("fitted"))
    (tmp_path / "file").write_text("")
    suffix = ".skvae" if command[0] == "fit" else ".csv"
    argv = [part.format(data=data, model=model) for part in command]
    (tmp_path / f"folder{suffix}").mkdir()
    for out in [tmp_path / "file" / f"out{suffix}", tmp_path / f"folder{suffix}"]:
        err = fails_with_one_line([*argv, "--out", out], capsys)
        assert "cannot be written" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_reported(workspace, tmp_path, capsys):
    data, model = workspace
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        err = fails_with_one_line(
            ["predict", "--model", model, "--data", data, "--out", folder / "p.csv"],
            capsys,
        )
    finally:
        folder.chmod(0o700)
    assert "no permission" in err


@pytest.fixture
def existing(tmp_path):
    """An output folder holding earlier results that must survive."""
    (tmp_path / "labels.csv").write_text("label\n7\n")
    (tmp_path / "model.skvae").write_bytes(b"an earlier model")
    return {path.name: path.read_bytes() for path in tmp_path.iterdir()}


def assert_untouched(folder, existing):
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == existing


@pytest.mark.parametrize("where", ["fsync", "write"])
def test_full_disk_keeps_the_previous_output(
    where, workspace, tmp_path, existing, capsys, monkeypatch
):
    data, model = workspace
    if where == "fsync":
        monkeypatch.setattr(os, "fsync", disk_full)
    else:
        real_to_csv = pd.DataFrame.to_csv

        def half_then_full(frame, file, **kwargs):
            real_to_csv(frame.head(len(frame) // 2), file, **kwargs)
            disk_full()

        monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_full)
    err = fails_with_one_line(
        ["predict", "--model", model, "--data", data, "--out", tmp_path / "labels.csv"],
        capsys,
    )
    assert "No space left on device" in err and "left unchanged" in err
    assert_untouched(tmp_path, existing)


def test_full_disk_keeps_the_previous_model(
    workspace, tmp_path, existing, capsys, monkeypatch
):
    data, _ = workspace
    monkeypatch.setattr(os, "fsync", disk_full)
    err = fails_with_one_line(
        ["fit", "gmm", "--data", data, "--out", tmp_path / "model.skvae"], capsys
    )
    assert "No space left on device" in err
    assert_untouched(tmp_path, existing)


def test_interrupt_while_writing_keeps_the_previous_output(
    workspace, tmp_path, existing, capsys, monkeypatch
):
    data, model = workspace

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    err = fails_with_one_line(
        ["predict", "--model", model, "--data", data, "--out", tmp_path / "labels.csv"],
        capsys,
        status=130,
    )
    assert err == "sklearn-vae: interrupted\n"
    assert_untouched(tmp_path, existing)


# The command line in a child process whose fsync blocks: the new content is
# completely written to the temporary file, not yet renamed, when it is killed.
_BLOCKED_CHILD = textwrap.dedent("""
    import os, sys, time

    def blocked(descriptor):
        print("fsync", flush=True)
        time.sleep(120)

    os.fsync = blocked
    from sklearn_vae.cli import main
    sys.exit(main(sys.argv[1:]))
    """)


@pytest.mark.parametrize(
    "command, out",
    [
        (["transform", "--model", "{model}", "--data", "{data}"], "labels.csv"),
        (["fit", "gmm", "--data", "{data}"], "model.skvae"),
    ],
)
def test_sigkill_mid_write_keeps_the_previous_file(
    command, out, workspace, tmp_path, existing
):
    data, model = workspace
    argv = [part.format(data=data, model=model) for part in command]
    child = subprocess.Popen(
        [sys.executable, "-c", _BLOCKED_CHILD, *argv, "--out", str(tmp_path / out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        for line in child.stdout:
            if line.strip() == "fsync":
                break
        else:
            pytest.fail(f"the child never wrote: {child.stderr.read()}")
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        child.kill()
        child.communicate()
    # The earlier file is intact; the killed write left only its hidden
    # temporary file, which holds the complete new content.
    leftovers = [p for p in tmp_path.iterdir() if p.name not in existing]
    assert [
        p.name.startswith(f".{out}.") and p.name.endswith(".tmp") for p in leftovers
    ] == [True]
    for path in leftovers:
        path.unlink()
    assert_untouched(tmp_path, existing)


def test_diverging_training_is_one_line(workspace, tmp_path, capsys, monkeypatch):
    data, _ = workspace

    def diverge(self, X, y=None):
        raise NonFiniteLossError(
            "Training stopped at epoch 1: the loss is not finite.\nLower the rate."
        )

    monkeypatch.setattr(VAETransformer, "fit", diverge)
    err = fails_with_one_line(
        ["fit", "vae", "--data", data, "--out", tmp_path / "m.skvae"], capsys
    )
    assert err == (
        "sklearn-vae: error: Training stopped at epoch 1: the loss is not finite. "
        "Lower the rate.\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_out_of_memory_is_one_line(workspace, tmp_path, capsys, monkeypatch):
    data, _ = workspace

    def exhaust(self, X, y=None):
        raise MemoryError("Unable to allocate 8.00 TiB for an array")

    monkeypatch.setattr(EMGaussianMixture, "fit", exhaust)
    err = fails_with_one_line(
        ["fit", "gmm", "--data", data, "--out", tmp_path / "m.skvae"], capsys
    )
    assert err.startswith("sklearn-vae: error: out of memory (Unable to allocate")


def test_warnings_are_one_line_each(workspace, tmp_path, capsys):
    data, _ = workspace
    argv = ["fit", "vae", "--data", str(data), "--param", "hidden_layer_sizes=(8,)"]
    assert (
        main([*argv, "--param", "max_iter=2", "--out", str(tmp_path / "m.skvae")]) == 0
    )
    lines = capsys.readouterr().err.splitlines()
    assert any("Maximum iterations (2) reached" in line for line in lines)
    assert all(line.startswith("sklearn-vae: warning: ") for line in lines), lines


def test_multi_line_warning_becomes_one_line(workspace, tmp_path, capsys, monkeypatch):
    data, _ = workspace
    real_fit = EMGaussianMixture.fit

    def noisy_fit(self, X, y=None):
        warnings.warn("first line\n  second line", UserWarning)
        return real_fit(self, X)

    monkeypatch.setattr(EMGaussianMixture, "fit", noisy_fit)
    assert (
        main(["fit", "gmm", "--data", str(data), "--out", str(tmp_path / "m.skvae")])
        == 0
    )
    assert capsys.readouterr().err == "sklearn-vae: warning: first line second line\n"
