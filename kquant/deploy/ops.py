"""The integer ops of a deployed model, computed as the TFLite kernels compute them.

Each op reads int64 tensors of int8 values (whole numbers) from named inputs and writes one;
`tflite_op` names the TFLite op that computes the same.
Accumulation is exact (float64 convolutions of integers far below 2^53); where a kernel rounds,
the op asks the runtime (`kquant.deploy.runtimes`). Quantization parameters are those the
TFLite converter writes: a float32 scale and an integer zero point per tensor.
"""
import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from kquant.backend import tf

INT8_MIN, INT8_MAX = -128, 127
_WEIGHT_OPS = {"conv": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D", "dense": "FULLY_CONNECTED"}


@dataclasses.dataclass(frozen=True)
class Quantization:
    """An int8 tensor's real value: scale * (q - zero_point)."""

    scale: np.float32
    zero_point: int


def _clamp(q, low, high):
    return tf.clip_by_value(q, tf.constant(low, tf.int64), tf.constant(high, tf.int64))


@dataclasses.dataclass
class WeightOp:
    """CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED with a fused activation clamp.

    Attributes:
        kind: "conv", "depthwise" or "dense".
        codes: int8 weights as stored in TFLite, in the Keras kernel layout.
        weight_scales: float32 scale per output channel (all equal for dense).
        bias: int32 bias per output channel at input scale x weight scale.
        strides, padding, dilations: of the convolution.
        clamp: (low, high) int8 bounds of the fused activation.
        storage: how the file stores `codes`: "int8", or packed "int4" / "int2" (some
            runtimes hand packed filters to other kernels, see `kquant.deploy.runtimes`).
    """

    tflite_op = property(lambda self: _WEIGHT_OPS[self.kind])

    name: str
    source: str
    kind: str
    codes: np.ndarray
    weight_scales: np.ndarray
    bias: np.ndarray
    input_quant: Quantization
    output_quant: Quantization
    clamp: Tuple[int, int] = (INT8_MIN, INT8_MAX)
    strides: Sequence[int] = (1, 1)
    padding: str = "VALID"
    dilations: Sequence[int] = (1, 1)
    storage: str = "int8"

    def run(self, values, runtime):
        runtime = runtime.weight_kernels(self.tflite_op, self.storage)
        x = tf.cast(values[self.source] - self.input_quant.zero_point, tf.float64)
        w = tf.constant(self.codes, tf.float64)
        if self.kind == "conv":
            acc = tf.nn.conv2d(x, w, [1, *self.strides, 1], self.padding,
                               dilations=list(self.dilations))
        elif self.kind == "depthwise":
            acc = tf.nn.depthwise_conv2d(x, w, [1, *self.strides, 1], self.padding,
                                         dilations=list(self.dilations))
        else:
            acc = tf.matmul(x, w)
        acc = tf.cast(acc, tf.int64) + tf.constant(self.bias, tf.int64)
        q = runtime.requantize(acc, self.input_quant.scale, self.weight_scales, self.output_quant)
        return _clamp(q, *self.clamp)


@dataclasses.dataclass
class AddOp:
    """ADD (or SUB) of two int8 tensors, or of one and an int8 constant, with the fused
    activation clamp."""

    tflite_op = property(lambda self: "SUB" if self.subtract else "ADD")

    name: str
    sources: Sequence[str]
    input_quants: Sequence[Quantization]
    output_quant: Quantization
    clamp: Tuple[int, int] = (INT8_MIN, INT8_MAX)
    constant: Optional[int] = None  # the second operand's int8 code, when it is a constant
    subtract: bool = False

    def run(self, values, runtime):
        a = values[self.sources[0]]
        b = (values[self.sources[1]] if self.constant is None
             else tf.constant(self.constant, tf.int64))
        q = runtime.add(a, b, *self.input_quants, self.output_quant, subtract=self.subtract)
        return _clamp(q, *self.clamp)


@dataclasses.dataclass
class MeanOp:
    """MEAN over spatial axes (global average pooling)."""

    tflite_op = "MEAN"

    name: str
    source: str
    axes: Sequence[int]
    input_quant: Quantization
    output_quant: Quantization

    def run(self, values, runtime):
        q = runtime.mean(values[self.source], list(self.axes), self.input_quant, self.output_quant)
        return _clamp(q, INT8_MIN, INT8_MAX)


@dataclasses.dataclass
class ConvertOp:
    """QUANTIZE from one int8 scale to another (before a concatenation, after pooling)."""

    tflite_op = "QUANTIZE"

    name: str
    source: str
    input_quant: Quantization
    output_quant: Quantization

    def run(self, values, runtime):
        q = runtime.convert(values[self.source], self.input_quant, self.output_quant)
        return _clamp(q, INT8_MIN, INT8_MAX)


@dataclasses.dataclass
class ConcatOp:
    """CONCATENATION of int8 tensors already on one scale."""

    tflite_op = "CONCATENATION"

    name: str
    sources: Sequence[str]
    axis: int

    def run(self, values, runtime):
        del runtime
        return tf.concat([values[s] for s in self.sources], self.axis)


@dataclasses.dataclass
class AveragePoolOp:
    """AVERAGE_POOL_2D on one scale: the window sum of the int8 values divided by the number
    of values inside the image, rounded half away from zero (the same in every runtime: XNNPACK
    leaves int8 average pooling to the built-in kernel)."""

    tflite_op = "AVERAGE_POOL_2D"

    name: str
    source: str
    pool_size: Sequence[int]
    strides: Sequence[int]
    padding: str

    def run(self, values, runtime):
        del runtime
        x = tf.cast(values[self.source], tf.float64)
        channels = x.shape[-1]
        window = tf.ones([*self.pool_size, channels, 1], tf.float64)
        strides = [1, *self.strides, 1]
        total = tf.cast(tf.nn.depthwise_conv2d(x, window, strides, self.padding), tf.int64)
        count = tf.cast(tf.nn.depthwise_conv2d(tf.ones_like(x[..., :1]), window[..., :1, :],
                                               strides, self.padding), tf.int64)
        half = tf.math.floordiv(count, 2)
        rounded = tf.where(total > 0, total + half, total - half)
        return tf.truncatediv(rounded, count)


@dataclasses.dataclass
class ReshapeOp:
    """RESHAPE (Flatten, Reshape): values unchanged."""

    tflite_op = "RESHAPE"

    name: str
    source: str
    shape: Sequence[int]

    def run(self, values, runtime):
        del runtime
        return tf.reshape(values[self.source], [-1, *self.shape])


@dataclasses.dataclass
class PadOp:
    """PAD with the input's zero point (ZeroPadding2D: real zero)."""

    tflite_op = "PAD"

    name: str
    source: str
    paddings: Sequence[Sequence[int]]
    zero_point: int

    def run(self, values, runtime):
        del runtime
        return tf.pad(values[self.source], [[0, 0], *self.paddings, [0, 0]],
                      constant_values=tf.constant(self.zero_point, tf.int64))


@dataclasses.dataclass
class MaxPoolOp:
    """MAX_POOL_2D: the integer maximum (same scale in and out)."""

    tflite_op = property(lambda self: "REDUCE_MAX" if self.global_pool else "MAX_POOL_2D")

    name: str
    source: str
    pool_size: Sequence[int]
    strides: Sequence[int]
    padding: str
    global_pool: bool = False

    def run(self, values, runtime):
        del runtime
        x = values[self.source]
        if self.global_pool:
            return tf.reduce_max(x, axis=[1, 2])
        # max_pool2d has no int64 kernel; int8 values are exact in float32.
        return tf.cast(tf.nn.max_pool2d(tf.cast(x, tf.float32), self.pool_size, self.strides,
                                        self.padding), tf.int64)


@dataclasses.dataclass
class Program:
    """A deployed model as integer ops in execution order.

    Attributes:
        input_quant: how float images become the int8 input.
        input_name: the name the int8 input goes by.
        ops: the ops.
        output_name, output_quant: the int8 output and its quantization.
        output_shape: the Keras model's output shape without the batch (a per-channel Dense
            head computes [1, 1, units]).
    """

    input_name: str
    input_quant: Quantization
    ops: list
    output_name: str
    output_quant: Quantization
    output_shape: Sequence[int]

    def run(self, int8_images, runtime):
        """Runs the ops on int8 images (any integer dtype); returns the int8 output as int64."""
        values = {self.input_name: tf.cast(int8_images, tf.int64)}
        for op in self.ops:
            values[op.name] = op.run(values, runtime)
        return tf.reshape(values[self.output_name], [-1, *self.output_shape])
