"""How a layer parser sees one call of a Keras layer (`LayerCall`: config, input shapes, weight
arrays, where problems go), with the argument readers the parsers share."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deconv_compiler.conv_layer import Problems, parse_activation
from deconv_compiler.errors import FieldPath, shown
from deconv_compiler.ir import (
    Op,
    Shape,
)
from deconv_compiler.keras_shapes import dims
from deconv_compiler.limits import MAX_SIZE


@dataclass(frozen=True)
class LayerCall:
    """One call of a Keras layer as its parser sees it: the config, the shapes it is called on,
    its weight arrays from the file, and where problems go."""

    name: str
    class_name: str
    config: Mapping[str, Any]
    path: FieldPath
    input_shapes: tuple[Shape, ...]
    arrays: tuple[np.ndarray, ...] | None
    policy: str  # the layer's dtype policy
    problems: Problems

    def fail(self, message: str, key: str | None = None) -> None:
        self.problems.add(self.path if key is None else (*self.path, key), message)

    @property
    def shape(self) -> Shape:
        return self.input_shapes[0]

    def single_input(self) -> bool:
        if len(self.input_shapes) != 1:
            self.fail(f"takes one input, got {len(self.input_shapes)}")
            return False
        return True

    def weights(self, count: int) -> tuple[np.ndarray, ...] | None:
        arrays = self.arrays
        if count == 0 and not arrays:
            return ()
        if arrays is None or len(arrays) != count:
            found = "none" if arrays is None else f"{len(arrays)} array(s)"
            self.fail(f"the weights file does not match the config: expected {count} array(s), found {found}")
            return None
        return tuple(np.asarray(a) for a in arrays)

    def number(self, key: str, default: float | None) -> float | None:
        """The number at `key` (its default when absent); None when the layer has none (its
        default is None) or when a problem was reported (a null where a number is needed)."""
        value = self.config.get(key, default)
        if value is None:
            if default is not None:
                self.fail("must be a number, got null", key)
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(f"must be a number, got {shown(value)}", key)
            return None
        return float(value)

    def axis(self, value: Any, key: str) -> int | None:
        rank = len(self.shape)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # tf.keras wrote BatchNormalization(axis=3) as [3]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not -rank <= value < rank
            or value % rank == 0
        ):
            self.fail(
                f"must be an axis of the {rank}-D input other than the batch axis, got {shown(value)}", key
            )
            return None
        return value % rank

    def ints(self, key: str, count: int, default: Any) -> tuple[int, ...] | None:
        value = self.config.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value] * count
        if (
            not isinstance(value, (list, tuple))
            or len(value) != count
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        ):
            self.fail(f"must be {count} non-negative integer(s), got {shown(value)}", key)
            return None
        return tuple(value)

    def pairs(self, key: str, count: int, default: Any) -> tuple[tuple[int, int], ...] | None:
        """ZeroPadding/Cropping amounts: an int, `count` ints (symmetric), or `count` pairs."""
        value = self.config.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value] * count
        if (
            count == 1
            and isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, int) for v in value)
        ):
            value = [value]
        if isinstance(value, (list, tuple)) and len(value) == count:
            pairs = [
                (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, (list, tuple)) else None
                for v in value
            ]
            if all(
                p is not None
                and len(p) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in p)
                for p in pairs
            ):
                return tuple((int(p[0]), int(p[1])) for p in pairs if p is not None)
        self.fail(f"must be {count} pair(s) of non-negative integers, got {shown(value)}", key)
        return None

    def spatial_axes(self, rank: int, has_format: bool = True) -> tuple[tuple[int, ...], int] | None:
        """The spatial Keras axes of a data_format-aware layer, and its channel axis."""
        if len(self.shape) != rank + 2:
            self.fail(f"expects a {rank + 2}-D input, got shape {dims(self.shape)}")
            return None
        data_format = self.data_format() if has_format else "channels_last"
        if data_format is None:
            return None
        if data_format == "channels_last":
            return tuple(range(1, rank + 1)), rank + 1
        return tuple(range(2, rank + 2)), 1

    def data_format(self) -> str | None:
        """Keras' `standardize_data_format`: lower-cased; None is the default, channels_last."""
        value = self.config.get("data_format")
        if value is None:
            return "channels_last"
        if isinstance(value, str) and value.lower() in ("channels_last", "channels_first"):
            return value.lower()
        self.fail(f"must be 'channels_last' or 'channels_first', got {shown(value)}", "data_format")
        return None

    def flag(self, key: str, default: bool) -> bool | None:
        value = self.config.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"must be true or false, got {shown(value)}", key)
            return None
        return value

    def count(self, key: str, default: int | None) -> int | None:
        """A positive integer (filters, groups, depth_multiplier...); `default` None: required."""
        value = self.config.get(key, default)
        if not is_int(value) or not 0 < value <= MAX_SIZE:
            self.fail(f"must be a positive integer, got {shown(value)}", key)
            return None
        return int(value)

    def sizes(self, key: str, rank: int, default: Any, minimum: int = 1) -> tuple[int, ...] | None:
        """Keras' `standardize_tuple`: one integer for every axis or exactly `rank` integers,
        each >= `minimum`; `default` None: required."""
        value = self.config.get(key, default)
        if value is None:
            self.fail("is required", key)
            return None
        if is_int(value):
            value = [value] * rank
        if not isinstance(value, (list, tuple)) or len(value) != rank or not all(is_int(v) for v in value):
            self.fail(f"must be an integer or a list of {rank} integers, got {shown(value)}", key)
            return None
        if not all(minimum <= v <= MAX_SIZE for v in value):
            self.fail(f"must be >= {minimum} (and <= {MAX_SIZE:,}) on every axis, got {shown(value)}", key)
            return None
        return tuple(int(v) for v in value)

    def padding(self, allowed: tuple[str, ...], lower: bool = True) -> str | None:
        """Keras' `standardize_padding` lower-cases (convolutions); pooling layers keep the
        string as given, and their `compute_output_shape` refuses anything but lower case."""
        value = self.config.get("padding", "valid")
        text = value.lower() if isinstance(value, str) and lower else value
        if text not in allowed:
            names = ", ".join(repr(a) for a in allowed)
            case = " (case-insensitive)" if lower else ""
            self.fail(f"must be one of {names}{case}, got {shown(value)}", "padding")
            return None
        return str(text)

    def axes(self, value: Any, key: str, batch: bool = False) -> tuple[int, ...] | None:
        """An axis or a list of distinct axes of the input, non-negative, in the order given;
        the batch axis only where `batch` (Keras reduces over it, the model then depends on it)."""
        rank = len(self.shape)
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        low = 0 if batch else 1
        if (
            not items
            or not all(is_int(a) and -rank <= a < rank and (a % rank) >= low for a in items)
            or len({a % rank for a in items}) != len(items)
        ):
            which = "axes" if batch else "axes other than the batch axis"
            self.fail(f"must be one or more distinct {which} of the {rank}-D input, got {shown(value)}", key)
            return None
        return tuple(int(a) % rank for a in items)

    def no_weights(self) -> bool:
        if self.arrays:
            self.fail(f"the weights file holds {len(self.arrays)} array(s) for a layer that has none")
            return False
        return True


LayerParser = Callable[[LayerCall], "tuple[Op, Shape] | None"]


def expect_shape(ctx: LayerCall, tensor: str, array: np.ndarray, expected: Sequence[int | None]) -> bool:
    if tuple(array.shape) != tuple(expected):
        ctx.fail(
            f"the weights file does not match the config: {tensor} has shape {tuple(array.shape)}, "
            f"expected {tuple(expected)}"
        )
        return False
    if not np.all(np.isfinite(array)):
        ctx.fail(f"{tensor} holds NaN or infinite values")
        return False
    return True


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def activation_name(ctx: LayerCall, key: str = "activation") -> str | None:
    return parse_activation(ctx.config.get(key), (*ctx.path, key), ctx.problems)


def activation_shape(ctx: LayerCall, activation: str, shape: Shape) -> Shape | None:
    """The shape after `activation`: glu halves Keras' last axis (an odd size is refused)."""
    if activation != "glu":
        return shape
    last = shape[-1]
    if last is not None and last % 2:
        ctx.fail(f"glu halves the last axis; its size is {last} (odd)", "activation")
        return None
    return (*shape[:-1], None if last is None else last // 2)
