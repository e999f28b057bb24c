"""A saved Keras model on disk → `SavedModel`: its config (parsed JSON) and its weight arrays by layer.

Reads, without Keras or TensorFlow and without running anything from the file:
- Keras 3 `.keras` archives (zip: `config.json`, `metadata.json`, `model.weights.h5`);
- legacy full-model `.h5` files (tf.keras 2.x, Keras 2, Keras 3's legacy writer: `model_config`
  attribute, weights under `model_weights/<layer>/` in `weight_names` order);
- a model config JSON (`model.to_json()`) with a `.weights.h5` (Keras 3 or legacy layout);
- one layer's `get_config()` JSON with an `.npz` holding `kernel` and `bias`.
The format is told from the content, never from the name. In a Keras 3 weights file, layers are
keyed by class and occurrence (`layers/conv2d_transpose_1/vars/0`), not by the user's names;
they are mapped back through the config's layer order.

Strangers' files: every HDF5 file is read by `hdf5_file` (a worker process with a time limit;
only data physically inside the file; nothing outside it is opened). Weight names are resolved
only inside their layer's group (an absolute name is refused); every dataset to be read is
located, its dtype checked and the declared bytes of all of them summed against the limit before
any is read, each then streamed into one array. Zip members go through `zip_members`, the
weights member copied to an unlinked temporary file, never held in memory. Inputs must be regular
files (a FIFO would block).
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deconv_compiler.array_file import ArrayFileError, open_array_file
from deconv_compiler.errors import KerasModelError, Problem, shown
from deconv_compiler.hdf5_file import Attribute, Dataset, Group, HDF5Error, HDF5Reader, Layout, Unreadable
from deconv_compiler.keras_ops import is_op_entry
from deconv_compiler.limits import MAX_WEIGHT_BYTES
from deconv_compiler.zip_members import ZipMemberError, copy_member, member_info, read_member

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAX_CONFIG_BYTES = 64 * 2**20
# A real config has one `[`, `{` or `,` per ~16 bytes (a 64 MiB one about 4 million): a text of
# nothing but tiny containers, which Python holds in ~26x its size, is refused before parsing.
MAX_CONFIG_VALUES = 8_000_000
MAX_METADATA_BYTES = 2**20
# The attributes read from an HDF5 file's groups: the model's config and Keras version, the
# layer and weight names of Keras 2 / tf.keras files.
H5_ATTRIBUTES = frozenset({"model_config", "keras_version", "layer_names", "weight_names"})


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
        with _open_regular(path) as handle:
            data = handle.read(8)
            if data.lstrip().startswith(b"{"):
                handle.seek(0)
                data = handle.read(MAX_CONFIG_BYTES + 1)
    except (OSError, _Refusal):
        return False
    return looks_like_saved_model(data)


def looks_like_saved_model(data: bytes) -> bool:
    """`is_saved_model` for a file's first bytes (a JSON config whole, up to MAX_CONFIG_BYTES + 1;
    what is beyond is not looked at): those of a .keras archive or an HDF5 file, or JSON whose top
    level is a Keras `class_name` object."""
    if data.startswith(ZIP_MAGIC) or data.startswith(HDF5_MAGIC):
        return True
    text = data[: MAX_CONFIG_BYTES + 1]
    if not text.lstrip().startswith(b"{") or b'"class_name"' not in text:
        return False  # a spec, parsed once, by the spec reader
    if _json_values(text) > MAX_CONFIG_VALUES:
        return b'"class_name"' in text  # read_saved_model says why it is refused
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return (
        isinstance(parsed, dict) and "class_name" in parsed and "config" in parsed and "layers" not in parsed
    )


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
    with _open_regular(path) as handle:
        return _read_bounded(handle, 7, "")


def _open_regular(path: str | Path, what: str = "") -> Any:
    """`path` opened for reading, refused unless it is a regular file: a FIFO or a device would
    block or never end (opened without blocking, checked on the open descriptor). `what` names
    the file in messages ("" when it is the file the problem is about)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise _Refusal(_located(what, "is a directory, not a saved model")) from None
    except OSError as exc:
        raise _Refusal(f"cannot read{' ' + what if what else ''}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "not a regular file (a pipe or a device)"
        if stat.S_ISDIR(mode):
            kind = "a directory, not a saved model"
        raise _Refusal(_located(what, f"is {kind}"))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _no_weights_argument(weights: str | Path | None, kind: str) -> None:
    if weights is not None:
        raise _Refusal(f"is {kind}, which holds its own weights: drop --weights")


# --- .keras ------------------------------------------------------------------------------------


def _read_archive(path: Path, shown_path: str, max_weight_bytes: int) -> SavedModel:
    try:
        with _open_regular(path) as handle, zipfile.ZipFile(handle) as archive:
            names = set(archive.namelist())
            for member in ("config.json", "model.weights.h5"):
                if member not in names:
                    raise _Refusal(f"is not a Keras model archive: it has no {member}")
            weights_limit = max_weight_bytes + 2**24  # the weights and HDF5's own structures
            member_info(archive, "model.weights.h5", weights_limit)  # refused before the rest
            config = _json_object(read_member(archive, "config.json", MAX_CONFIG_BYTES), "config.json")
            version = None
            if "metadata.json" in names:
                try:
                    metadata = json.loads(read_member(archive, "metadata.json", MAX_METADATA_BYTES))
                    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
                except (ValueError, RecursionError):  # ZipMemberError is a ValueError
                    version = None  # only informative
            with tempfile.TemporaryFile() as weights_file:  # unlinked: nothing left behind
                copy_member(archive, "model.weights.h5", weights_limit, weights_file)
                weights_file.flush()
                with _hdf5(weights_file.fileno(), "model.weights.h5 in the archive", max_weight_bytes) as h5:
                    weights = _keras3_weights(h5, config, max_weight_bytes)
    except ZipMemberError as exc:
        raise _Refusal(f"{exc}") from None
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise _Refusal(f"is not a readable .keras archive (corrupt or truncated zip: {exc})") from None
    except OSError as exc:
        raise _Refusal(f"cannot read the archive: {exc}") from None
    return SavedModel(shown_path, "keras", config, weights, version if isinstance(version, str) else None)


def _json_values(data: bytes | str) -> int:
    """An upper bound on the containers and values a JSON text holds: its `[`, `{` and `,`."""
    if isinstance(data, bytes):
        return data.count(b"[") + data.count(b"{") + data.count(b",")
    return data.count("[") + data.count("{") + data.count(",")


def _json_object(data: bytes | str, where: str) -> dict[str, Any]:
    """The JSON object in `data`, parsed once the number of values is known to be bounded:
    Python takes up to ~26x the text's size for tiny containers (64 MiB of `{},` → 1.7 GB)."""
    values = _json_values(data)
    if values > MAX_CONFIG_VALUES:
        raise _Refusal(f"{where} holds about {values:,} JSON values; the limit is {MAX_CONFIG_VALUES:,}")
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
    h5: _H5, config: Mapping[str, Any], max_weight_bytes: int
) -> dict[str, tuple[np.ndarray, ...]]:
    """`layers/<snake_case class>[_<n>]/vars/<i>`, numbered per class in the config's layer order
    (Keras' `_save_container_state`); a nested model's layers under its own key,
    `layers/sequential/layers/conv2d/vars/0`. Keyed by layer path (`block/conv2d`)."""
    if h5.layout.get("layers") is None:
        return {}
    wanted: dict[str, list[Dataset]] = {}
    _keras3_container(h5, _config_layers(config), "layers", "", wanted, depth=0)
    return h5.read_all(wanted, max_weight_bytes)


