"""The options that shape a model's inputs and outputs (`--fix-shape`, `--batch`, `--dim-names`,
`--output-names`), shared by `compile` and `export`, and the `ModelInterface` they make."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from deconv_compiler.model_interface import ModelInterface, parse_shape, split_names

F = TypeVar("F", bound=Callable[..., Any])


def interface_options(func: F) -> F:
    options = [
        click.option(
            "--fix-shape",
            "fix_shape",
            multiple=True,
            metavar="SHAPE",
            help="Fix an input's sizes, e.g. 1,64,64,3 (NAME=1,64,64,3 for a model of several inputs; "
            "repeatable); output shapes are re-inferred. NNAPI, CoreML, TensorRT and TFLite want this.",
        ),
        click.option(
            "--batch", "fixed_batch", type=int, default=None, help="Fix the batch size of every input."
        ),
        click.option(
            "--dim-names",
            default=None,
            metavar="NAMES",
            help="Names for the inputs' dynamic dims, in order, e.g. batch,height,width.",
        ),
        click.option(
            "--output-names", default=None, metavar="NAMES", help="New names of the outputs, in order."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def model_interface(kwargs: Mapping[str, Any]) -> ModelInterface:
    """The `ModelInterface` of the options above (raises `InterfaceError` on a bad value)."""
    return ModelInterface(
        shapes=tuple(parse_shape(text) for text in kwargs["fix_shape"]),
        batch=kwargs["fixed_batch"],
        dim_names=split_names(kwargs["dim_names"]),
        output_names=split_names(kwargs["output_names"]),
    )
