"""A saved Keras model on disk → `SavedModel`: its config (parsed JSON) and its weight arrays by layer.

Reads, without Keras or TensorFlow and without running anything from the file:
- Keras 3 `.keras` archives (zip: `config.json`, `metadata.json`, `model.weights.h5`);
- legacy full-model `.h5` files (tf.keras 2.x, Keras 2, Keras 3's legacy writer: `model_config`
  attribute, weights under `model_weights/<layer>/` in `weight_names` order);
- a model config JSON (`model.to_json()`) with a `.weights.h5` (Keras 3 or legacy layout);
- one layer's `get_config()` JSON with an `.npz` holding `kernel` and `bias`.
The format is told from the content, never from the name. In a Keras 3 weights file, layers are
keyed by class and occurrence (`layers/conv2d_transpose_1/vars/0`), not by the user's names;
they are mapped back through the config's layer order. Sizes are checked before data is read;
external links and virtual datasets are refused (they would read other files).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deconv_compiler.errors import KerasModelError, Problem, shown
from deconv_compiler.keras_ops import is_op_entry
from deconv_compiler.limits import MAX_WEIGHT_BYTES
from deconv_compiler.weights import pickle_refusal

if TYPE_CHECKING:
    import h5py

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAX_CONFIG_BYTES = 64 * 2**20


@dataclass(frozen=True, eq=False)
class SavedModel:
    file: str  # as the user gave it
    format: str  # "keras", "h5" or "json"
    config: Mapping[str, Any]  # {"class_name": ..., "config": {...}}: a model's or one layer's
    weights: Mapping[str, tuple[np.ndarray, ...]]  # layer name → arrays in get_weights() order
    keras_version: str | None


class _Refusal(Exception):
    """A problem with the file; becomes a KerasModelError naming it."""


def is_saved_model(path: str | Path) -> bool:
    """A .keras archive, an HDF5 file, or JSON whose top level is a Keras `class_name` object."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if head.startswith(ZIP_MAGIC) or head.startswith(HDF5_MAGIC):
                return True
            if not head.lstrip().startswith(b"{"):
                return False
            handle.seek(0)
            text = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError:
        return False
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "class_name" in data and "config" in data and "layers" not in data


def read_saved_model(
    path: str | Path, weights: str | Path | None = None, max_weight_bytes: int = MAX_WEIGHT_BYTES
) -> SavedModel:
    """Read a saved model (format from the content); `weights` goes with a config JSON."""
    shown_path = str(path)
    try:
        head = _head(Path(path))
        if head.startswith(ZIP_MAGIC):
            _no_weights_argument(weights, "a .keras archive")
            return _read_archive(Path(path), shown_path, max_weight_bytes)
        if head.startswith(HDF5_MAGIC):
            _no_weights_argument(weights, "a full-model .h5 file")
            return _read_legacy_h5(Path(path), shown_path, max_weight_bytes)
        return _read_config_json(Path(path), shown_path, weights, max_weight_bytes)
    except _Refusal as exc:
        raise KerasModelError([Problem((), str(exc), shown_path)]) from None


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(8)
    except IsADirectoryError:
        raise _Refusal("is a directory, not a saved model") from None
    except OSError as exc:
        raise _Refusal(f"cannot read: {exc.strerror}") from None


def _no_weights_argument(weights: str | Path | None, kind: str) -> None:
    if weights is not None:
        raise _Refusal(f"is {kind}, which holds its own weights: drop --weights")


# --- .keras ------------------------------------------------------------------------------------


def _read_archive(path: Path, shown_path: str, max_weight_bytes: int) -> SavedModel:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for member in ("config.json", "model.weights.h5"):
                if member not in names:
                    raise _Refusal(f"is not a Keras model archive: it has no {member}")
            config = _json_object(_member(archive, "config.json", MAX_CONFIG_BYTES), "config.json")
            version = None
            if "metadata.json" in names:
                try:
                    metadata = json.loads(_member(archive, "metadata.json", 2**20))
                    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
                except ValueError:
                    version = None
            data = _member(archive, "model.weights.h5", max_weight_bytes + 2**24)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise _Refusal(f"is not a readable .keras archive (corrupt or truncated zip: {exc})") from None
    except OSError as exc:
        raise _Refusal(f"cannot read the archive: {exc}") from None
    with _open_h5(io.BytesIO(data), "model.weights.h5 in the archive") as h5:
        weights = _keras3_weights(h5, config, max_weight_bytes, "model.weights.h5")
    return SavedModel(shown_path, "keras", config, weights, version if isinstance(version, str) else None)


