"""LSQ: learned step size quantization of weights and activations (Recipe name "lsq").

Paper: Esser, McKinstry, Bablani, Appuswamy, Modha, "Learned Step Size Quantization", ICLR
2020, arXiv 1902.08153.
"""
import numpy as np

from kquant.backend import keras, tf
from kquant.quantizers.base import LowBitWeightQuantizer
from kquant.quantizers.learned_range import LearnedRangeActivationQuantizer
from kquant.quantizers.rounding import round_ste, steps, uniform_activation
from kquant.serialization import serializable


def scale_gradient(x, scale):
    """x forward; its gradient multiplied by `scale` (LSQ's step-size gradient scale)."""
    return x * scale + tf.stop_gradient(x - x * scale)


def _signed_range(bits):
    """(Q_N, Q_P) of a signed b-bit grid -Q_N..Q_P: 2^(b-1) and 2^(b-1) - 1, in int8's narrow
    range (8 bits: -127..127); below 2 bits, the 2-bit grid."""
    half = tf.pow(2.0, tf.maximum(tf.cast(bits, tf.float32), 2.0) - 1.0)
    return tf.minimum(half, 127.0), tf.minimum(half - 1.0, 127.0)


@serializable("lsq")
class LSQWeightQuantizer(LowBitWeightQuantizer):
    """Weights on a learned step s, per layer or per output channel.

    Forward, with Q_N = 2^(b-1) and Q_P = 2^(b-1) - 1 (8 bits: Q_N = Q_P = 127, int8's narrow
    range):

        w_q = s * round(clip(w / s, -Q_N, Q_P))

    Backward: dw_q/dw = 1 for -Q_N <= w / s <= Q_P, 0 outside (straight-through);
    dw_q/ds = round(w / s) - w / s inside, -Q_N below and Q_P above, times the gradient scale
    g = 1 / sqrt(N * Q_P), N the number of weights sharing s. Start: s = 2 mean|w| / sqrt(Q_P)
    from the float kernel (`initialize`, which `kquant.quantize_model` calls).

    For TFLite the codes -Q_N..Q_P are spread over the int8 range (times floor(127 / Q_N)),
    as every kquant weight grid is, so the export stores exactly these levels. The bit-width
    is a variable (schedules change it; below 2 bits LSQ's grid has no form and the 2-bit grid
    is used: 1-bit weights want "dorefa"'s sign). Depthwise and dense kernels: see
    `LowBitWeightQuantizer`.

    Args:
        bits: bit-width b, 2 to 8.
        per_channel: one step per output channel instead of per layer.

    Raises:
        ValueError: for bits outside 2 to 8.
    """

    def __init__(self, bits, per_channel=False):
        super().__init__(bits, per_channel)
        if self.deploy_bits < 2:
            raise ValueError(f"LSQWeightQuantizer: bits must be an integer from 2 to 8 (LSQ's "
                             f"signed grid has no 1-bit form; use weight_quantizer='dorefa' for "
                             f"binary weights), got {bits!r}.")
        self._per_step = 1

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        shape = self._channels_last_shape(tensor_shape)
        channels = shape[-1] if self.channelwise else 1
        self._per_step = int(np.prod(shape)) // channels
        weights["step"] = layer.add_weight(
            f"{name}_step", shape=(channels,) if self.channelwise else (), dtype=tf.float32,
            trainable=True, initializer=keras.initializers.Constant(0.01))
        return weights

    def initialize(self, weights, kernel):
        """s := 2 mean|w| / sqrt(Q_P) over the layer (or each output channel) of `kernel`."""
        values = np.abs(self._channels_last(tf.convert_to_tensor(kernel)).numpy())
        axes = tuple(range(values.ndim - 1)) if self.channelwise else None
        _, positive = _signed_range(self.deploy_bits)
        step = np.maximum(2.0 * values.mean(axis=axes) / np.sqrt(float(positive)), 1e-8)
        weights["step"].assign(np.asarray(step, np.float32).reshape(weights["step"].shape))
        return None

    def codes_and_step(self, w, weights):
        """Codes round(clip(w / s)) times floor(127 / Q_N), with LSQ's gradients, and the step
        s / floor(127 / Q_N); channels last."""
        w = self._channels_last(w)
        negative, positive = _signed_range(weights["bits"])
        gradient_scale = tf.math.rsqrt(float(self._per_step) * positive)
        step = scale_gradient(tf.maximum(weights["step"], 1e-8), gradient_scale)
        codes = round_ste(tf.clip_by_value(w / step, -negative, positive))
        spread = tf.floor(127.0 / negative)
        return codes * spread, step / spread

    def quantize(self, w, weights):
        codes, step = self.codes_and_step(w, weights)
        return self._int8_grid(codes * step, step, w.shape)


