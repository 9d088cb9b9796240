"""Where the TFLite int8 weight grid is formed: FakeQuant ops that tell the converter which
integers to store (activations get theirs in `rounding.uniform_activation`).

Measured with TF 2.21's converter: a narrow-range int8 FakeQuant around a weight that already
lies on a grid of `step` stores exactly those integers, per output channel or per tensor.
"""
from kquant.backend import tf


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
