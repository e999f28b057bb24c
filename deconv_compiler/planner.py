"""`ir.Graph` + `CompileOptions` → `Plan`: the graph in ONNX vocabulary, still free of onnx.

One planner for every graph, whichever front end made it:

- Weights: those no file gave are made by the layers' initializers (seeded by the options' seed,
  else the model's).
- BatchNormalization that directly follows a linear transposed convolution, convolution or Dense
  (its only consumer, on the channel axis, same dtype policy) is folded into that layer's kernel
  (a separable conv's pointwise kernel) and bias; elsewhere it is a Mul and an Add with Keras'
  inference formula.
- Layouts: every tensor lives in a physical layout (a permutation of its Keras axes). Convolutions,
  transposed convolutions, pooling and GroupNormalization need N,C,spatial (N,spatial,C for
  `gemm`); every other layer works in whatever layout its input has (axes, pads, scales and
  broadcast constants are permuted instead; Permute, Squeeze and ExpandDims only relabel the
  layout), except those whose meaning depends on memory order (Reshape, Flatten, RepeatVector,
  Dense off the channel axis). So a channels_last network gets one Transpose into the internal
  layout and one back, none between.
- Convolutions are ONNX Conv with the bias fused and the activation as the next node (the pair
  onnxruntime fuses); Keras' `same` padding is explicit wherever it does not depend on an unknown
  size, else SAME_UPPER (the same rule: ceil(i/s) outputs, the odd pad at the end).
- dtypes: each layer computes in its policy's dtype (the options' `dtype` over the layer's own);
  a Cast goes where a tensor meets a layer of another dtype, and at the outputs.
- Strategies: each transposed convolution's, by one precedence (`requested_strategy`), `auto`
  by the measured rule, `tune` from the tuner's timings (given to `plan_graph`).

This module is the stage's entry (`plan_graph`, `made_weights`) and joins the op planners' tables
into `OP_PLANNERS`; the rest is split by job:

- `plan`: the frozen plan the builder consumes (`Plan` and its steps).
- `batch_norm_folding`: `fold_batch_norms`, the folding above as a pure function of the graph.
- `conv_transpose_plan`: the strategy precedence and rule, and one transposed convolution's plan.
- `plan_context`: the planning state (`PlanContext`: layouts, dtypes, Transposes and Casts made
  once), layout helpers, the overflow-checked weight cast, the step helpers op planners share.
- `layer_plans` and `encoder_plans`: one planner per op type, each module with its own `PLANNERS`
  table (the basic layers; convolutions, pooling and the normalizations).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from deconv_compiler import encoder_plans, layer_plans
from deconv_compiler.batch_norm_folding import fold_batch_norms
from deconv_compiler.dtypes import io_dtype
from deconv_compiler.errors import InternalError
from deconv_compiler.ir import ConvTransposeOp, Graph
from deconv_compiler.options import TARGETS, CompileOptions
from deconv_compiler.plan import Plan, PlanValue
from deconv_compiler.plan_context import OpPlanner, PlanContext
from deconv_compiler.weights import InitializerWeights, LayerWeights


def _joined(*tables: Mapping[type, OpPlanner]) -> dict[type, OpPlanner]:
    """The op-planner modules' tables as one; an op type that two of them plan is a bug."""
    joined: dict[type, OpPlanner] = {}
    for table in tables:
        twice = joined.keys() & table.keys()
        if twice:
            raise InternalError(f"op types planned twice: {sorted(t.__name__ for t in twice)}")
        joined.update(table)
    return joined


OP_PLANNERS: dict[type, OpPlanner] = _joined(layer_plans.PLANNERS, encoder_plans.PLANNERS)


def plan_graph(graph: Graph, options: CompileOptions, tuned: Mapping[str, str] | None = None) -> Plan:
    """Plan every node; `tuned` holds the tuner's choice for each layer that asks for `tune`.
    `options.target` must be resolved (cpu, cuda or mobile)."""
    if options.target not in TARGETS:
        raise InternalError(f"plan_graph needs a resolved target, got {options.target!r}")
    context = PlanContext(graph, options, tuned or {})
    inputs = []
    for value in graph.inputs:
        dtype = io_dtype(options.dtype) if options.dtype else value.dtype
        context.define(value.name, value.name, tuple(range(len(value.shape))))
        context.dtypes[value.name] = dtype
        inputs.append(PlanValue(value.name, value.shape, dtype))
    graph = made_weights(graph, options.seed)  # as is when the compile made them already
    for node in fold_batch_norms(graph):
        OP_PLANNERS[type(node.op)](context, node, node.op)
    outputs = []
    for output in graph.outputs:
        dtype = io_dtype(options.dtype) if options.dtype else output.dtype
        tensor = context.operand(output.name, output.value, dtype, tuple(range(len(output.shape))))
        outputs.append((PlanValue(output.name, output.shape, dtype), tensor))
    return Plan(
        name=graph.name,
        opset=options.opset,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        steps=tuple(context.steps),
        strategies=context.strategies,
        weight_origins=_weight_origins(graph),
    )


def made_weights(graph: Graph, seed: int | None) -> Graph:
    """`graph` with every transposed convolution's weights made: those its initializers make are
    seeded by `seed`, else by the model's seed. A graph whose weights are all given comes back as is."""
    model_seed = graph.seed if seed is None else seed
    nodes = tuple(
        replace(node, op=ConvTransposeOp(node.op.layer, node.op.weights.made(model_seed)))
        if isinstance(node.op, ConvTransposeOp) and isinstance(node.op.weights, InitializerWeights)
        else node
        for node in graph.nodes
    )
    if all(new is old for new, old in zip(nodes, graph.nodes, strict=True)):
        return graph
    return replace(graph, nodes=nodes)


def _weight_origins(graph: Graph) -> dict[str, str]:
    """Where each transposed convolution's weights came from (a file, inline, initializers)."""
    return {
        node.name: node.op.weights.origin
        for node in graph.nodes
        if isinstance(node.op, ConvTransposeOp) and isinstance(node.op.weights, LayerWeights)
    }
