"""How each TFLite runtime rounds: the arithmetic that differs between deployment targets.

The same int8 .tflite file gives different int8 outputs on different runtimes (measured in
../shared/CONVERTER-FACTS.md, facts 6-9): XNNPACK (LiteRT's default CPU delegate on phones and
desktops) requantizes in float32 with one rounding; LiteRT's built-in kernels and TFLite Micro
use the fixed-point multiplier with two roundings. Everything else (integer accumulation,
zero points, clamps, int8 min) is the same everywhere and lives in `kquant.deploy.ops`.

A runtime answers four questions, each on int64 tensors of integer values and returning the
output's integer values (zero point included, not yet clamped): `requantize` (a conv/dense
accumulator to the output grid), `convert` (an int8 tensor to another scale: QUANTIZE),
`add` (also SUB) and `mean`.
"""
import numpy as np

from kquant.backend import tf
from kquant.deploy import fixed_point


def _f32(value):
    return np.float32(value)


class XNNPACK:
    """LiteRT with the XNNPACK delegate (the default on phones and desktops).

    Formulas from XNNPACK's microkernels (src/microparams-init.c, qs8-vadd, reduce-nd):
    - conv/dense: rint(float32(acc) * s) with s = s_in * s_w[c] / s_out in float32;
    - add: a and b times 2^shift-scaled integer multipliers, one arithmetic right shift with
      a rounding bias;
    - mean: nearbyint(float32(sum) * s + z) with s = (s_in / s_out) / N and
      z = zp_out - N * zp_in * s, in float32;
    - convert: (x * m + bias) >> 8 with m = rint(256 * s_in / s_out).
    """

    name = "xnnpack"
    # Filters XNNPACK leaves to LiteRT's built-in kernels: (op, storage).
    _NOT_DELEGATED = {("CONV_2D", "int4"), ("DEPTHWISE_CONV_2D", "int4"),
                      ("FULLY_CONNECTED", "int2")}

    def weight_kernels(self, tflite_op, storage):
        """The runtime whose kernels compute a weight op with filters stored as `storage`."""
        return RUNTIMES["builtin"] if (tflite_op, storage) in self._NOT_DELEGATED else self

    def requantize(self, acc, input_scale, weight_scales, out_quant):
        scale = (_f32(input_scale) * np.asarray(weight_scales, np.float32)) / _f32(out_quant.scale)
        scaled = tf.cast(acc, tf.float32) * tf.constant(scale.astype(np.float32))
        return tf.cast(tf.math.rint(scaled), tf.int64) + out_quant.zero_point

    def add(self, a, b, a_quant, b_quant, out_quant, subtract=False):
        a_ratio = _f32(_f32(a_quant.scale) / _f32(out_quant.scale))
        b_ratio = _f32(_f32(b_quant.scale) / _f32(out_quant.scale))
        b_ratio = -b_ratio if subtract else b_ratio  # XNNPACK subtracts by a negative scale
        exponent = int(np.frexp(max(abs(a_ratio), abs(b_ratio)))[1]) - 1
        shift = 20 - exponent

        def multiplier(ratio):
            return int(np.rint(np.float32(abs(ratio)) * np.float32(2.0 ** shift))) * \
                (-1 if ratio < 0 else 1)

        a_mult, b_mult = multiplier(a_ratio), multiplier(b_ratio)
        bias = (1 << (shift - 1)) - a_mult * a_quant.zero_point - b_mult * b_quant.zero_point
        acc = bias + a * a_mult + b * b_mult
        return tf.bitwise.right_shift(acc, tf.constant(shift, tf.int64)) + out_quant.zero_point

    def convert(self, x, in_quant, out_quant):
        multiplier = int(np.rint(np.float32(256.0) * _f32(_f32(in_quant.scale) /
                                                           _f32(out_quant.scale))))
        bias = (out_quant.zero_point << 8) - multiplier * in_quant.zero_point + 0x80
        return tf.bitwise.right_shift(bias + x * multiplier, tf.constant(8, tf.int64))

    def mean(self, x, axes, in_quant, out_quant):
        count = int(np.prod([x.shape[a] for a in axes]))
        scale = _f32(_f32(_f32(in_quant.scale) / _f32(out_quant.scale)) * _f32(1.0 / count))
        zero = _f32(_f32(out_quant.zero_point) - _f32(count * in_quant.zero_point) * scale)
        total = tf.cast(tf.reduce_sum(x, axis=axes), tf.float32)
        return tf.cast(tf.math.rint(total * scale + zero), tf.int64)


