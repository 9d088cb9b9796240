"""Where low-bit rounding happens: the straight-through round and the b-bit activation grid.

Weights round with `round_ste` (each quantizer then hands its integer codes to
`int8_grid`); activations round inside an 8-bit FakeQuant whose step is the b-bit step, the
form TF 2.21's converter turns into an int8 tensor holding only the 2^b levels
(`uniform_activation` on [0, clip]; `offset_activation` for grids reaching below zero).
"""
from kquant.backend import tf


def round_ste(x):
    """round(x) forward; identity backward (the straight-through estimator)."""
    return x + tf.stop_gradient(tf.round(x) - x)


def steps(bits):
    """Number of steps of a b-bit grid, 2^b - 1, as a float tensor (bits may be a variable)."""
    return tf.pow(2.0, tf.cast(bits, tf.float32)) - 1.0


def requantization_range(clip, bits):
    """The 8-bit range [-(255 - n) clip / n, clip] whose step is the b-bit step clip / n and
    whose top is the clip (float32 tensors, as the graph computes them: the converter reads
    these values). Its int8 zero point is 127 - n, so int8's own saturation at 127 is the clip."""
    n, clip = steps(bits), tf.convert_to_tensor(clip, tf.float32)
    return -(255.0 - n) * clip / n, clip


def uniform_activation(x, clip, bits, rectify=False, standalone=False):
    """Quantizes x to bits-bit levels on [0, clip]: clip * round(n * clip(x / clip, 0, 1)) / n.

    Written as one 8-bit FakeQuant on `requantization_range` after the ReLU: the converter fuses
    the ReLU into the conv and requantizes the accumulator onto the b-bit step, with the clip
    carried by int8's saturation at 127, so the int8 tensor holds only the n + 1 levels, the
    export has no extra op (XNNPACK takes the graph in one piece) and TFLite computes what
    Keras does. Gradient: 1 for x in [0, clip], 0 outside (straight-through); with respect to
    `clip`, the sum of the gradients where x > clip (PACT's estimator, FakeQuant's gradient for
    its max).

    Args:
        x: activation tensor, after a ReLU or ReLU6 unless `rectify`.
        clip: upper end of the range (a float or a scalar tensor), > 0.
        bits: bit-width, 1 to 8 (may be a variable).
        rectify: apply the ReLU here (for quantizers that replace the network's activation; a
            second ReLU after a ReLU6 would leave the converter a RELU op of its own).
        standalone: end in min(., clip), which changes no value but makes TFLite keep the grid
            as a tensor of its own (an int8 MINIMUM): before a concatenation, whose 8-bit
            range the converter would otherwise requantize the conv accumulator onto directly,
            skipping the low-bit rounding.

    Returns:
        The quantized activation.
    """
    low, high = requantization_range(clip, bits)
    x = tf.nn.relu(x) if rectify else x
    y = tf.quantization.fake_quant_with_min_max_vars(
        x, tf.stop_gradient(low), high, num_bits=8, narrow_range=False)
    return tf.minimum(y, clip) if standalone else y


def offset_ranges(low, step, bits):
    """The three 8-bit ranges of `offset_activation`, float32 tensors as the graph computes them:
    the grid's [low, low + 255 step] (-128 is `low`) and, one step up, the range whose 127 is
    the top level plus one step."""
    grid = (low, low + 255.0 * step)
    lifted_top = low + steps(bits) * step + step
    return grid, (lifted_top - 255.0 * step, lifted_top)


def offset_activation(x, low, step, bits):
    """Quantizes x to the 2^b levels low + k step, k = 0 .. n (n = 2^b - 1), for grids whose
    lowest level is not zero: step * round(clip(x / step, low / step, low / step + n)), `low` a
    whole number of steps at or below zero.

    Written as 8-bit FakeQuants (`offset_ranges`) the converter turns into int8 ops XNNPACK
    takes: the conv (or Add) accumulator requantized onto the step, with int8's saturation at
    -128 as the lowest level (the zero point, an integer, holds zero exactly); an ADD of one
    step onto a range whose saturation at 127 is the top level plus that step; a SUB of the
    step back onto the grid's tensor. The step added is never zero, so the converter keeps
    both ops whatever the offset (an ADD of zero it would drop, and a MINIMUM at the top would
    leave XNNPACK). Gradients: those of the FakeQuants; quantizers with their own estimator
    wrap it.

    Args:
        x: activation tensor (the pre-activation: no ReLU before it).
        low: the lowest level, a float32 scalar tensor <= 0, a whole number of steps.
        step: the distance between levels, a float32 scalar tensor > 0.
        bits: bit-width, 1 to 8 (may be a variable).

    Returns:
        The quantized activation.
    """
    grid, lifted = offset_ranges(low, step, bits)
    y = tf.quantization.fake_quant_with_min_max_vars(x, *grid, num_bits=8)
    y = tf.quantization.fake_quant_with_min_max_vars(y + step, *lifted, num_bits=8)
    return tf.quantization.fake_quant_with_min_max_vars(y - step, *grid, num_bits=8)


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