def _keras3_container(
    h5: _H5,
    entries: list[Mapping[str, Any]],
    group: str,
    prefix: str,
    wanted: dict[str, list[Dataset]],
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
                h5, _config_layers(entry), f"{group}/{key}/layers", f"{prefix}{name}/", wanted, depth + 1
            )
            continue
        variables = f"{group}/{key}/vars"
        if h5.layout.get(variables) is None:
            continue
        h5.group(variables)
        count = len(h5.layout.children(variables))
        datasets = []
        for index in range(count):
            if h5.layout.get(f"{variables}/{index}") is None:
                raise _Refusal(h5.located(f"{variables} has no variable {index}"))
            datasets.append(h5.dataset(f"{variables}/{index}"))
        if datasets:
            wanted[prefix + name] = datasets


# --- legacy .h5 -------------------------------------------------------------------------------


def _read_legacy_h5(path: Path, shown_path: str, max_weight_bytes: int) -> SavedModel:
    with _open_regular(path) as handle, _hdf5(handle.fileno(), "", max_weight_bytes) as h5:
        root = h5.group("")
        raw = root.attrs.get("model_config")
        if raw is None:
            hint = " (a weights-only file: give the model's config JSON and pass this file as --weights)"
            raise _Refusal("has no model_config: it is not a full Keras model" + hint)
        if not isinstance(raw, str):
            raise _Refusal(f"model_config must be JSON text, got {_attribute_kind(raw)}")
        config = _json_object(raw, "model_config")
        version = root.attrs.get("keras_version")
        weights = {}
        if h5.layout.get("model_weights") is not None:
            weights = _legacy_weights(h5, "model_weights", config, max_weight_bytes)
        return SavedModel(shown_path, "h5", config, weights, version if isinstance(version, str) else None)