class MicroKernels:
    """TFLite Micro (microcontrollers) and the reference kernels: gemmlowp fixed point with two
    roundings, half away from zero, multipliers computed in double from the stored float32
    scales (tflite/kernels/internal/reference: conv, add, reduce)."""

    name = "micro"
    _weight_rounding = staticmethod(fixed_point.multiply_by_quantized_multiplier)

    def weight_kernels(self, tflite_op, storage):
        """Every filter storage runs on these same kernels."""
        del tflite_op, storage
        return self

    def requantize(self, acc, input_scale, weight_scales, out_quant):
        reals = (np.float64(_f32(input_scale)) * np.asarray(weight_scales, np.float32).astype(
            np.float64)) / np.float64(_f32(out_quant.scale))
        mantissas, shifts = fixed_point.quantize_multipliers(reals)
        return self._weight_rounding(acc, mantissas, shifts) + out_quant.zero_point

    def convert(self, x, in_quant, out_quant):
        mantissa, shift = fixed_point.quantize_multiplier(
            np.float64(_f32(in_quant.scale)) / np.float64(_f32(out_quant.scale)))
        return fixed_point.multiply_by_quantized_multiplier(
            x - in_quant.zero_point, mantissa, shift) + out_quant.zero_point

    def add(self, a, b, a_quant, b_quant, out_quant, subtract=False):
        left_shift = 20
        twice_max = 2.0 * np.float64(max(_f32(a_quant.scale), _f32(b_quant.scale)))
        a_m, a_s = fixed_point.quantize_multiplier(np.float64(_f32(a_quant.scale)) / twice_max)
        b_m, b_s = fixed_point.quantize_multiplier(np.float64(_f32(b_quant.scale)) / twice_max)
        o_m, o_s = fixed_point.quantize_multiplier(
            twice_max / ((1 << left_shift) * np.float64(_f32(out_quant.scale))))
        scaled_a = fixed_point.multiply_by_quantized_multiplier(
            (a - a_quant.zero_point) * (1 << left_shift), a_m, a_s)
        scaled_b = fixed_point.multiply_by_quantized_multiplier(
            (b - b_quant.zero_point) * (1 << left_shift), b_m, b_s)
        total = scaled_a - scaled_b if subtract else scaled_a + scaled_b
        return fixed_point.multiply_by_quantized_multiplier(total, o_m, o_s) + \
            out_quant.zero_point

    def mean(self, x, axes, in_quant, out_quant):
        count = int(np.prod([x.shape[a] for a in axes]))
        mantissa, shift = fixed_point.quantize_multiplier(
            np.float64(_f32(in_quant.scale)) / np.float64(_f32(out_quant.scale)))
        # reference_ops::QuantizedMeanOrSum folds 1 / count into the multiplier.
        extra = min(count.bit_length() - 1, 32, 31 + shift)
        mantissa = (mantissa << extra) // count
        shift -= extra
        total = tf.reduce_sum(x, axis=axes) - in_quant.zero_point * count
        return fixed_point.multiply_by_quantized_multiplier(total, mantissa, shift) + \
            out_quant.zero_point


class BuiltinKernels(MicroKernels):
    """LiteRT's built-in kernels without a delegate (`OpResolverType.
    BUILTIN_WITHOUT_DEFAULT_DELEGATES`): as the reference kernels, except that the optimized
    x86 CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED round both steps half up, as ruy does
    (see `fixed_point`)."""

    name = "builtin"
    _weight_rounding = staticmethod(fixed_point.ruy_multiply_by_quantized_multiplier)


RUNTIMES = {runtime.name: runtime for runtime in (XNNPACK(), BuiltinKernels(), MicroKernels())}


def get(name):
    """The runtime called `name`.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in RUNTIMES:
        raise ValueError(f"runtime must be one of {sorted(RUNTIMES)}, got {name!r}.")
    return RUNTIMES[name]
