"""Model files that loading cannot turn into running code.

A pickle (and so a joblib file) runs whatever code its author put in it when
it is loaded. The command line loads model files given by others, so it uses
this format instead: data only, read by loaders that build nothing but plain
values and numeric arrays.

A model file is an uncompressed zip archive (ending ``.skvae``) with

* ``manifest.json``: the format name and version, the sklearn-vae version
  that wrote it, the estimator's class (one of the package's three
  estimators), its ``get_params()``, every fitted attribute that is not a
  network, each network's ``state_dict`` layout, and the list of arrays with
  their dtype, shape and SHA-256;
* ``manifest.json.sha256``: the SHA-256 of ``manifest.json``, so that the
  checksums cover every byte of the payload;
* ``arrays/NNNNN.npy``: every array and tensor, read by
  ``numpy.load(allow_pickle=False)``.

Values are written as JSON; what JSON lacks is spelled as one-key objects
(``{"$tuple": [...]}``, ``{"$dict": [[key, value], ...]}``, ``{"$float":
"nan"}``, ``{"$scalar": [dtype, value]}``, ``{"$array": index}``,
``{"$tensor": [index, device, requires_grad]}``, ``{"$strings": [shape,
values]}``, ``{"$device": name}``). Every dict is written as ``$dict``, so a
JSON object is always such a tag and nothing is ambiguous. Fitted attributes
are found by walking the estimator's ``__dict__``, so attributes added later
are saved without a list to keep up to date; a value the format cannot
represent is refused when saving, with the name of the attribute.

Networks (``torch.nn.Module`` attributes) are stored as their ``state_dict``
and rebuilt on load by the estimator's own ``_build_model`` and
``_store_model``, then filled with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from . import __version__
from ._backend import seeded_module_init
from ._io import atomic_write
from ._vade import VariationalGMMPrior
from ._vae import VAETransformer
from .mixture import EMGaussianMixture
from .neural._base import NeuralEstimatorBase

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MODEL_SUFFIX",
    "ModelFileError",
    "load_model",
    "save_model",
]

FORMAT_NAME = "sklearn-vae-model"
FORMAT_VERSION = 1
#: The ending of model files (the command line requires it for ``fit --out``).
MODEL_SUFFIX = ".skvae"

_MANIFEST = "manifest.json"
_MANIFEST_DIGEST = "manifest.json.sha256"
_ESTIMATORS: dict[str, type[BaseEstimator]] = {
    cls.__name__: cls
    for cls in (EMGaussianMixture, VAETransformer, VariationalGMMPrior)
}
# Bounds on what a file may declare, checked before anything is read, so a
# crafted file cannot make the loader allocate more than the file holds.
_MAX_MANIFEST_BYTES = 256 * 2**20
_MAX_NPY_HEADER_BYTES = 2**16
_MAX_MEMBERS = 2**20
# bool, integers, floats, complex and fixed-width strings: no objects.
_ARRAY_KINDS = "biufcUS"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_MARK = b"\x80"
_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
# A fixed timestamp: the same model always gives the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ARRAY_NAME = re.compile(r"arrays/\d{5}\.npy")
# What zipfile raises on a damaged archive, besides BadZipFile: a seek to a
# bad offset, an impossible version or method, bad bytes in a header.
_DAMAGED = (
    zipfile.BadZipFile,
    EOFError,
    OSError,
    NotImplementedError,
    struct.error,
    ValueError,
    OverflowError,
)

_PICKLE_HINT = (
    "use pickle or joblib for this estimator (and load such files only if you "
    "trust them)"
)


class ModelFileError(ValueError):
    """A model file cannot be written or read safely; the message is one line."""


def _refuse(where: str, value: Any) -> ModelFileError:
    return ModelFileError(
        f"cannot save {where}: it holds a {type(value).__module__}."
        f"{type(value).__qualname__}, which the safe model format cannot store; "
        f"{_PICKLE_HINT}."
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- writing ---------------------------------------------------------------------
class _Encoder:
    """Turn fitted values into JSON, collecting their arrays on the side."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []

    def _array(self, array: np.ndarray, where: str) -> int:
        if array.dtype.kind not in _ARRAY_KINDS or array.dtype.fields is not None:
            raise _refuse(f"{where} (an array of dtype {array.dtype})", array)
        self.arrays.append(array)
        return len(self.arrays) - 1

    def encode(self, value: Any, where: str) -> Any:
        kind = type(value)
        # Exact types: numpy's float64 and bool_ subclass Python's own.
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, np.generic):
            return self._scalar(value, where)
        if kind is list:
            return [self.encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if kind is tuple:
            return {
                "$tuple": [
                    self.encode(item, f"{where}[{i}]") for i, item in enumerate(value)
                ]
            }
        if kind is dict:
            return {
                "$dict": [
                    [
                        self.encode(key, f"{where} key"),
                        self.encode(item, f"{where}[{key!r}]"),
                    ]
                    for key, item in value.items()
                ]
            }
        if kind is np.ndarray:
            if value.dtype == object:
                return self._strings(value, where)
            return {"$array": self._array(value, where)}
        if kind is torch.Tensor:
            return self._tensor(value, where)
        if kind is torch.device:
            return {"$device": str(value)}
        raise _refuse(where, value)

    def _scalar(self, value: np.generic, where: str) -> Any:
        if value.dtype.kind not in "biufc":
            raise _refuse(where, value)
        item = value.item()
        # Types wider than a Python number (longdouble) have no exact JSON form.
        if type(item) not in (bool, int, float, complex):
            raise _refuse(where, value)
        body = [item.real, item.imag] if value.dtype.kind == "c" else item
        if _decode_scalar(value.dtype.str, body).tobytes() != value.tobytes():
            raise _refuse(where, value)
        return {"$scalar": [value.dtype.str, self.encode(body, where)]}

    def _strings(self, array: np.ndarray, where: str) -> Any:
        values = array.ravel().tolist()
        if not all(type(item) is str for item in values):
            raise _refuse(f"{where} (an object array of other things than str)", array)
        return {"$strings": [list(array.shape), values]}

    def _tensor(self, tensor: torch.Tensor, where: str) -> Any:
        try:
            array = tensor.detach().cpu().numpy()
        except TypeError as error:  # bfloat16 and the like have no numpy dtype
            raise _refuse(
                f"{where} (a tensor of dtype {tensor.dtype})", tensor
            ) from error
        index = self._array(array, where)
        return {"$tensor": [index, str(tensor.device), bool(tensor.requires_grad)]}


def _build(estimator: NeuralEstimatorBase) -> nn.Module:
    # Under a fixed seed, in isolation: the caller's torch random state is left
    # untouched (the weights are overwritten anyway).
    with seeded_module_init(0):
        return estimator._build_model(estimator.n_features_in_)


def _rebuild_networks(
    estimator: NeuralEstimatorBase, dtype: torch.dtype, device: torch.device
) -> dict[str, nn.Module]:
    """Build the estimator's networks from its parameters; return them by name."""
    model = _build(estimator).to(device=device, dtype=dtype)
    estimator._store_model(model)
    return {
        name: value
        for name, value in vars(estimator).items()
        if isinstance(value, nn.Module)
    }


def _shapes(states: list[dict[str, torch.Tensor]]) -> list[tuple[int, ...]]:
    return sorted(tuple(t.shape) for state in states for t in state.values())


def _check_sizes(estimator: NeuralEstimatorBase, states: list[dict]) -> None:
    """Refuse parameters that build other networks than the saved weights.

    Built on the meta device first, so that parameters a crafted file gives
    (a layer of 10**9 units) cost no memory: the saved weights, which the
    file really holds, bound what is allocated afterwards.
    """
    try:
        with torch.device("meta"):
            model = _build(estimator)
    except (NotImplementedError, RuntimeError):
        return  # a network whose construction needs real values
    if _shapes([model.state_dict()]) != _shapes(states):
        raise ValueError("its networks differ from the ones its parameters build")


def _layout(module: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {key: (tuple(t.shape), t.dtype) for key, t in module.state_dict().items()}


def _network_dtype(states: list[dict[str, torch.Tensor]]) -> torch.dtype:
    for state in states:
        for tensor in state.values():
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float64


def _check_rebuildable(
    estimator: NeuralEstimatorBase, networks: dict[str, nn.Module]
) -> None:
    # Rebuild on a copy without networks (copying the estimator itself would
    # pickle them), exactly as load_model will.
    probe = type(estimator).__new__(type(estimator))
    vars(probe).update(
        {k: v for k, v in vars(estimator).items() if not isinstance(v, nn.Module)}
    )
    dtype = _network_dtype([module.state_dict() for module in networks.values()])
    rebuilt = _rebuild_networks(probe, dtype, torch.device("cpu"))
    if set(rebuilt) != set(networks) or any(
        _layout(rebuilt[name]) != _layout(module) for name, module in networks.items()
    ):
        raise ModelFileError(
            f"cannot save this {type(estimator).__name__}: its networks differ from "
            "the ones its parameters build (were parameters changed with set_params "
            "after fitting?); refit it, or " + _PICKLE_HINT + "."
        )


def save_model(estimator: BaseEstimator, path: str | os.PathLike[str]) -> None:
    """Save an estimator in sklearn-vae's safe model format.

    Unlike a pickle or a joblib file, the file holds only data: loading it with
    :func:`load_model` cannot run code, so model files from others can be
    loaded safely. The estimator is stored with its parameters and every
    fitted attribute, including the networks' weights and the optimiser state,
    so a loaded estimator predicts identically and continues training
    (``partial_fit``, ``warm_start``) exactly where it stopped.

    The file is a zip archive holding ``manifest.json`` (format version,
    sklearn-vae version, class, parameters and fitted attributes as JSON,
    checksums), its SHA-256, and the arrays as ``.npy`` files. It is written to
    a temporary file and renamed over ``path`` when complete, so an existing
    file is never left half-written. The ending ``.skvae`` is conventional.

    Parameters
    ----------
    estimator : EMGaussianMixture, VAETransformer or VariationalGMMPrior
        The estimator to save, fitted or not. Subclasses are refused.
    path : str or path-like
        The file to write; its folder is created if needed.

    Raises
    ------
    ValueError
        If the estimator is not one of the three estimators of sklearn-vae, or
        holds something the format cannot represent without code: a parameter
        that is an object (such as a ``neighbors_estimator``, or a
        ``numpy.random.RandomState`` as ``random_state``: set an int or
        ``None`` instead). Pickle or joblib can store those (for trusted
        files only). Nothing is written then.
    OSError
        If the file cannot be written; ``path`` is then unchanged.

    See Also
    --------
    load_model : Read the file back.

    Examples
    --------
    >>> import tempfile, os
    >>> from sklearn.datasets import load_iris
    >>> from sklearn_vae import EMGaussianMixture, load_model, save_model
    >>> X = load_iris().data
    >>> gmm = EMGaussianMixture(n_components=3, random_state=0).fit(X)
    >>> path = os.path.join(tempfile.mkdtemp(), "gmm.skvae")
    >>> save_model(gmm, path)
    >>> bool((load_model(path).predict(X) == gmm.predict(X)).all())
    True
    """
    cls = type(estimator)
    if _ESTIMATORS.get(cls.__name__) is not cls:
        raise ModelFileError(
            f"cannot save a {cls.__module__}.{cls.__qualname__}: the safe model format "
            f"holds only {', '.join(_ESTIMATORS)}; {_PICKLE_HINT}."
        )
    params = estimator.get_params(deep=False)
    random_state = params.get("random_state")
    if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
        raise ModelFileError(
            f"cannot save parameter 'random_state': it is a "
            f"{type(random_state).__name__}, whose state the safe model format does "
            "not store; set random_state to an int or None before fitting, or "
            f"{_PICKLE_HINT}."
        )
    encoder = _Encoder()
    encoded_params = {
        name: encoder.encode(value, f"parameter {name!r}")
        for name, value in params.items()
    }
    fitted = {
        name: value for name, value in vars(estimator).items() if name not in params
    }
    networks = {
        name: value for name, value in fitted.items() if isinstance(value, nn.Module)
    }
    if networks:
        if not isinstance(estimator, NeuralEstimatorBase):
            raise _refuse(
                f"attribute {next(iter(networks))!r}", networks[next(iter(networks))]
            )
        _check_rebuildable(estimator, networks)
    attributes = {
        name: encoder.encode(value, f"attribute {name!r}")
        for name, value in fitted.items()
        if name not in networks
    }
    encoded_networks = {
        name: {
            "state": [
                [key, encoder.encode(tensor, f"attribute {name!r}[{key!r}]")]
                for key, tensor in module.state_dict().items()
            ],
            "training": [
                [sub, child.training] for sub, child in module.named_modules()
            ],
        }
        for name, module in networks.items()
    }
    with (
        atomic_write(path) as file,
        zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive,
    ):
        entries = []
        for index, array in enumerate(encoder.arrays):
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            data = buffer.getvalue()
            name = f"arrays/{index:05d}.npy"
            archive.writestr(zipfile.ZipInfo(name, _ZIP_DATE), data)
            entries.append(
                {
                    "name": name,
                    "dtype": array.dtype.str,
                    "shape": list(array.shape),
                    "sha256": _sha256(data),
                }
            )
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "sklearn_vae_version": __version__,
            "estimator": cls.__name__,
            "params": encoded_params,
            "attributes": attributes,
            "networks": encoded_networks,
            "arrays": entries,
        }
        data = json.dumps(
            manifest, allow_nan=False, ensure_ascii=False, indent=1
        ).encode()
        archive.writestr(zipfile.ZipInfo(_MANIFEST, _ZIP_DATE), data)
        archive.writestr(
            zipfile.ZipInfo(_MANIFEST_DIGEST, _ZIP_DATE), _sha256(data) + "\n"
        )


# -- reading ---------------------------------------------------------------------
def _decode_scalar(dtype: str, body: Any) -> np.generic:
    kind = np.dtype(dtype)
    if kind.kind not in "biufc":
        raise ValueError(f"scalar of dtype {dtype}")
    value = complex(body[0], body[1]) if kind.kind == "c" else body
    return kind.type(value)


class _Decoder:
    """Turn the manifest's JSON back into values, with the file's arrays."""

    def __init__(
        self, arrays: list[np.ndarray], device_for: Callable[[str], torch.device]
    ):
        self.arrays = arrays
        self.device_for = device_for

    def decode(self, node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(item) for item in node]
        if not (isinstance(node, dict) and len(node) == 1):
            raise ValueError("an entry that is not a value")
        ((tag, body),) = node.items()
        if tag == "$tuple":
            return tuple(self.decode(item) for item in body)
        if tag == "$dict":
            return {self.decode(key): self.decode(item) for key, item in body}
        if tag == "$float":
            if body not in ("nan", "inf", "-inf"):
                raise ValueError(f"float {body!r}")
            return float(body)
        if tag == "$scalar":
            return _decode_scalar(body[0], self.decode(body[1]))
        if tag == "$array":
            return self.arrays[body]
        if tag == "$strings":
            shape, values = body
            if not all(isinstance(item, str) for item in values):
                raise ValueError("strings that are not str")
            array = np.empty(len(values), dtype=object)
            array[:] = values
            return array.reshape(shape)
        if tag == "$tensor":
            index, device, requires_grad = body
            tensor = torch.from_numpy(self.arrays[index]).to(self.device_for(device))
            return tensor.requires_grad_(bool(requires_grad))
        if tag == "$device":
            return torch.device(body)
        raise ValueError(f"unknown tag {tag!r}")


def _not_a_model(path: Path, head: bytes) -> ModelFileError:
    if (
        head.startswith(_PICKLE_PROTOCOL_MARK)
        or path.suffix.lower() in _PICKLE_SUFFIXES
    ):
        return ModelFileError(
            f"{path}: looks like a pickle or joblib file, which is not loaded because "
            "loading a pickle can run any code its author put in it; if you trust the "
            "file, convert it in Python with sklearn_vae.save_model(joblib.load(path), "
            f"'model{MODEL_SUFFIX}')."
        )
    return ModelFileError(
        f"{path}: not a sklearn-vae model file (write one with 'sklearn-vae fit' or "
        "sklearn_vae.save_model)."
    )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise ModelFileError(
            f"member {info.filename} declares {info.file_size} bytes, more than its "
            f"content can take ({limit})"
        )
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) != info.file_size:
        raise ModelFileError(f"member {info.filename} is truncated")
    return data


