"""A kquant model lowered as the TFLite converter lowers it: integer ops with their int8 scales.

The converter folds each batch norm into the conv before it (per-channel weight scales and
the bias, a quantizer's input shift too), fuses a following ReLU into the conv's clamp,
requantizes the accumulator where a FakeQuant sits (a quantizer's `requantization_range`, or
an 8-bit range learned from data), rounds the bias to int32 at input scale x weight scale,
and relabels a grid with ADDs or SUBs of constants where its quantizer says so (a signed
grid, a grid reaching below zero). `lower` does the same from the Keras model alone, so its
integer ops (`kquant.deploy.ops`) carry the very scales and integers the .tflite file will
hold.
"""
import dataclasses
from typing import List, Optional

import numpy as np

from kquant import graph
from kquant.backend import QuantizeLayer, keras, tf, tfmot
from kquant.deploy import ops, storage
from kquant.folding import FoldedConv2D, FoldedDepthwiseConv2D
from kquant.pointwise_dense import PointwiseDense
from kquant.precision import check_deployable
from kquant.quantizers.base import LowBitQuantizer

_WEIGHT_KINDS = {keras.layers.Conv2D: "conv", keras.layers.DepthwiseConv2D: "depthwise",
                 keras.layers.Dense: "dense", FoldedConv2D: "conv",
                 FoldedDepthwiseConv2D: "depthwise", PointwiseDense: "conv"}