def _lsq_activation(x, step, bits, gradient_scale, rectify, standalone):
    """uniform_activation(x, step * n) forward, with LSQ's gradients for x and the step.

    `bits` and `gradient_scale` are tensors read before (a custom gradient reads no variable).
    """
    n = steps(bits)

    @tf.custom_gradient
    def function(a, s):
        def gradient(dy):
            scaled = a / s
            inside = tf.cast((scaled >= 0.0) & (scaled <= n), dy.dtype)
            dstep = tf.where(scaled > n, n, tf.where(scaled < 0.0, 0.0,
                                                     tf.round(scaled) - scaled))
            return dy * inside, tf.reduce_sum(dy * dstep) * gradient_scale

        return uniform_activation(a, s * n, bits, rectify=rectify, standalone=standalone), gradient

    return function(x, step)


@serializable("lsq")
class LSQActivationQuantizer(LearnedRangeActivationQuantizer):
    """Unsigned activations (after a ReLU) on a learned step s.

    Forward, with Q_P = 2^b - 1:

        a_q = s * round(clip(a / s, 0, Q_P))

    Backward: da_q/da = 1 for 0 <= a / s <= Q_P, 0 outside; da_q/ds = round(a / s) - a / s
    inside, 0 below and Q_P above, times g = 1 / sqrt(N * Q_P), N the activations of one
    example in the layer. Start: s = 2 mean|a| / sqrt(Q_P) on the float model's activations
    (`initialize`, from `kquant.calibrate_ranges`); before that, the clip s * Q_P is
    `initial_clip`. `refit` re-fits the clip on the next batch after a bit-width change
    (`LearnedRangeActivationQuantizer`). The export is that of every kquant activation grid:
    one 8-bit FakeQuant whose step is s (`rounding.uniform_activation`).

    Paper: Esser et al., "Learned Step Size Quantization", ICLR 2020 (arXiv 1902.08153).

    Args:
        bits: bit-width b, 1 to 8.
        initial_clip: s * Q_P before any calibration, > 0.

    Raises:
        ValueError: for initial_clip <= 0.
    """

    def __init__(self, bits, initial_clip=6.0):
        super().__init__(bits)
        if not initial_clip > 0:
            raise ValueError(f"{type(self).__name__}: initial_clip must be > 0, got "
                             f"{initial_clip!r}.")
        self.initial_clip = float(initial_clip)
        self._per_step = 1

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        self._per_step = int(np.prod([d for d in tensor_shape[1:] if d is not None]))
        weights["step"] = layer.add_weight(
            f"{name}_step", shape=(), dtype=tf.float32, trainable=True,
            initializer=keras.initializers.Constant(
                self.initial_clip / (2 ** self.deploy_bits - 1)))
        return weights

    def _step(self, weights):
        return tf.maximum(weights["step"], 1e-8)

    def clip(self, weights):
        """s * Q_P."""
        return self._step(weights) * steps(weights["bits"])

    def assign_clip(self, weights, clip):
        return weights["step"].assign(clip / steps(weights["bits"]))

    def initialize(self, weights, values):
        """s := 2 mean|a| / sqrt(Q_P) of the float activations `values`; returns the clip."""
        positive = 2 ** self.deploy_bits - 1
        step = max(2.0 * float(np.mean(np.abs(values))) / np.sqrt(positive), 1e-8)
        weights["step"].assign(step)
        return step * positive

    def quantize(self, x, weights):
        bits = tf.identity(weights["bits"])
        gradient_scale = tf.math.rsqrt(float(self._per_step) * steps(bits))
        return _lsq_activation(x, self._step(weights), bits, gradient_scale,
                               not self.input_rectified, self.standalone)

    def get_config(self):
        return {**super().get_config(), "initial_clip": self.initial_clip}