def _members(
    archive: zipfile.ZipFile, path: Path, file_size: int
) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if len(infos) > _MAX_MEMBERS or len(set(names)) != len(names):
        raise ModelFileError(
            f"{path}: not a sklearn-vae model file (unexpected members)."
        )
    if _MANIFEST not in names or _MANIFEST_DIGEST not in names:
        raise _not_a_model(path, _ZIP_MAGIC)
    for info in infos:
        # Stored, not compressed, and not encrypted: every byte read is a byte
        # of the file, so no member can expand (no zip bomb).
        if (
            info.compress_type != zipfile.ZIP_STORED
            or info.compress_size != info.file_size
            or info.flag_bits & 0x1
        ):
            raise ModelFileError(
                f"{path}: not written by sklearn-vae (member {info.filename} is "
                "compressed or encrypted)."
            )
    if sum(info.file_size for info in infos) > file_size:
        raise ModelFileError(
            f"{path}: is corrupted (its members declare more bytes than the file "
            "holds)."
        )
    return dict(zip(names, infos))


def _read_manifest(
    archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], path: Path
) -> dict:
    digest = (
        _read_member(archive, members[_MANIFEST_DIGEST], 128).decode("ascii").strip()
    )
    data = _read_member(archive, members[_MANIFEST], _MAX_MANIFEST_BYTES)
    if _sha256(data) != digest:
        raise ModelFileError(
            f"{path}: checksum mismatch in {_MANIFEST}; the file is corrupted."
        )

    def reject_constant(name: str) -> None:
        raise ValueError(f"{name} in JSON")

    manifest = json.loads(data.decode("utf-8"), parse_constant=reject_constant)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise _not_a_model(path, _ZIP_MAGIC)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        newer = type(version) is int and version > FORMAT_VERSION
        raise ModelFileError(
            f"{path}: model format version {version!r}, but this sklearn-vae "
            f"({__version__}) reads version {FORMAT_VERSION}"
            + ("; upgrade sklearn-vae to load it." if newer else ".")
        )
    name = manifest.get("estimator")
    if name not in _ESTIMATORS:
        raise ModelFileError(
            f"{path}: holds an unknown estimator class {name!r}; sklearn-vae loads "
            f"{', '.join(_ESTIMATORS)}."
        )
    return manifest


