"""Where low-bit rounding happens: the straight-through round and the b-bit activation grid.

Weights round with `round_ste` (each quantizer then hands its integer codes to
`int8_grid`); activations round inside an 8-bit FakeQuant whose step is the b-bit step, the
form TF 2.21's converter turns into an int8 tensor holding only the 2^b levels.
"""
from kquant.backend import tf


def round_ste(x):
    """round(x) forward; identity backward (the straight-through estimator)."""
    return x + tf.stop_gradient(tf.round(x) - x)


def steps(bits):
    """Number of steps of a b-bit grid, 2^b - 1, as a float tensor (bits may be a variable)."""
    return tf.pow(2.0, tf.cast(bits, tf.float32)) - 1.0


def requantization_top(clip, bits):
    """255 * clip / n: the top of the 8-bit range [0, top] whose step is the b-bit step (a
    float32 tensor, computed as the graph computes it: the converter reads this value)."""
    return 255.0 * clip / steps(bits)


def uniform_activation(x, clip, bits):
    """Quantizes x to bits-bit levels on [0, clip]: clip * round(n * clip(x / clip, 0, 1)) / n.

    Written as an 8-bit FakeQuant on [0, 255 * clip / n] (whose step is clip / n) followed by
    min(x, clip): the converter requantizes the conv output onto that step, so the int8 tensor
    holds only the n + 1 low-bit levels and TFLite computes what Keras does. Gradient: 1 for x
    in [0, clip], 0 outside (straight-through); with respect to `clip`, 1 where x > clip
    (PACT's estimator), because the FakeQuant range is held constant.

    Args:
        x: activation tensor.
        clip: upper end of the range (a float or a scalar tensor), > 0.
        bits: bit-width, 1 to 8 (may be a variable).

    Returns:
        The quantized activation.
    """
    top = tf.stop_gradient(requantization_top(clip, bits))
    y = tf.quantization.fake_quant_with_min_max_vars(x, 0.0, top, num_bits=8, narrow_range=False)
    return tf.minimum(y, clip)


def straight_through(forward, x, low, high):
    """forward(x), with gradient 1 for low <= x <= high and 0 outside (the clipped
    straight-through estimator), whatever ops `forward` uses to put x on its grid.

    `forward` must close over tensors only (no variable reads inside it).
    """
    @tf.custom_gradient
    def function(a):
        def gradient(dy):
            return dy * tf.cast((a >= low) & (a <= high), dy.dtype)

        return forward(a), gradient

    return function(x)
