"""TFLite's fixed-point requantization, in TensorFlow int64 ops, in its two roundings.

LiteRT's built-in kernels and TFLite Micro scale an int32 accumulator by a real multiplier
stored as a Q31 mantissa and a power-of-two exponent (`QuantizeMultiplier`) and round twice:
once to 31 fractional bits, once at the final right shift. How ties round differs:
- `multiply_by_quantized_multiplier`: gemmlowp's, half away from zero at both steps
  (`MultiplyByQuantizedMultiplier` in tflite/kernels/internal/common.cc, default build): the
  reference kernels (TFLite Micro) and LiteRT's ADD and MEAN;
- `ruy_multiply_by_quantized_multiplier`: half up (towards +inf) at both steps: LiteRT's
  optimized CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED on x86 (measured: 0 of 640,000
  values differ on a conv with negative outputs; gemmlowp's rounding differed on 0.2%).
"""
import math

import numpy as np

from kquant.backend import tf


def quantize_multiplier(real):
    """TFLite's `QuantizeMultiplier`: a real multiplier as (Q31 mantissa, exponent).

    Args:
        real: the multiplier, a float (computed in double precision, as the kernels do).

    Returns:
        (mantissa, shift) with real ~= mantissa * 2^(shift - 31); (0, 0) for 0 or a
        multiplier too small to represent.
    """
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    mantissa = int(math.floor(abs(fraction) * (1 << 31) + 0.5)) * (1 if fraction > 0 else -1)
    if mantissa == 1 << 31:
        mantissa //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return mantissa, shift


def quantize_multipliers(reals):
    """`quantize_multiplier` of each value: (mantissas, shifts) as int64 arrays."""
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(reals)]
    return (np.array([m for m, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64))


def _rounding_divide_by_pot(x, exponent):
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded half away from zero."""
    mask = tf.bitwise.left_shift(tf.ones_like(exponent), exponent) - 1
    remainder = tf.bitwise.bitwise_and(x, mask)
    threshold = tf.bitwise.right_shift(mask, 1) + tf.cast(x < 0, tf.int64)
    return tf.bitwise.right_shift(x, exponent) + tf.cast(remainder > threshold, tf.int64)


def _saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp's SaturatingRoundingDoublingHighMul of int32 values held in int64: the high
    32 bits of 2ab, rounded (C++ division truncates towards zero, kept here)."""
    product = a * b
    nudge = tf.where(product >= 0, tf.constant(1 << 30, tf.int64),
                     tf.constant(1 - (1 << 30), tf.int64))
    result = tf.truncatediv(product + nudge, tf.constant(1 << 31, tf.int64))
    overflow = (a == b) & (a == -(1 << 31))
    return tf.where(overflow, tf.constant((1 << 31) - 1, tf.int64), result)


def multiply_by_quantized_multiplier(x, mantissa, shift):
    """TFLite's `MultiplyByQuantizedMultiplier` (two roundings) on an int64 tensor.

    Args:
        x: int64 tensor of int32 accumulators.
        mantissa, shift: from `quantize_multiplier`, scalars or per last-axis channel.

    Returns:
        The scaled int64 tensor.
    """
    mantissa = tf.constant(mantissa, tf.int64)
    shift = tf.constant(shift, tf.int64)
    left = tf.maximum(shift, 0)
    right = tf.broadcast_to(tf.maximum(-shift, 0), tf.shape(x))
    high = _saturating_rounding_doubling_high_mul(x * tf.bitwise.left_shift(
        tf.ones_like(left), left), mantissa)
    return _rounding_divide_by_pot(high, right)


def ruy_multiply_by_quantized_multiplier(x, mantissa, shift):
    """The same scaling with both roundings half up, as ruy applies it (see the module)."""
    mantissa = tf.constant(mantissa, tf.int64)
    shift = tf.constant(shift, tf.int64)
    left = tf.maximum(shift, 0)
    right = tf.broadcast_to(tf.maximum(-shift, 0), tf.shape(x))
    scaled = x * tf.bitwise.left_shift(tf.ones_like(left), left)
    high = tf.bitwise.right_shift(scaled * mantissa + (1 << 30), 31)
    half = tf.where(right > 0, tf.bitwise.left_shift(tf.ones_like(right), tf.maximum(right - 1, 0)),
                    tf.zeros_like(right))
    return tf.bitwise.right_shift(high + half, right)