def _round_half_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def fake_quant_quantization(low, high):
    """The int8 (scale, zero point) the converter derives from an 8-bit FakeQuant on
    [low, high]: scale (high - low) / 255 in double and the zero point nudged to an integer
    in the unsigned range [0, 255], then moved to int8 (the converter's
    getNudgedScaleAndZeroPoint; a tie such as 76.5 rounds away from zero there, towards
    zero after the move). The range is first stretched to hold 0."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    qmin, qmax = 0.0, 255.0
    scale = (high - low) / (qmax - qmin)
    from_min, from_max = qmin - low / scale, qmax - high / scale
    zero = from_min if abs(qmin) + abs(low / scale) < abs(qmax) + abs(high / scale) else from_max
    zero = qmin if zero < qmin else qmax if zero > qmax else float(_round_half_away(zero))
    return ops.Quantization(np.float32(scale), int(zero) - 128)


def output_quantization(quantizer, variables):
    """The int8 quantization of a requantization point: the range a quantizer states
    (`requantization_range`: kquant's grids, fixed kernel ranges), or the 8-bit range
    (min_var, max_var) of TF-MOT's data-calibrated quantizers."""
    if hasattr(quantizer, "requantization_range"):
        return fake_quant_quantization(*quantizer.requantization_range(variables))
    return fake_quant_quantization(variables["min_var"].numpy(), variables["max_var"].numpy())


@dataclasses.dataclass
class _PendingWeights:
    """A conv/dense whose accumulator is not yet requantized (batch norm may still fold in)."""

    kind: str
    source: str
    input_quant: ops.Quantization
    codes: np.ndarray  # channels last, float
    scales: np.ndarray  # float64 per output channel, as the converter holds them before storing
    bias: np.ndarray  # float32 per output channel
    layer: keras.layers.Layer
    stored: storage.LayerStorage
    bias_variable: Optional[tf.Variable]  # the Keras variable `bias` moves with one for one


@dataclasses.dataclass
class BiasOffset:
    """How far a weight layer's deployed bias lies from the float bias Keras adds.

    Attributes:
        layer: the conv or dense layer.
        variable: the Keras variable through which the bias changes one for one (the layer's
            bias, or the beta of the batch norm folded into it), or None if it has none.
        offset: deployed minus Keras bias per output channel, in real units.
        steps: `offset` in steps of the int32 bias (input scale x weight scale).
    """

    layer: str
    variable: Optional[tf.Variable]
    offset: np.ndarray
    steps: np.ndarray


@dataclasses.dataclass
class _PendingAdd:
    sources: List[str]
    input_quants: List[ops.Quantization]


class _Lowering:
    def __init__(self, model, weight_storage, caller):
        check_deployable(model, caller)
        self.model, self.caller = model, caller  # errors name the public function called
        self.storages = storage.plan(model, weight_storage, caller)
        self.ops = []
        self.bias_offsets = []
        self.values = {}  # Keras layer name -> Quantization of its int8 tensor, or a pending op
        self.aliases = {}  # layer name -> the op output it stands for (Dropout)
        self.input_name = self.input_quant = None

    def materialized(self, layer, name):
        value = self.values[name]
        if not isinstance(value, ops.Quantization):
            raise ValueError(f"{self.caller}: layer {layer.name!r} takes the output of {name!r}, "
                             "which TFLite does not hold as an int8 tensor of its own (a conv "
                             "or Add without a quantized output); give it an activation or an "
                             "8-bit output.")
        return value

    def inbound(self, layer):
        node = layer._inbound_nodes[0]  # pylint: disable=protected-access
        inbound = node.inbound_layers
        return [self.resolve(l.name) for l in (inbound if isinstance(inbound, list) else [inbound])]

    def lower(self):
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, QuantizeLayer):
                self.input_name = layer.name
                self.input_quant = output_quantization(layer.quantizer, layer.quantizer_vars)
                self.values[layer.name] = self.input_quant
                continue
            if not isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2):
                raise ValueError(f"{self.caller}: layer {layer.name!r} "
                                 f"({type(layer).__name__}) is not quantized by kquant.")
            self.lower_wrapped(layer)
        last = self.resolve(self.model.layers[-1].name)
        output = self.materialized(self.model.layers[-1], last)
        return ops.Program(self.input_name, self.input_quant, self.ops, last, output,
                           self.model.output_shape[1:])

    def lower_wrapped(self, wrapper):
        inner, name = wrapper.layer, wrapper.name
        sources = self.inbound(wrapper)
        quantizers = wrapper._output_quantizers  # pylint: disable=protected-access
        quantizer = quantizers[0] if quantizers else None
        variables = getattr(wrapper, "_output_quantizer_vars", None)
        if type(inner) in _WEIGHT_KINDS:
            source = sources[0]
            if isinstance(inner, PointwiseDense):  # RESHAPE to [1, 1, inputs], then CONV_2D
                self.ops.append(ops.ReshapeOp(f"{name}/map", source, (1, 1, inner.kernel.shape[2])))
                self.values[f"{name}/map"] = self.materialized(inner, source)
                source = f"{name}/map"
            self.values[name] = self.weights(wrapper, source)
        elif isinstance(inner, keras.layers.BatchNormalization):
            self.values[name] = self.fold_batch_norm(inner, self.values[sources[0]])
        elif graph.is_activation_layer(inner) or graph.activation_name(inner) == "linear":
            # A ReLU, or the linear layer a quantizer that replaces the activation left.
            self.values[name] = self.values[sources[0]]
        elif isinstance(inner, keras.layers.Add) and len(sources) == 2:
            self.values[name] = _PendingAdd(
                sources, [self.materialized(inner, s) for s in sources])
        elif isinstance(inner, keras.layers.GlobalAveragePooling2D) and not inner.keepdims:
            input_quant = self.materialized(inner, sources[0])
            output_quant = output_quantization(quantizer, variables)
            self.ops.append(ops.MeanOp(name, sources[0], (1, 2), input_quant, output_quant))
            self.values[name] = output_quant
            return
        elif isinstance(inner, keras.layers.Concatenate) and quantizer is not None:
            out = output_quantization(quantizer, variables)
            self.ops.append(ops.ConcatOp(name, [self.convert(inner, s, out) for s in sources],
                                         inner.axis))
            self.values[name] = out
            return
        elif isinstance(inner, keras.layers.AveragePooling2D):
            # AVERAGE_POOL_2D keeps its input's scale; a QUANTIZE after it moves to its own.
            source = sources[0]
            out = self.materialized(inner, source) if quantizer is None else \
                output_quantization(quantizer, variables)
            pooled = f"{name}/pooled" if self.values[source] != out else name
            self.ops.append(ops.AveragePoolOp(pooled, source, inner.pool_size, inner.strides,
                                              inner.padding.upper()))
            self.values[pooled] = self.values[source]
            self.alias(name, self.convert(inner, pooled, out))
            return
        elif isinstance(inner, keras.layers.Dropout):
            self.alias(name, sources[0])
            return
        elif isinstance(inner, (keras.layers.Flatten, keras.layers.Reshape)):
            self.ops.append(ops.ReshapeOp(name, sources[0], wrapper.output_shape[1:]))
            self.values[name] = self.materialized(inner, sources[0])
            return
        elif isinstance(inner, keras.layers.ZeroPadding2D):
            quant = self.materialized(inner, sources[0])
            self.ops.append(ops.PadOp(name, sources[0], inner.padding, quant.zero_point))
            self.values[name] = quant
            return
        elif isinstance(inner, (keras.layers.MaxPooling2D, keras.layers.GlobalMaxPooling2D)):
            quant = self.materialized(inner, sources[0])
            pooling = isinstance(inner, keras.layers.MaxPooling2D)
            self.ops.append(ops.MaxPoolOp(
                name, sources[0], inner.pool_size if pooling else (1, 1),
                inner.strides if pooling else (1, 1),
                inner.padding.upper() if pooling else "VALID", global_pool=not pooling))
            self.values[name] = quant
            return
        else:
            raise ValueError(f"{self.caller}: layer {inner.name!r} ({type(inner).__name__}) has "
                             "no integer-exact lowering yet; supported: Conv2D, DepthwiseConv2D, "
                             "Dense, BatchNormalization after them, ReLU/ReLU6, Add, "
                             "Concatenate, AveragePooling2D, GlobalAveragePooling2D, "
                             "MaxPooling2D, Flatten, Reshape, Dropout, ZeroPadding2D.")
        if quantizer is not None:
            activation = graph.activation_name(inner)
            self.values[name] = self.requantize(name, inner, self.values[name], sources[0],
                                                quantizer, variables, activation)

    def convert(self, layer, source, out):
        """`source` on the scale `out` (a QUANTIZE op where the scales differ); returns the name
        of the converted tensor."""
        quant = self.materialized(layer, source)
        if quant == out:
            return source
        converted = f"{layer.name}/{source}"
        self.ops.append(ops.ConvertOp(converted, source, quant, out))
        self.values[converted] = out
        return converted

    def alias(self, name, source):
        """`name` is `source` under another name (no op of its own)."""
        if name != source:
            self.aliases[name] = self.resolve(source)
            self.values[name] = self.values[source]

    def resolve(self, name):
        return self.aliases.get(name, name)

    def weights(self, wrapper, source):
        inner = wrapper.layer
        (kernel, quantizer, variables), = wrapper._weight_vars  # pylint: disable=protected-access
        codes, step = quantizer.codes_and_step(quantizer.fold(kernel), variables)
        codes = np.rint(codes.numpy())
        channels = codes.shape[-1]
        # The converter's scale of the grid FakeQuant [-127 step, 127 step], in double.
        step = np.asarray(step.numpy(), np.float32).reshape(-1)
        scales = np.broadcast_to((np.float64(np.float32(127.0) * step) -
                                  np.float64(np.float32(-127.0) * step)) / 254.0,
                                 [channels]).copy()
        if hasattr(inner, "folded_bias"):  # the graph's own float32 arithmetic, as converted
            bias, bias_variable = inner.folded_bias().numpy(), inner.beta
        elif getattr(inner, "use_bias", False):
            bias, bias_variable = inner.bias.numpy(), inner.bias
        else:
            bias, bias_variable = np.zeros(channels), None
        return _PendingWeights(_WEIGHT_KINDS[type(inner)], source,
                               self.materialized(inner, source), codes, scales,
                               bias.astype(np.float32), inner, self.storages[inner.name],
                               bias_variable)

    def fold_batch_norm(self, layer, pending):
        if not isinstance(pending, _PendingWeights):
            raise ValueError(f"{self.caller}: batch norm {layer.name!r} does not follow a conv or "
                             "dense layer directly; TFLite keeps it as float MUL and ADD.")
        variance = layer.moving_variance.numpy()
        channels = variance.shape[0]
        gamma = layer.gamma.numpy() if layer.scale else np.ones(channels, np.float32)
        beta = layer.beta.numpy() if layer.center else np.zeros(channels, np.float32)
        mean = layer.moving_mean.numpy()
        eps = np.float32(layer.epsilon)
        # As TensorFlow folds FusedBatchNormV3 (float32, its own Rsqrt kernel).
        multiplier = gamma * tf.math.rsqrt(variance + eps).numpy()
        offset = beta - mean * multiplier
        sign = np.where(multiplier < 0, -1.0, 1.0)
        return dataclasses.replace(
            pending, codes=pending.codes * sign,
            scales=pending.scales * np.abs(multiplier).astype(np.float64),
            bias=(pending.bias * multiplier + offset).astype(np.float32),
            bias_variable=layer.beta if layer.center else None)

    def requantize(self, name, layer, pending, source, quantizer, variables, activation):
        out = output_quantization(quantizer, variables)
        grid = isinstance(quantizer, LowBitQuantizer)
        shift = np.float32(getattr(quantizer, "input_shift", 0.0)) if grid else np.float32(0.0)
        relabel = quantizer.relabel(variables) if grid else []
        low, high = ops.INT8_MIN, ops.INT8_MAX
        if quantizer.clamps_at_zero if grid else activation in graph.ACTIVATIONS:  # (fused) ReLU
            low = max(low, out.zero_point)
        if activation == "relu6":
            high = min(high, out.zero_point + int(_round_half_away(np.float32(6.0) / out.scale)))
        requantized = f"{name}/requantized" if relabel else name
        if isinstance(pending, _PendingWeights):
            accumulator_scale = np.float64(pending.input_quant.scale) * pending.scales
            # The converter folds a quantizer's input shift into the bias, in float32.
            bias = _round_half_away((pending.bias + shift).astype(np.float64) / accumulator_scale)
            stored = pending.stored  # the stored form (`kquant.deploy.storage`)
            codes = stored.codes(pending.codes)
            scales, bias = stored.scales(pending.scales.astype(np.float32)), stored.bias(bias)
            step = np.float64(pending.input_quant.scale) * scales.astype(np.float64)
            offset = bias * step - shift - pending.bias
            self.bias_offsets.append(BiasOffset(pending.layer.name, pending.bias_variable,
                                                offset, offset / step))
            if pending.kind == "depthwise":
                codes = codes.reshape(pending.layer.depthwise_kernel.shape)
            layer_args = {}
            if pending.kind != "dense":
                layer_args = dict(strides=tuple(pending.layer.strides),
                                  padding=pending.layer.padding.upper(),
                                  dilations=tuple(pending.layer.dilation_rate))
            self.ops.append(ops.WeightOp(
                requantized, pending.source, pending.kind, codes, scales, bias.astype(np.int64),
                pending.input_quant, out, (low, high), storage=pending.stored.storage,
                **layer_args))
        elif isinstance(pending, _PendingAdd):
            self.ops.append(ops.AddOp(requantized, pending.sources, pending.input_quants, out,
                                      (low, high)))
        elif shift:
            # An 8-bit tensor (a residual sum) shifted onto the grid: ADD of a constant.
            code, quant = _constant(shift)
            self.ops.append(ops.AddOp(requantized, [source], [pending, quant], out, (low, high),
                                      constant=code))
        else:
            raise ValueError(f"{self.caller}: layer {layer.name!r} requantizes a tensor TFLite "
                             "already holds as int8 (an activation after pooling or an 8-bit "
                             "output); no integer-exact lowering for that yet.")
        tail = requantized
        for i, (constant, subtract, (relabel_low, relabel_high)) in enumerate(relabel):
            code, quant = _constant(constant)
            relabelled = name if i == len(relabel) - 1 else f"{name}/relabelled{i}"
            out_relabelled = fake_quant_quantization(relabel_low, relabel_high)
            self.ops.append(ops.AddOp(relabelled, [tail], [out, quant], out_relabelled,
                                      constant=code, subtract=subtract))
            out, tail = out_relabelled, relabelled
        return out


