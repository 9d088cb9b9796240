"""DoReFa-Net's weight quantizer (Recipe name "dorefa")."""
from kquant.backend import tf
from kquant.quantizers.base import LowBitWeightQuantizer
from kquant.quantizers.rounding import round_ste, steps
from kquant.serialization import serializable


@serializable("dorefa")
class DoReFaWeightQuantizer(LowBitWeightQuantizer):
    """DoReFa weight quantizer with tanh normalisation, per layer or per output channel.

    Forward, for k bits and n = 2^k - 1 (max and mean over the layer, or over each output
    channel when `per_channel`):

        w_n = tanh(w) / (2 * max|tanh(w)|) + 0.5
        w_q = max|w| * (2 * round(n * w_n) / n - 1)              for 2 <= k <= 7
        w_q = mean|w| * sign(w)                                  for k = 1
        w_q = max|w| * round(127 * (2 * w_n - 1)) / 127          for k = 8

    Backward: straight-through for the rounding, so dw_q/dw = max|w| * (1 - tanh(w)^2) /
    max|tanh(w)| (the scales max|w| and mean|w| are held constant).

    Paper: Zhou, Wu, Ni, Zhou, Wen, Zou, "DoReFa-Net: Training Low Bitwidth Convolutional
    Neural Networks with Low Bitwidth Gradients", arXiv 1606.06160.

    kquant's choices, beyond the paper: the grid is multiplied by max|w| so a quantized layer
    keeps the magnitude of its float weights (it matters for layers without batch norm after
    them, such as the last dense layer); and 8 bits use the narrow symmetric int8 grid (255
    levels), because DoReFa's 256 levels cannot be stored exactly as TFLite int8 weights. Every
    grid is an integer code in [-127, 127] times a per-channel step, which the TFLite export
    keeps exactly. Depthwise and dense kernels: see `LowBitWeightQuantizer`.

    Args:
        bits: bit-width k, 1 to 8.
        per_channel: statistics per output channel instead of per layer.
    """

    def _reduce(self, fn, x):
        axes = list(range(len(x.shape) - 1)) if self.channelwise else None
        return tf.stop_gradient(fn(x, axis=axes))

    def codes_and_step(self, w, weights):
        """Returns (int8 codes in [-127, 127], per-channel step) with w_q = codes * step.

        A k-bit grid's codes are spread over the whole int8 range (the odd codes -n..n times
        floor(127 / n)): the values and their count stay the same, but the TFLite accumulator
        gets a finer scale, so the batch-norm bias folded into it rounds to well under one
        activation step. Codes carry the straight-through gradient; both are in the
        channels-last view.
        """
        w = self._channels_last(w)
        bits = weights["bits"]
        n = steps(bits)
        t = tf.tanh(w)
        w_n = t / (2.0 * self._reduce(tf.reduce_max, tf.abs(t))) + 0.5
        eight_bit = bits >= 8.0
        # k bits: odd codes -n..n; 8 bits: the narrow int8 grid -127..127; 1 bit: sign.
        codes = tf.where(eight_bit, round_ste(127.0 * (2.0 * w_n - 1.0)), 2.0 * round_ste(n * w_n) - n)
        largest_code = tf.where(eight_bit, 127.0, n)
        largest_value = tf.where(bits <= 1.0, self._reduce(tf.reduce_mean, tf.abs(w)),
                                 self._reduce(tf.reduce_max, tf.abs(w)))
        spread = tf.floor(127.0 / largest_code)
        step = tf.maximum(largest_value, 1e-12) / (largest_code * spread)
        return codes * spread, step

    def quantize(self, w, weights):
        codes, step = self.codes_and_step(w, weights)
        return self._int8_grid(codes * step, step, w.shape)