def _read_arrays(
    archive: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    entries: list,
    path: Path,
) -> list[np.ndarray]:
    arrays = []
    for entry in entries:
        name, dtype = entry["name"], np.dtype(entry["dtype"])
        shape = tuple(int(size) for size in entry["shape"])
        if not _ARRAY_NAME.fullmatch(name) or name not in members:
            raise ModelFileError(f"{path}: array {name!r} is missing from the file.")
        if (
            dtype.kind not in _ARRAY_KINDS
            or dtype.fields is not None
            or min(shape, default=0) < 0
        ):
            raise ModelFileError(
                f"{path}: array {name} has an unsupported dtype or shape."
            )
        info = members[name]
        n_bytes = math.prod(shape) * dtype.itemsize
        if not n_bytes <= info.file_size <= n_bytes + _MAX_NPY_HEADER_BYTES:
            raise ModelFileError(
                f"{path}: array {name} does not hold the {n_bytes} bytes its shape "
                "needs."
            )
        data = _read_member(archive, info, n_bytes + _MAX_NPY_HEADER_BYTES)
        if _sha256(data) != entry["sha256"]:
            raise ModelFileError(
                f"{path}: checksum mismatch in {name}; the file is corrupted."
            )
        array = np.load(io.BytesIO(data), allow_pickle=False)
        if array.dtype != dtype or array.shape != shape:
            raise ModelFileError(
                f"{path}: array {name} is not the one its entry describes."
            )
        arrays.append(array)
    expected = {_MANIFEST, _MANIFEST_DIGEST, *(entry["name"] for entry in entries)}
    if set(members) != expected:
        raise ModelFileError(
            f"{path}: not a sklearn-vae model file (unexpected members)."
        )
    return arrays


