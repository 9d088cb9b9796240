"""Straight-through primitives and the integer grids every kquant quantizer is built from.

The grids are chosen so that the TFLite converter can hold them exactly in int8 (see
`../shared/CONVERTER-FACTS.md`): weights as per-channel narrow-range int8 codes times a step,
activations as an 8-bit FakeQuant whose step equals the low-bit step.
"""
from kquant.backend import tf


def round_ste(x):
    """round(x) forward; identity backward (the straight-through estimator)."""
    return x + tf.stop_gradient(tf.round(x) - x)


def steps(bits):
    """Number of steps of a b-bit grid, 2^b - 1, as a float tensor (bits may be a variable)."""
    return tf.pow(2.0, tf.cast(bits, tf.float32)) - 1.0


def per_channel_weight_grid(weight, step):
    """Marks a weight already on a grid of `step` as per-channel narrow-range int8 for TFLite.

    `weight` must hold integer multiples of `step` (per output channel, last axis) within
    [-127, 127] steps; the FakeQuant then leaves its values unchanged (gradient: identity) and
    tells the converter to store exactly those integers.

    Args:
        weight: tensor whose last axis is the output channel.
        step: per-channel step, shape [channels], or a scalar.

    Returns:
        `weight`, unchanged in value, behind a FakeQuantWithMinMaxVarsPerChannel.
    """
    channels = weight.shape[-1]
    step = tf.broadcast_to(tf.stop_gradient(step), [channels])
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        weight, -127.0 * step, 127.0 * step, num_bits=8, narrow_range=True)


def per_tensor_weight_grid(weight, step):
    """Like `per_channel_weight_grid` with one scalar step for the whole tensor.

    Dense kernels need it: TF 2.21's converter cannot carry a per-output-unit FakeQuant through
    the transpose it inserts for FULLY_CONNECTED ("'tfl.transpose' op has mismatched quantized
    axes of input and output").
    """
    step = tf.stop_gradient(step)
    return tf.quantization.fake_quant_with_min_max_vars(
        weight, -127.0 * step, 127.0 * step, num_bits=8, narrow_range=True)


def uniform_activation(x, clip, bits):
    """Quantizes x to bits-bit levels on [0, clip]: clip * round(n * clip(x / clip, 0, 1)) / n.

    Written as an 8-bit FakeQuant on [0, 255 * clip / n] (whose step is clip / n) followed by
    min(x, clip), the form the TFLite converter turns into an int8 conv output holding only the
    n + 1 low-bit levels. Gradient: 1 for x in [0, clip], 0 outside (straight-through); with
    respect to `clip`, 1 where x > clip (PACT's estimator), because the FakeQuant range is
    held constant.

    Args:
        x: activation tensor.
        clip: upper end of the range (a float or a scalar tensor), > 0.
        bits: bit-width, 1 to 8 (may be a variable).

    Returns:
        The quantized activation.
    """
    top = tf.stop_gradient(255.0 * clip / steps(bits))
    y = tf.quantization.fake_quant_with_min_max_vars(x, 0.0, top, num_bits=8, narrow_range=False)
    return tf.minimum(y, clip)