def _attribute_kind(value: Attribute) -> str:
    if isinstance(value, Unreadable):
        return value.description
    return f"a list of {len(value)} names" if isinstance(value, tuple) else "a single text"


def _names(h5: _H5, group: Group, attribute: str) -> tuple[str, ...]:
    """A list-of-names attribute (`layer_names`, `weight_names`); absent means none."""
    value = group.attrs.get(attribute, ())
    if not isinstance(value, tuple):
        where = h5.located(f"{group.path or '/'}: attribute {attribute}")
        raise _Refusal(f"{where} must be a list of names, got {_attribute_kind(value)}")
    return value


def _legacy_weights(
    h5: _H5, group_path: str, config: Mapping[str, Any], max_weight_bytes: int
) -> dict[str, tuple[np.ndarray, ...]]:
    """Per layer, the datasets named by its `weight_names` attribute, in that order, each found
    inside the layer's group (an absolute name would reach anywhere in the file). A nested
    model's group lists all its layers' weights, trainable ones first (Keras' `_legacy_weights`):
    they are dealt back to its layers by their variable counts (`_split_nested`)."""
    group = h5.group(group_path)
    entries = {_layer_name(entry): entry for entry in _config_layers(config)}
    wanted: dict[str, list[Dataset]] = {}
    for layer in _names(h5, group, "layer_names"):
        layer_path = _inside(h5, group_path, layer)
        if h5.layout.get(layer_path) is None:
            raise _Refusal(h5.located(f"{group_path or '/'} lists layer {layer!r} but has no group for it"))
        layer_group = h5.group(layer_path)
        weight_names = _names(h5, layer_group, "weight_names")
        if weight_names:
            wanted[layer] = [h5.dataset(_inside(h5, layer_path, name)) for name in weight_names]
    arrays = h5.read_all(wanted, max_weight_bytes)
    weights: dict[str, tuple[np.ndarray, ...]] = {}
    for layer, found in arrays.items():
        entry = entries.get(layer)
        if entry is not None and _is_model(entry):
            weights.update(_split_nested(entry, found, h5.located(f"{group_path}/{layer}")))
        else:
            weights[layer] = found
    return weights