def _device_mapper() -> Callable[[str], torch.device]:
    """Map saved device names to devices of this machine (CPU if absent)."""
    cache: dict[str, torch.device] = {}

    def device_for(saved: str) -> torch.device:
        if saved not in cache:
            cache[saved] = (
                torch.device("cpu")
                if saved == "cpu"
                else NeuralEstimatorBase._loadable_device(saved)
            )
        return cache[saved]

    return device_for


def _restore_networks(
    estimator: NeuralEstimatorBase,
    networks: dict[str, Any],
    decoder: _Decoder,
    attributes: dict[str, Any],
) -> None:
    states = {
        name: {key: decoder.decode(tensor) for key, tensor in entry["state"]}
        for name, entry in networks.items()
    }
    # The networks live where the estimator computes: its _device.
    device = decoder.device_for(attributes.get("_device", "cpu"))
    if "_device" in attributes:
        attributes["_device"] = str(device)
    vars(estimator).update(attributes)
    _check_sizes(estimator, list(states.values()))
    rebuilt = _rebuild_networks(
        estimator, _network_dtype(list(states.values())), device
    )
    if set(rebuilt) != set(states) or any(
        _layout(module) != {k: (tuple(t.shape), t.dtype) for k, t in states[n].items()}
        for n, module in rebuilt.items()
    ):
        raise ValueError("its networks differ from the ones its parameters build")
    for name, module in rebuilt.items():
        module.load_state_dict(states[name], strict=True)
        flags = dict(networks[name]["training"])
        for sub, child in module.named_modules():
            child.training = bool(flags[sub])
    # _store_model derives some attributes from the new networks (VaDE's
    # weights_): the saved ones are the truth.
    vars(estimator).update(attributes)


