"""The safe model format: exact round trips, refusals, and damaged files."""

import doctest
import errno
import hashlib
import json
import os
import pickle
import warnings
import zipfile

import joblib
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_iris
from sklearn.neighbors import NearestNeighbors
from torch import nn

import sklearn_vae
import sklearn_vae._model_file
from sklearn_vae import (
    EMGaussianMixture,
    VAETransformer,
    VariationalGMMPrior,
    load_model,
    save_model,
)
from sklearn_vae._model_file import ModelFileError

TINY_VAE = dict(hidden_layer_sizes=(8,), max_iter=2, random_state=0)
TINY_VADE = dict(
    n_components=3,
    latent_dim=2,
    hidden_layer_sizes=(8,),
    pretrain_epochs=1,
    max_iter=1,
    n_init=1,
    n_neighbors=5,
    random_state=0,
)
METHODS = ["predict", "predict_proba", "transform", "score_samples"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def X():
    return load_iris().data


def fitted(estimator, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=2 does not converge
        return estimator.fit(X)


def assert_same(a, b, where="value"):
    """Equal values of identical types, tensors on the same device, recursively."""
    assert type(a) is type(b), where
    if isinstance(a, nn.Module):
        assert_same(a.state_dict(), b.state_dict(), where)
        assert [m.training for m in a.modules()] == [m.training for m in b.modules()]
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.device == b.device, where
        assert a.requires_grad == b.requires_grad, where
        assert torch.equal(a, b) or (a.isnan() == b.isnan()).all(), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, (float, np.floating)) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where
        if isinstance(a, (float, np.floating)):
            assert np.signbit(a) == np.signbit(b), where


def assert_same_estimator(a, b):
    assert type(a) is type(b)
    # The order of attributes in __dict__ does not matter; inside them it does.
    assert sorted(vars(a)) == sorted(vars(b))
    for name in vars(a):
        assert_same(vars(a)[name], vars(b)[name], name)


def round_trip(estimator, tmp_path):
    path = tmp_path / "model.skvae"
    save_model(estimator, path)
    return load_model(path)


ESTIMATORS = {
    "gmm": lambda: EMGaussianMixture(n_components=3, random_state=0),
    "gmm-diag": lambda: EMGaussianMixture(
        n_components=2, covariance_type="diag", random_state=0
    ),
    "vae": lambda: VAETransformer(**TINY_VAE),
    # Has a critic network and a buffer (the implicit encoder's fixed noise).
    "vae-avb": lambda: VAETransformer(objective="avb", **TINY_VAE),
    "vade": lambda: VariationalGMMPrior(**TINY_VADE),
    "vade-mine": lambda: VariationalGMMPrior(objective="mine", **TINY_VADE),
}


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_restores_every_attribute_and_prediction(name, dtype, X, tmp_path):
    estimator = fitted(ESTIMATORS[name](), X.astype(dtype))
    loaded = round_trip(estimator, tmp_path)
    assert_same_estimator(estimator, loaded)
    for method in METHODS:
        if hasattr(estimator, method):
            expected = getattr(estimator, method)(X.astype(dtype))
            np.testing.assert_array_equal(
                getattr(loaded, method)(X.astype(dtype)), expected
            )


def test_unfitted_estimator_round_trips_its_parameters(tmp_path):
    estimator = VariationalGMMPrior(n_components=4, hidden_layer_sizes=(16, 8))
    loaded = round_trip(estimator, tmp_path)
    assert loaded.get_params() == estimator.get_params()
    assert type(loaded.hidden_layer_sizes) is tuple


def without_time(history):
    return [{k: v for k, v in record.items() if k != "time"} for record in history]


@pytest.mark.parametrize("name", ["vae", "vae-avb", "vade"])
def test_training_continues_exactly_after_loading(name, X, tmp_path):
    # The optimiser state, the seed and the history come back: partial_fit (or
    # a warm start) on the loaded model does what it does on the estimator.
    X = X.astype(np.float32)
    estimator = fitted(ESTIMATORS[name](), X)
    loaded = round_trip(estimator, tmp_path)
    for model in (estimator, loaded):
        if hasattr(model, "partial_fit"):
            model.partial_fit(X)
        else:
            fitted(model.set_params(warm_start=True), X)
    assert without_time(loaded.history_) == without_time(estimator.history_)
    assert_same(loaded.encoder_, estimator.encoder_)
    assert_same(loaded._optimizer_state, estimator._optimizer_state)


def test_warm_start_continues_exactly_after_loading(X, tmp_path):
    estimator = fitted(VAETransformer(warm_start=True, **TINY_VAE), X)
    loaded = round_trip(estimator, tmp_path)
    fitted(estimator, X)
    fitted(loaded, X)
    assert loaded.n_iter_ == estimator.n_iter_ == 4
    np.testing.assert_array_equal(loaded.transform(X), estimator.transform(X))


def test_loading_leaves_the_global_random_state_alone(X, tmp_path):
    estimator = fitted(VAETransformer(**TINY_VAE), X)
    before = torch.random.get_rng_state()
    round_trip(estimator, tmp_path)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_new_fitted_attributes_are_saved_without_a_list_to_update(X, tmp_path):
    estimator = fitted(EMGaussianMixture(n_components=2, random_state=0), X)
    estimator.extra_ = {
        "nested": [(1, 2.5, "a"), {3: None, (4, 5): True}],
        "scalars": [
            np.float32(1.5),
            np.int64(-7),
            np.bool_(True),
            np.complex64(1 - 2j),
        ],
        "floats": [float("nan"), float("inf"), -float("inf"), -0.0, 1e-310],
        "names": np.array(["a", "bc"], dtype=object),
        "ints": np.arange(6, dtype=np.int16).reshape(2, 3),
        "tensor": torch.ones(2, 3, dtype=torch.float16),
        "device": torch.device("cpu"),
    }
    assert_same_estimator(estimator, round_trip(estimator, tmp_path))


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5)
    | st.integers(-(2**31), 2**31 - 1).map(np.int32)
    | st.floats(width=32).map(np.float32)
)
values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=3)
    | st.lists(children, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=3) | st.integers(), children, max_size=3),
    max_leaves=12,
)