def _inside(h5: _H5, group_path: str, name: str) -> str:
    """`name` as a path inside the group: relative names only (HDF5 has no `..`, but an absolute
    name starts from the root, outside the Keras groups)."""
    if name.startswith("/"):
        where = h5.located(f"{group_path or '/'}")
        raise _Refusal(
            f"{where}: name {shown(name)} is an absolute path; weights are read only from inside "
            "their layer's group"
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts:
        raise _Refusal(h5.located(f"{group_path or '/'}: name {shown(name)} names no object"))
    return "/".join([group_path, *parts] if group_path else parts)


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
    with _open_regular(path) as handle:
        raw = _read_bounded(handle, MAX_CONFIG_BYTES, "")
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
    with _open_regular(weights, f"weights file {weights}") as handle:
        head = _read_bounded(handle, 7, f"weights file {weights}")
        if head.startswith(HDF5_MAGIC):  # read on the descriptor checked above
            with _hdf5(handle.fileno(), str(weights), max_weight_bytes) as h5:
                if "layer_names" in h5.group("").attrs:  # Keras 2 / tf.keras save_weights
                    arrays = _legacy_weights(h5, "", config, max_weight_bytes)
                else:
                    arrays = _keras3_weights(h5, config, max_weight_bytes)
            return SavedModel(shown_path, "json", config, arrays, version)
    if head.startswith(ZIP_MAGIC):
        arrays = _npz_weights(Path(weights), config, max_weight_bytes)
        return SavedModel(shown_path, "json", config, arrays, version)
    raise _Refusal(f"weights file {weights} is neither HDF5 (.weights.h5) nor .npz")


def _read_bounded(handle: Any, limit: int, what: str) -> bytes:
    """At most `limit` + 1 bytes (one more tells that there are more)."""
    try:
        data: bytes = handle.read(limit + 1)
    except OSError as exc:
        raise _Refusal(f"cannot read{' ' + what if what else ''}: {exc.strerror}") from None
    return data


def _npz_weights(
    path: Path, config: Mapping[str, Any], max_weight_bytes: int
) -> dict[str, tuple[np.ndarray, ...]]:
    """One layer's kernel and bias from an .npz, through `array_file` (headers checked before any
    data is read, never unpickled); together they may hold at most `max_weight_bytes`."""
    name = _layer_name(config) or "layer"
    try:
        with open_array_file(path, str(path), max_weight_bytes) as archive:
            if archive.kind != "npz":
                raise _Refusal(
                    f"weights file {path} is a single .npy array; give an .npz with 'kernel' and 'bias'"
                )
            if "kernel" not in archive.names:
                found = ", ".join(archive.names) or "none"
                raise _Refusal(f"weights file {path} has no array named 'kernel' (found: {found})")
            headers = {n: archive.header(n) for n in ("kernel", "bias") if n in archive.names}
            total = sum(header.nbytes for header in headers.values())
            if total > max_weight_bytes:
                raise _Refusal(
                    f"weights file {path} holds {total:,} bytes; the limit is {max_weight_bytes:,}"
                )
            arrays = tuple(archive.read(n, header) for n, header in headers.items())
    except ArrayFileError as exc:
        raise _Refusal(f"cannot read weights file {exc}") from None
    return {name: arrays}


# --- HDF5 ---------------------------------------------------------------------------------------


def _located(where: str, message: str) -> str:
    if not where:
        return message
    return f"{where} {message}" if message.startswith("is ") else f"{where}: {message}"


@dataclass(frozen=True)
class _H5:
    """An HDF5 file being read: its layout, and its datasets on request; `where` names the file
    in messages ("" when it is the file the problem is about)."""

    reader: HDF5Reader
    where: str

    @property
    def layout(self) -> Layout:
        return self.reader.layout

    def located(self, message: str) -> str:
        return _located(self.where, message)

    def group(self, path: str) -> Group:
        obj = self.layout.get(path)
        if not isinstance(obj, Group):
            what = "is missing" if obj is None else "is a dataset, not a group"
            raise _Refusal(self.located(f"{path or '/'} {what}"))
        return obj

    def dataset(self, path: str) -> Dataset:
        obj = self.layout.get(path)
        if not isinstance(obj, Dataset):
            what = "is missing" if obj is None else "is a group, not a dataset"
            raise _Refusal(self.located(f"{path} {what}"))
        if not obj.numeric:
            raise _Refusal(self.located(f"{path} holds {shown(obj.dtype)} values, not numbers"))
        return obj

    def read_all(
        self, wanted: Mapping[str, list[Dataset]], max_weight_bytes: int
    ) -> dict[str, tuple[np.ndarray, ...]]:
        """Every wanted dataset, once the declared bytes of all of them fit the limit."""
        datasets = [dataset for found in wanted.values() for dataset in found]
        total = sum(dataset.nbytes for dataset in datasets)
        if total > max_weight_bytes:
            raise _Refusal(
                self.located(
                    f"the weights take {total:,} bytes (as declared); the limit is {max_weight_bytes:,} "
                    "(--max-weight-size)"
                )
            )
        for dataset in datasets:
            if dataset.chunk_bytes > max_weight_bytes:
                raise _Refusal(
                    self.located(
                        f"{dataset.path} is stored in chunks of {dataset.chunk_bytes:,} bytes; "
                        f"the limit is {max_weight_bytes:,}"
                    )
                )
        arrays = iter(self.reader.read(datasets))
        return {name: tuple(next(arrays) for _ in found) for name, found in wanted.items()}


@contextmanager
def _hdf5(fd: int, where: str, max_weight_bytes: int) -> Iterator[_H5]:
    """The HDF5 file open on `fd`, read in a worker; its refusals and failures name `where`."""
    try:
        with HDF5Reader(fd, H5_ATTRIBUTES, max_weight_bytes) as reader:
            yield _H5(reader, where)
    except HDF5Error as exc:
        raise _Refusal(_located(where, str(exc))) from None