def _member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise _Refusal(f"{name} in the archive is {info.file_size:,} bytes; the limit is {limit:,}")
    with archive.open(info) as handle:
        data = handle.read(limit + 1)  # the declared size may lie: read no more than allowed
    if len(data) > limit:
        raise _Refusal(f"{name} in the archive is larger than {limit:,} bytes")
    return data


def _json_object(data: bytes | str, where: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text)
    except UnicodeDecodeError:
        raise _Refusal(f"{where} is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise _Refusal(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _Refusal(f"{where} must hold a JSON object, got {type(value).__name__}")
    return value


def _snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case: the key of a layer in a Keras 3 weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


MODEL_CLASSES = ("Sequential", "Functional", "Model")
MAX_NESTING = 32  # models inside models, at most


def _config_layers(config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    body = config.get("config")
    layers = body.get("layers") if isinstance(body, Mapping) else None
    if isinstance(layers, list):
        return [entry for entry in layers if isinstance(entry, Mapping)]
    return [config]  # a single layer's config


def _is_model(entry: Mapping[str, Any]) -> bool:
    body = entry.get("config")
    return entry.get("class_name") in MODEL_CLASSES and isinstance(body, Mapping) and "layers" in body


def _layer_name(entry: Mapping[str, Any]) -> str | None:
    name = entry.get("name")
    body = entry.get("config")
    if not isinstance(name, str) and isinstance(body, Mapping):
        name = body.get("name")
    return name if isinstance(name, str) else None


def _keras3_weights(
    h5: h5py.File, config: Mapping[str, Any], max_weight_bytes: int, where: str
) -> dict[str, tuple[np.ndarray, ...]]:
    """`layers/<snake_case class>[_<n>]/vars/<i>`, numbered per class in the config's layer order
    (Keras' `_save_container_state`); a nested model's layers under its own key,
    `layers/sequential/layers/conv2d/vars/0`. Keyed by layer path (`block/conv2d`)."""
    if h5.get("layers") is None:
        return {}
    _check_h5_size(h5, max_weight_bytes, where)
    weights: dict[str, tuple[np.ndarray, ...]] = {}
    _keras3_container(h5, _config_layers(config), "layers", "", weights, where, depth=0)
    return weights


def _keras3_container(
    h5: h5py.File,
    entries: list[Mapping[str, Any]],
    group: str,
    prefix: str,
    weights: dict[str, tuple[np.ndarray, ...]],
    where: str,
    depth: int,
) -> None:
    if depth > MAX_NESTING:
        raise _Refusal(f"models are nested more than {MAX_NESTING} deep")
    used: dict[str, int] = {}
    for entry in entries:
        class_name = entry.get("class_name")
        name = _layer_name(entry)
        if not isinstance(class_name, str) or name is None or is_op_entry(entry):
            continue
        key = _snake_case(class_name)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        if _is_model(entry):
            _keras3_container(
                h5,
                _config_layers(entry),
                f"{group}/{key}/layers",
                f"{prefix}{name}/",
                weights,
                where,
                depth + 1,
            )
            continue
        variables = h5.get(f"{group}/{key}/vars")
        if variables is None or not len(variables):
            continue
        arrays = []
        for index in range(len(variables)):
            if str(index) not in variables:
                raise _Refusal(f"{where}: {group}/{key}/vars has no variable {index}")
            arrays.append(_dataset(variables, str(index), f"{where}: {group}/{key}/vars/{index}"))
        weights[prefix + name] = tuple(arrays)


# --- legacy .h5 -------------------------------------------------------------------------------


def _read_legacy_h5(path: Path, shown_path: str, max_weight_bytes: int) -> SavedModel:
    with _open_h5(path, shown_path) as h5:
        raw = h5.attrs.get("model_config")
        if raw is None:
            hint = " (a weights-only file: give the model's config JSON and pass this file as --weights)"
            raise _Refusal("has no model_config: it is not a full Keras model" + hint)
        config = _json_object(_text(raw), "model_config")
        version = h5.attrs.get("keras_version")
        group = h5.get("model_weights")
        weights = {} if group is None else _legacy_weights(group, config, max_weight_bytes, "model_weights")
        return SavedModel(shown_path, "h5", config, weights, _text(version) if version is not None else None)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def _legacy_weights(
    group: Any, config: Mapping[str, Any], max_weight_bytes: int, where: str
) -> dict[str, tuple[np.ndarray, ...]]:
    """Per layer, the datasets named by its `weight_names` attribute, in that order. A nested
    model's group lists all its layers' weights, trainable ones first (Keras' `_legacy_weights`):
    they are dealt back to its layers by their variable counts (`_split_nested`)."""
    _check_h5_size(group, max_weight_bytes, where)
    names = group.attrs.get("layer_names")
    entries = {_layer_name(entry): entry for entry in _config_layers(config)}
    weights: dict[str, tuple[np.ndarray, ...]] = {}
    for layer in [] if names is None else [_text(n) for n in names]:
        layer_group = group.get(layer)
        if layer_group is None:
            raise _Refusal(f"{where} lists layer {layer!r} but has no group for it")
        weight_names = [_text(n) for n in layer_group.attrs.get("weight_names", [])]
        if not weight_names:
            continue
        arrays = tuple(_dataset(layer_group, name, f"{where}/{layer}/{name}") for name in weight_names)
        entry = entries.get(layer)
        if entry is not None and _is_model(entry):
            weights.update(_split_nested(entry, arrays, f"{where}/{layer}"))
        else:
            weights[layer] = arrays
    return weights


def _split_nested(
    entry: Mapping[str, Any], arrays: tuple[np.ndarray, ...], where: str
) -> dict[str, tuple[np.ndarray, ...]]:
    """A nested model's flat weight list → its layers' (`model/layer` paths), nested models included."""
    leaves: list[tuple[str, int, int]] = []  # path, trainable count, non-trainable count
    _leaf_variables(entry, "", True, leaves, depth=0)
    trainable_count = sum(t for _, t, _ in leaves)
    expected = trainable_count + sum(n for _, _, n in leaves)
    if expected != len(arrays):
        raise _Refusal(f"{where} holds {len(arrays)} weight arrays; its layers' configs call for {expected}")
    trainable, non_trainable = iter(arrays[:trainable_count]), iter(arrays[trainable_count:])
    split: dict[str, list[np.ndarray]] = {path: [] for path, _, _ in leaves}
    for path, t, _ in leaves:
        split[path].extend(next(trainable) for _ in range(t))
    for path, _, n in leaves:
        split[path].extend(next(non_trainable) for _ in range(n))
    return {path: tuple(found) for path, found in split.items() if found}


def _leaf_variables(
    entry: Mapping[str, Any], prefix: str, trainable: bool, leaves: list[tuple[str, int, int]], depth: int
) -> None:
    if depth > MAX_NESTING:
        raise _Refusal(f"models are nested more than {MAX_NESTING} deep")
    name = _layer_name(entry) or "?"
    body = entry.get("config")
    body = body if isinstance(body, Mapping) else {}
    trainable = trainable and body.get("trainable", True) is not False
    if _is_model(entry):
        for inner in _config_layers(entry):
            if not is_op_entry(inner):
                _leaf_variables(inner, f"{prefix}{name}/", trainable, leaves, depth + 1)
        return
    t, n = layer_variables(str(entry.get("class_name")), body)
    leaves.append((prefix + name, t if trainable else 0, n + (0 if trainable else t)))


def layer_variables(class_name: str, config: Mapping[str, Any]) -> tuple[int, int]:
    """How many trainable and non-trainable variables a layer of `class_name` owns (Keras 3)."""
    bias = 1 if config.get("use_bias", True) is not False else 0
    center = 1 if config.get("center", True) is not False else 0
    scale = 1 if config.get("scale", True) is not False else 0
    if class_name.startswith("SeparableConv"):
        return 2 + bias, 0
    if (
        class_name.startswith(("Conv", "DepthwiseConv", "Convolution", "Deconvolution"))
        or class_name == "Dense"
    ):
        return 1 + bias, 0
    if class_name == "BatchNormalization":
        return center + scale, 2
    if class_name in ("LayerNormalization", "GroupNormalization"):
        return center + scale, 0
    if class_name == "PReLU":
        return 1, 0
    if class_name == "Normalization":
        return 0, 0 if config.get("mean") is not None else 3
    return 0, 0


# --- config JSON + weights ---------------------------------------------------------------------


def _read_config_json(
    path: Path, shown_path: str, weights: str | Path | None, max_weight_bytes: int
) -> SavedModel:
    try:
        raw = path.read_bytes()[: MAX_CONFIG_BYTES + 1]
    except OSError as exc:
        raise _Refusal(f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _Refusal(f"is larger than {MAX_CONFIG_BYTES:,} bytes: not a Keras config")
    if raw.lstrip()[:1] != b"{":
        raise _Refusal("is neither a .keras archive, an .h5 file nor a Keras config JSON")
    config = _json_object(raw, "the config")
    if "class_name" not in config or "config" not in config:
        raise _Refusal('is JSON but not a Keras config (no "class_name" and "config")')
    version = config.get("keras_version")
    version = version if isinstance(version, str) else None
    if weights is None:
        raise _Refusal("is a Keras config without weights: pass the weights file (--weights)")
    weights_path = Path(weights)
    head = _weights_head(weights_path)
    if head.startswith(HDF5_MAGIC):
        with _open_h5(weights_path, str(weights)) as h5:
            if "layer_names" in h5.attrs:  # Keras 2 / tf.keras save_weights
                arrays = _legacy_weights(h5, config, max_weight_bytes, str(weights))
            else:
                arrays = _keras3_weights(h5, config, max_weight_bytes, str(weights))
    elif head.startswith(ZIP_MAGIC):
        arrays = _npz_weights(weights_path, config, max_weight_bytes)
    else:
        raise _Refusal(f"weights file {weights} is neither HDF5 (.weights.h5) nor .npz")
    return SavedModel(shown_path, "json", config, arrays, version)


def _weights_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(8)
    except OSError as exc:
        raise _Refusal(f"cannot read weights file {path}: {exc.strerror}") from None


def _npz_weights(
    path: Path, config: Mapping[str, Any], max_weight_bytes: int
) -> dict[str, tuple[np.ndarray, ...]]:
    """One layer's kernel and bias from an .npz (never unpickled)."""
    name = _layer_name(config) or "layer"
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "kernel" not in archive.files:
                found = ", ".join(archive.files) or "none"
                raise _Refusal(f"weights file {path} has no array named 'kernel' (found: {found})")
            total = sum(
                archive.zip.getinfo(f"{n}.npy").file_size
                for n in archive.files
                if f"{n}.npy" in archive.zip.namelist()
            )
            if total > max_weight_bytes:
                raise _Refusal(
                    f"weights file {path} holds {total:,} bytes; the limit is {max_weight_bytes:,}"
                )
            arrays = [archive["kernel"]]
            if "bias" in archive.files:
                arrays.append(archive["bias"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _Refusal(f"cannot read weights file {path}: {pickle_refusal(exc)}") from None
    for array in arrays:
        _check_float(array, str(path))
    return {name: tuple(arrays)}


# --- HDF5 ---------------------------------------------------------------------------------------


class _open_h5:  # noqa: N801 - used like open()
    """h5py.File for reading, with its errors turned into a refusal naming the file."""

    def __init__(self, source: Path | io.BytesIO, where: str) -> None:
        self.source, self.where = source, where

    def __enter__(self) -> h5py.File:
        import h5py  # only the commands that read Keras files pay for it

        try:
            self.file = h5py.File(self.source, "r")
        except (OSError, ValueError) as exc:
            raise _Refusal(f"{self.where} is not a readable HDF5 file ({exc})") from None
        return self.file

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def _check_h5_size(group: Any, limit: int, where: str) -> None:
    """Refuse external links, virtual datasets and too many bytes before reading any data."""
    import h5py

    total = 0
    problems: list[str] = []

    def visit(name: str, link: Any) -> None:
        nonlocal total
        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            problems.append(f"{where}: {name} is a link; links are not followed")
            return
        obj = group.get(name)
        if isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                problems.append(f"{where}: {name} is a virtual dataset (it would read other files)")
            elif obj.external:
                problems.append(f"{where}: {name} stores its data in an external file")
            total += int(obj.size) * obj.dtype.itemsize

    group.visititems_links(visit)
    if problems:
        raise _Refusal(problems[0])
    if total > limit:
        raise _Refusal(
            f"{where} holds {total:,} bytes of weights; the limit is {limit:,} (--max-weight-size)"
        )


def _dataset(group: Any, name: str, where: str) -> np.ndarray:
    import h5py

    obj = group.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise _Refusal(f"{where} is missing")
    try:
        array = np.asarray(obj[()])
    except (OSError, ValueError, TypeError) as exc:
        raise _Refusal(f"{where} cannot be read ({exc})") from None
    _check_float(array, where)
    return array


def _check_float(array: np.ndarray, where: str) -> None:
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise _Refusal(f"{where} holds {shown(str(array.dtype))} values, not numbers")
