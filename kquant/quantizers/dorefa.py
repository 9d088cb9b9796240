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
        w_q = max|w| * round(127 * (2 * w_n - 1)) / 127          for k = 8
        w_q = mean|w| * sign(w)                                  for k = 1 (binary)

    Backward: straight-through for the rounding, so dw_q/dw = max|w| * (1 - tanh(w)^2) /
    max|tanh(w)| for k >= 2; for k = 1 the paper's dw_q/dw = 1 (BinaryConnect's estimator).
    The scales max|w| and mean|w| are held constant. sign(0) is +1.

    Paper: Zhou, Wu, Ni, Zhou, Wen, Zou, "DoReFa-Net: Training Low Bitwidth Convolutional
    Neural Networks with Low Bitwidth Gradients", arXiv 1606.06160; the binary scale mean|w|
    per output channel is XNOR-Net's (Rastegari, Ordonez, Redmon, Farhadi, arXiv 1603.05279).

    kquant's choices, beyond the paper: the grid is multiplied by max|w| so a quantized layer
    keeps the magnitude of its float weights (it matters for layers without batch norm after
    them, such as the last dense layer); and 8 bits use the narrow symmetric int8 grid (255
    levels), because DoReFa's 256 levels cannot be stored exactly as TFLite int8 weights. Every
    grid is an integer code in [-127, 127] times a per-channel step, which the TFLite export
    keeps exactly. Depthwise and dense kernels: see `LowBitWeightQuantizer`.

    The bit-width is a variable, so schedules move one quantizer from k bits down to binary.

    Args:
        bits: bit-width k, 1 to 8.
        per_channel: statistics per output channel instead of per layer.
        binary_per_channel: at 1 bit, scale each output channel by its own mean|w| (XNOR-Net's
            choice, the default) whatever `per_channel` says; False follows `per_channel`.
    """

    def fold_refusal(self):
        if self.per_channel:
            return None
        # Measured: 2-bit ResNet-20 with per-layer statistics collapsed to 10.8% at the freeze.
        return ("with per-layer statistics its grid has no zero level, so a channel far below "
                "the layer's largest weight rounds to +-max|w|/n whatever its gamma / sigma, "
                "and its moving variance drifts; use per_channel=True")

    def __init__(self, bits, per_channel=False, binary_per_channel=True):
        super().__init__(bits, per_channel)
        self.binary_per_channel = bool(binary_per_channel)

    def _reduce(self, fn, x, channelwise=None):
        channelwise = self.channelwise if channelwise is None else channelwise and not self._dense
        axes = list(range(len(x.shape) - 1)) if channelwise else None
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
        eight_bit, binary = bits >= 8.0, bits <= 1.0
        mean = self._reduce(tf.reduce_mean, tf.abs(w),
                            self.binary_per_channel or self.per_channel)
        # 1 bit: sign with gradient 1 on w_q (so 1 / mean|w| on the code); k bits: odd codes
        # -n..n; 8 bits: the narrow int8 grid -127..127.
        sign = 2.0 * tf.cast(w >= 0.0, tf.float32) - 1.0
        ste_sign = sign + (w - tf.stop_gradient(w)) / tf.maximum(mean, 1e-12)
        codes = tf.where(binary, ste_sign, tf.where(
            eight_bit, round_ste(127.0 * (2.0 * w_n - 1.0)), 2.0 * round_ste(n * w_n) - n))
        largest_code = tf.where(eight_bit, 127.0, n)
        largest_value = tf.where(binary, mean, self._reduce(tf.reduce_max, tf.abs(w)))
        spread = tf.floor(127.0 / largest_code)
        step = tf.maximum(largest_value, 1e-12) / (largest_code * spread)
        return codes * spread, step

    def quantize(self, w, weights):
        codes, step = self.codes_and_step(w, weights)
        return self._int8_grid(codes * step, step, w.shape)

    def get_config(self):
        return {**super().get_config(), "binary_per_channel": self.binary_per_channel}