def load_model(path: str | os.PathLike[str]) -> BaseEstimator:
    """Load an estimator saved by :func:`save_model`, without running code.

    The file is checked before anything is built from it: the format name and
    version, the SHA-256 of every part, the declared sizes against the file's
    size, and the estimator class against sklearn-vae's three estimators.
    Arrays are read with ``numpy.load(allow_pickle=False)``; networks are
    rebuilt by the estimator from its parameters and filled with the saved
    weights. A model fitted on a device this machine lacks is loaded on the
    CPU, with a warning (as unpickling does).

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model` or ``sklearn-vae fit``.

    Returns
    -------
    estimator : EMGaussianMixture, VAETransformer or VariationalGMMPrior
        The estimator, with its parameters and fitted attributes.

    Raises
    ------
    ValueError
        With a one-line message, if the file is not a model file of this
        format (a pickle or joblib file among them: convert a trusted one with
        ``save_model(joblib.load(path), new_path)``), is truncated or
        corrupted (checksum mismatch), has another format version, or names
        an unknown estimator class.
    OSError
        If the file cannot be opened.

    See Also
    --------
    save_model : Write such a file.

    Notes
    -----
    ``pickle`` and ``joblib`` remain the usual way to store scikit-learn
    estimators in Python, and work with every estimator here, but loading a
    pickle runs whatever code the file contains: load those only from sources
    you trust, and use this format for files you exchange.
    """
    path = Path(path)
    with open(path, "rb") as file:
        head = file.read(len(_ZIP_MAGIC))
        if head != _ZIP_MAGIC:
            raise _not_a_model(path, head)
        try:
            archive = zipfile.ZipFile(file)
        except _DAMAGED as error:
            raise ModelFileError(
                f"{path}: is truncated or corrupted ({_reason(error)})."
            ) from error
        with archive:
            return _read_model(archive, path, os.fstat(file.fileno()).st_size)


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _read_model(archive: zipfile.ZipFile, path: Path, file_size: int) -> BaseEstimator:
    try:
        members = _members(archive, path, file_size)
        manifest = _read_manifest(archive, members, path)
        arrays = _read_arrays(archive, members, manifest["arrays"], path)
        decoder = _Decoder(arrays, _device_mapper())
        cls = _ESTIMATORS[manifest["estimator"]]
        params = {
            name: decoder.decode(value) for name, value in manifest["params"].items()
        }
        estimator = cls(**params)
        attributes = {
            name: decoder.decode(value)
            for name, value in manifest["attributes"].items()
        }
        networks = manifest["networks"]
        if networks:
            if not isinstance(estimator, NeuralEstimatorBase):
                raise ValueError(f"networks for a {cls.__name__}")
            _restore_networks(estimator, networks, decoder, attributes)
        else:
            vars(estimator).update(attributes)
    except ModelFileError:
        raise
    except (
        zipfile.BadZipFile,
        EOFError,
        OSError,
        NotImplementedError,
        struct.error,
    ) as error:
        raise ModelFileError(
            f"{path}: is truncated or corrupted ({_reason(error)})."
        ) from error
    except (
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        RuntimeError,
        OverflowError,
    ) as error:
        raise ModelFileError(
            f"{path}: malformed model file ({type(error).__name__}: {_reason(error)})."
        ) from error
    written_by = manifest.get("sklearn_vae_version")
    if written_by != __version__:
        warnings.warn(
            f"{path} was written by sklearn-vae {written_by}, and is loaded by "
            f"{__version__}; check its results.",
            UserWarning,
            stacklevel=2,
        )
    return estimator
