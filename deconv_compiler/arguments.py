"""The spec's argument set: names, Keras defaults, simple types, and the JSON Schema.

Pydantic models describe what a spec may contain (the JSON Schema in `specs/schema/` is
generated from them). Checks that depend on the layer's rank or on several arguments at once
live in `conv_layer` and `spec`, which use these models first.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, WithJsonSchema

from deconv_compiler import activations
from deconv_compiler.keras_objects import CONSTRAINT, INITIALIZER, REGULARIZER, Vocabulary
from deconv_compiler.limits import MAX_SIZE

LAYER_TYPES: dict[str, int] = {
    **{f"Conv{r}DTranspose": r for r in (1, 2, 3)},
    **{f"Convolution{r}DTranspose": r for r in (1, 2, 3)},
    **{f"layer_conv_{r}d_transpose": r for r in (1, 2, 3)},
}
PositiveInt = Annotated[int, Strict(), Field(gt=0, le=MAX_SIZE)]
_INT_OR_LIST = {"oneOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]}
IntOrList = Annotated[Any, WithJsonSchema(_INT_OR_LIST)]
OptionalIntOrList = Annotated[Any, WithJsonSchema({"oneOf": [*_INT_OR_LIST["oneOf"], {"type": "null"}]})]


def _identifier_schema(vocab: Vocabulary, nullable: bool) -> dict[str, Any]:
    options: list[dict[str, Any]] = [
        {"type": "string", "enum": vocab.names()},
        {
            "type": "object",
            "properties": {
                "class_name": {"type": "string", "enum": vocab.names()},
                "config": {"type": "object"},
                "module": {"type": "string"},
                "registered_name": {"type": ["string", "null"]},
            },
            "required": ["class_name"],
            "additionalProperties": False,
        },
    ]
    if nullable:
        options.append({"type": "null"})
    return {"oneOf": options}


Initializer = Annotated[Any, WithJsonSchema(_identifier_schema(INITIALIZER, nullable=True))]
Regularizer = Annotated[Any, WithJsonSchema(_identifier_schema(REGULARIZER, nullable=True))]
Constraint = Annotated[Any, WithJsonSchema(_identifier_schema(CONSTRAINT, nullable=True))]
ActivationName = Annotated[
    Any,
    WithJsonSchema({"oneOf": [{"type": "string", "enum": list(activations.NAMES)}, {"type": "null"}]}),
]
Padding = Annotated[
    Any, WithJsonSchema({"type": "string", "pattern": "^([vV][aA][lL][iI][dD]|[sS][aA][mM][eE])$"})
]
Shape = list[Annotated[int, Strict(), Field(gt=0, le=MAX_SIZE)] | None]
Weights = Annotated[
    Any,
    WithJsonSchema(
        {
            "oneOf": [
                {
                    "type": "string",
                    "description": ".npz path (relative to the spec) with `kernel` and `bias`",
                },
                {"type": "array", "description": "[kernel, bias] as nested lists, Keras layout"},
                {"type": "null"},
            ]
        }
    ),
]


# Lowering strategies (see deconv_compiler.strategies); `tune` times them on this machine.
Strategy = Literal["native", "conv", "subpixel", "gemm", "auto", "tune"]


class LayerArgs(BaseModel):
    """A transposed-convolution layer: Keras' arguments, Keras' defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Layer")

    type: Annotated[Any, WithJsonSchema({"type": "string", "enum": list(LAYER_TYPES)})] = "Conv2DTranspose"
    filters: PositiveInt
    kernel_size: IntOrList
    strides: IntOrList = 1
    padding: Padding = "valid"
    output_padding: OptionalIntOrList = None
    data_format: Annotated[
        Any,
        WithJsonSchema(
            {
                "oneOf": [
                    {"type": "string", "pattern": "^(?i:channels_last|channels_first)$"},
                    {"type": "null"},
                ]
            }
        ),
    ] = None
    dilation_rate: IntOrList = 1
    activation: ActivationName = None
    use_bias: Annotated[bool, Strict()] = True
    kernel_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"
    kernel_regularizer: Regularizer = None
    bias_regularizer: Regularizer = None
    activity_regularizer: Regularizer = None
    kernel_constraint: Constraint = None
    bias_constraint: Constraint = None
    input_shape: Shape | None = Field(None, description="input shape without the batch dimension")
    batch_input_shape: Shape | None = Field(None, description="input shape with the batch dimension")
    batch_size: PositiveInt | None = None
    dtype: Annotated[str, Strict()] | None = None
    name: Annotated[str, Strict(), Field(min_length=1)] | None = None
    trainable: Annotated[bool, Strict()] | None = None
    weights: Weights = None
    seed: Annotated[int, Strict(), Field(ge=0)] | None = Field(
        None, description="not Keras: seed for this layer's initializers"
    )
    strategy: Strategy | None = Field(
        None, description="not Keras: how this layer is lowered (default: the model's)"
    )


class InputArgs(BaseModel):
    """The model's input tensor, in Keras layout, batch dimension included."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Input")

    shape: Shape
    dtype: Annotated[str, Strict()] = "float32"
    name: Annotated[str, Strict(), Field(min_length=1)] = "input"


class ModelArgs(BaseModel):
    """A chain of transposed-convolution layers."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Model")

    name: Annotated[str, Strict(), Field(min_length=1)] = "model"
    input: InputArgs | None = None
    layers: Annotated[list[Any], Field(min_length=1, description="the chain, first layer first")]
    seed: Annotated[int, Strict(), Field(ge=0)] = 0
    strategy: Strategy = Field("auto", description="how layers are lowered unless a layer says otherwise")


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file (either form), generated from the models above."""
    layer = LayerArgs.model_json_schema()
    model = ModelArgs.model_json_schema(ref_template="#/$defs/{model}")
    model["properties"]["layers"]["items"] = {"$ref": "#/$defs/Layer"}
    defs = {**layer.pop("$defs", {}), **model.pop("$defs", {}), "Layer": layer, "Model": model}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "deconv-compiler spec",
        "description": "A Keras transposed-convolution layer, or a model made of a chain of them.",
        "oneOf": [{"$ref": "#/$defs/Layer"}, {"$ref": "#/$defs/Model"}],
        "$defs": defs,
    }