@given(value=values)
def test_any_nesting_of_plain_values_round_trips_exactly(value, tmp_path_factory):
    estimator = EMGaussianMixture()
    estimator.value_ = value
    path = tmp_path_factory.mktemp("property") / "model.skvae"
    save_model(estimator, path)
    assert_same(load_model(path).value_, value)


# -- what cannot be saved safely is refused, and nothing is written ----------------
class _Subclass(EMGaussianMixture):
    pass


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: VAETransformer(random_state=np.random.RandomState(0)),
            "parameter 'random_state': it is a RandomState",
        ),
        (
            lambda: VariationalGMMPrior(neighbors_estimator=NearestNeighbors()),
            "parameter 'neighbors_estimator': it holds a sklearn.neighbors",
        ),
        (lambda: _Subclass(), "holds only EMGaussianMixture"),
        (
            lambda: EMGaussianMixture().set_params(tol=lambda: 0),
            "parameter 'tol': it holds a builtins.function",
        ),
    ],
)
def test_unsafe_parameters_are_refused(make, message, tmp_path):
    with pytest.raises(ModelFileError, match=message) as info:
        save_model(make(), tmp_path / "m.skvae")
    assert "use pickle or joblib" in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "value, message",
    [
        (object(), "attribute 'odd_': it holds a builtins.object"),
        ({"k": {1, 2}}, r"attribute 'odd_'\['k'\]: it holds a builtins.set"),
        (np.array([{}], dtype=object), "object array of other things than str"),
        (torch.ones(2, dtype=torch.bfloat16), "tensor of dtype torch.bfloat16"),
        pytest.param(
            np.longdouble(1) / 3,
            "attribute 'odd_': it holds a numpy.longdouble",
            marks=pytest.mark.skipif(
                np.finfo(np.longdouble).bits <= 64, reason="longdouble is double here"
            ),
        ),
    ],
)
def test_unrepresentable_attributes_are_refused(value, message, tmp_path):
    estimator = EMGaussianMixture()
    estimator.odd_ = value
    with pytest.raises(ModelFileError, match=message):
        save_model(estimator, tmp_path / "m.skvae")
    assert not list(tmp_path.iterdir())


def test_networks_that_the_parameters_no_longer_build_are_refused(X, tmp_path):
    estimator = fitted(VAETransformer(**TINY_VAE), X).set_params(
        hidden_layer_sizes=(9,)
    )
    with pytest.raises(ModelFileError, match="set_params after fitting"):
        save_model(estimator, tmp_path / "m.skvae")