def _constant(value):
    """A float32 constant as the converter stores it in int8: (code, quantization) on the
    range [min(value, 0), max(value, 0)]."""
    quant = fake_quant_quantization(min(float(value), 0.0), max(float(value), 0.0))
    code = int(_round_half_away(np.float64(np.float32(value)) / np.float64(quant.scale)))
    return int(np.clip(code + quant.zero_point, ops.INT8_MIN, ops.INT8_MAX)), quant


def lower(model, weight_storage="int8") -> ops.Program:
    """Lowers a kquant model to the integer ops its TFLite export runs.

    Args:
        model: a kquant model (from `kquant.quantize_model`), every quantizer switched on at
            its deployed bit-width.
        weight_storage: how the file stores the weights (`kquant.deploy.storage.plan`):
            "int8", "int4", "int2", "auto", or {layer name: "int8" | "int4" | "int2"}.

    Returns:
        An `ops.Program`.

    Raises:
        ValueError: for a model that is not deployable as it stands, a layer without an
            integer-exact lowering (named), or weights that cannot be stored as asked.
    """
    return _Lowering(model, weight_storage, "integer_model").lower()


def bias_offsets(model, weight_storage="int8") -> List[BiasOffset]:
    """How far each weight layer's deployed (int32) bias lies from the bias Keras adds.

    Args:
        model, weight_storage: as for `lower`.

    Returns:
        A `BiasOffset` per conv and dense layer, in the model's order.

    Raises:
        ValueError: as `lower`.
    """
    lowering = _Lowering(model, weight_storage, "snap_biases")
    lowering.lower()
    return lowering.bias_offsets
