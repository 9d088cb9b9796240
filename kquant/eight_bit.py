"""Layers with no low-bit rule: quantized at 8 bits as LiteRT's int8 kernel runs them.

A low-bit grid exists only for weights and for ReLU/ReLU6 outputs. Every other layer that
changes values (a sigmoid gate, swish, softmax, a Multiply, Rescaling and Normalization at the
input) keeps an 8-bit integer output, never float: a range learned from data as TF-MOT's
default scheme does, or, for sigmoid, softmax and tanh, the fixed output scale LiteRT's int8
LOGISTIC, SOFTMAX and TANH kernels always use (so the converter adds no requantization).
"""
from kquant.backend import keras, tf, tfmot
from kquant.serialization import serializable

# Activations with an int8 kernel in LiteRT (or lowered by the converter to int8 ops), and
# the fixed output range of that kernel where it has one: [low, high] of 256 steps.
FIXED_RANGES = {"sigmoid": (0.0, 255.0 / 256.0), "softmax": (0.0, 255.0 / 256.0),
                "tanh": (-1.0, 127.0 / 128.0)}
LEARNED_RANGE_ACTIVATIONS = {"swish", "gelu", "hard_sigmoid", "leaky_relu", "prelu"}
INTEGER_ACTIVATIONS = set(FIXED_RANGES) | LEARNED_RANGE_ACTIVATIONS

# Layers that compute a new value LiteRT runs in int8: each output on an 8-bit range.
ELEMENTWISE_LAYERS = (keras.layers.Multiply, keras.layers.Subtract, keras.layers.Average,
                      keras.layers.Maximum, keras.layers.Minimum, keras.layers.Rescaling,
                      keras.layers.Normalization, keras.layers.UpSampling2D)


def eight_bit_output_quantizer():
    """The 8-bit, data-calibrated range of TF-MOT's default scheme, for requantization points."""
    return tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


@serializable()
class FixedRangeQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """An 8-bit FakeQuant on a constant range: the output scale of a LiteRT kernel.

    y = clip(round((x - low) / s), 0, 255) * s + low, s = (high - low) / 255; the gradient is
    the straight-through estimator inside [low, high], 0 outside (TensorFlow's FakeQuant).

    Args:
        low: the range's lower end (a value on the grid).
        high: the range's upper end.
    """

    def __init__(self, low, high):
        self.low, self.high = float(low), float(high)

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return tf.quantization.fake_quant_with_min_max_args(inputs, min=self.low, max=self.high,
                                                             num_bits=8)

    def requantization_range(self, variables):
        """The range the converter reads from this quantizer's FakeQuant."""
        return self.low, self.high

    def get_config(self):
        return {"low": self.low, "high": self.high}

    def __eq__(self, other):
        return isinstance(other, FixedRangeQuantizer) and other.get_config() == self.get_config()

    def __ne__(self, other):
        return not self == other


def activation_output(activation):
    """The output quantizer of an activation with no low-bit rule, and why; or None if LiteRT
    has no integer kernel for it.

    Returns:
        (quantizer, reason), or None.
    """
    if activation in FIXED_RANGES:
        low, high = FIXED_RANGES[activation]
        return FixedRangeQuantizer(low, high), (f"8-bit: {activation} on its int8 kernel's "
                                                 f"fixed range [{low:g}, {high:g}]")
    if activation in LEARNED_RANGE_ACTIVATIONS:
        return eight_bit_output_quantizer(), f"8-bit: no low-bit rule for {activation}"
    return None