def test_a_failed_write_keeps_the_previous_file(X, tmp_path, monkeypatch):
    path = tmp_path / "m.skvae"
    save_model(EMGaussianMixture(n_components=2, random_state=0).fit(X), path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_model(EMGaussianMixture(n_components=3, random_state=0).fit(X), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.skvae"]


def test_same_model_same_bytes(X, tmp_path):
    estimator = EMGaussianMixture(n_components=2, random_state=0).fit(X)
    save_model(estimator, tmp_path / "a.skvae")
    save_model(estimator, tmp_path / "b.skvae")
    assert (tmp_path / "a.skvae").read_bytes() == (tmp_path / "b.skvae").read_bytes()


def test_public_api():
    assert {"save_model", "load_model"} <= set(sklearn_vae.__all__)
    assert issubclass(ModelFileError, ValueError)


# -- files that are not, or no longer, model files are refused ---------------------
@pytest.fixture(scope="module")
def gmm(X):
    return EMGaussianMixture(n_components=3, random_state=0).fit(X)


@pytest.fixture
def model_path(gmm, tmp_path):
    path = tmp_path / "model.skvae"
    save_model(gmm, path)
    return path


def members(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewrite(path, *, manifest=None, contents=None, digest=True, compression=None):
    """Write ``path`` again with edited members; recompute the manifest digest."""
    files = members(path)
    if manifest is not None:
        data = json.loads(files["manifest.json"])
        manifest(data)
        files["manifest.json"] = json.dumps(data).encode()
    if contents is not None:
        contents(files)
    if digest:
        digest_of = hashlib.sha256(files["manifest.json"]).hexdigest()
        files["manifest.json.sha256"] = digest_of.encode()
    with zipfile.ZipFile(path, "w", compression or zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def load_error(path):
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message
    return message


class _Exploit:
    """Unpickling this runs code: it creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".skvae", ".joblib"])
def test_pickles_are_refused_without_running_them(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    message = load_error(path)
    assert "pickle or joblib file" in message and "run any code" in message
    assert "save_model(joblib.load(path)" in message
    assert not marker.exists()


def test_joblib_file_is_refused_and_converts(gmm, tmp_path, X):
    joblib.dump(gmm, tmp_path / "m.joblib")
    assert "pickle or joblib" in load_error(tmp_path / "m.joblib")
    save_model(joblib.load(tmp_path / "m.joblib"), tmp_path / "m.skvae")
    np.testing.assert_array_equal(
        load_model(tmp_path / "m.skvae").predict(X), gmm.predict(X)
    )


def test_other_files_are_refused(tmp_path):
    (tmp_path / "text.skvae").write_text("hello")
    assert "not a sklearn-vae model file" in load_error(tmp_path / "text.skvae")
    with zipfile.ZipFile(tmp_path / "other.skvae", "w") as archive:
        archive.writestr("README", "someone else's zip")
    assert "not a sklearn-vae model file" in load_error(tmp_path / "other.skvae")
    (tmp_path / "empty.skvae").write_bytes(b"")
    assert "not a sklearn-vae model file" in load_error(tmp_path / "empty.skvae")


def test_every_truncation_is_refused(model_path):
    data = model_path.read_bytes()
    for length in np.linspace(1, len(data) - 1, 25).astype(int):
        model_path.write_bytes(data[:length])
        load_error(model_path)


def test_every_flipped_byte_is_refused_or_harmless(model_path, gmm, X):
    # A flipped byte is caught (zip CRC, checksums, parsing) unless it lands
    # where nothing is read (a timestamp): the model then is unchanged.
    data = model_path.read_bytes()
    expected = gmm.predict_proba(X)
    refused = 0
    for offset in range(0, len(data), max(1, len(data) // 300)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x5A
        model_path.write_bytes(bytes(damaged))
        try:
            loaded = load_model(model_path)
        except ModelFileError as error:
            assert "\n" not in str(error)
            refused += 1
        else:
            np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    assert refused > 0


def test_manifest_checksum_mismatch(model_path):
    rewrite(
        model_path, manifest=lambda m: m["attributes"].update(n_iter_=99), digest=False
    )
    assert "checksum mismatch in manifest.json" in load_error(model_path)


def test_array_checksum_mismatch(model_path):
    def damage(files):
        data = bytearray(files["arrays/00000.npy"])
        data[-1] ^= 1
        files["arrays/00000.npy"] = bytes(data)

    rewrite(model_path, contents=damage)
    assert "checksum mismatch in arrays/00000.npy" in load_error(model_path)


@pytest.mark.parametrize(
    "version, hint", [(2, "upgrade sklearn-vae"), (0, "reads version 1")]
)
def test_other_format_versions_are_refused(model_path, version, hint):
    rewrite(model_path, manifest=lambda m: m.update(format_version=version))
    message = load_error(model_path)
    assert f"model format version {version}" in message and hint in message


def test_unknown_estimator_class_is_refused(model_path):
    rewrite(model_path, manifest=lambda m: m.update(estimator="Popen"))
    assert "unknown estimator class 'Popen'" in load_error(model_path)


def test_compressed_members_are_refused(model_path):
    # Only stored members: what is read is what the file holds (no zip bomb).
    rewrite(model_path, compression=zipfile.ZIP_DEFLATED)
    assert "compressed" in load_error(model_path)


def test_sizes_beyond_the_content_are_refused(model_path):
    rewrite(model_path, manifest=lambda m: m["arrays"][0].update(shape=[10**12]))
    assert "does not hold the" in load_error(model_path)


def test_extra_and_missing_members_are_refused(model_path):
    path = model_path
    rewrite(path, contents=lambda files: files.update({"run.py": b"print(1)"}))
    assert "unexpected members" in load_error(path)
    rewrite(path, contents=lambda files: files.pop("run.py"))
    load_model(path)
    rewrite(path, contents=lambda files: files.pop("arrays/00001.npy"))
    assert "missing from the file" in load_error(path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["attributes"].update(weights_={"$pickle": "x"}),
        lambda m: m["attributes"].update(weights_={"$array": 999}),
        lambda m: m["params"].update(colour="red"),
        lambda m: m.pop("attributes"),
        lambda m: m["arrays"][0].update(dtype="|O"),
    ],
)
def test_malformed_manifests_are_refused(model_path, edit):
    rewrite(model_path, manifest=edit)
    load_error(model_path)


@pytest.mark.parametrize("name", ["vae", "vae-avb", "vade-mine"])
def test_networks_are_checked_against_the_parameters(name, X, tmp_path):
    # A crafted file asks for huge layers: refused before they are allocated
    # (8 layers of 10**6 units would need terabytes).
    path = tmp_path / "model.skvae"
    save_model(fitted(ESTIMATORS[name](), X), path)
    huge = {"$tuple": [10**6] * 8}
    rewrite(path, manifest=lambda m: m["params"].update(hidden_layer_sizes=huge))
    assert "differ from the ones its parameters build" in load_error(path)


def test_missing_device_loads_on_the_cpu_with_a_warning(X, tmp_path):
    estimator = fitted(VAETransformer(**TINY_VAE), X)
    path = tmp_path / "vae.skvae"
    save_model(estimator, path)

    def to_absent_device(manifest):
        text = json.dumps(manifest).replace('"cpu", false]', '"cuda:99", false]')
        manifest.clear()
        manifest.update(json.loads(text))
        manifest["attributes"]["_device"] = "cuda:99"

    rewrite(path, manifest=to_absent_device)
    with pytest.warns(UserWarning, match="'cuda:99', which is not available"):
        loaded = load_model(path)
    assert loaded._device == "cpu"
    assert loaded._optimizer_state["model"]["state"][0]["exp_avg"].device.type == "cpu"
    np.testing.assert_array_equal(loaded.transform(X), estimator.transform(X))


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "none.skvae")


def test_loaded_arrays_are_writable(model_path):
    loaded = load_model(model_path)
    assert loaded.means_.flags.writeable


def test_round_trip_keeps_the_device(device, X, tmp_path):
    estimator = fitted(VAETransformer(device=device, **TINY_VAE), X)
    loaded = round_trip(estimator, tmp_path)
    assert next(loaded.encoder_.parameters()).device.type == device
    assert_same(loaded._optimizer_state, estimator._optimizer_state)
    np.testing.assert_array_equal(loaded.transform(X), estimator.transform(X))


def test_docstring_examples():
    result = doctest.testmod(sklearn_vae._model_file, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
