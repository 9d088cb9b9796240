"""Ternary weights: {-alpha, 0, +alpha} per output channel (Recipe name "ternary")."""
from kquant.backend import tf
from kquant.quantizers.base import LowBitWeightQuantizer
from kquant.serialization import serializable


@serializable("ternary")
class TernaryWeightQuantizer(LowBitWeightQuantizer):
    """Ternary weight networks' quantizer: w_q = alpha * t, t in {-1, 0, 1}.

    Forward (statistics per output channel when `per_channel`, else per layer):

        t = sign(w) where |w| > threshold * mean|w|, else 0
        alpha = mean of |w| where t != 0

    Backward: dw_q/dw = 1 (straight-through; alpha held constant).

    Paper: Li, Zhang, Liu, "Ternary Weight Networks", arXiv 1605.04711 (threshold 0.7). TSQ
    (`kquant.techniques.tsq`) writes kernels that already are alpha * t, which this
    quantizer returns unchanged. The bit-width is 2 (three levels) and fixed.

    Args:
        bits: must be 2.
        per_channel: alpha and the threshold per output channel (dense kernels: per layer).
        threshold: the share of mean|w| below which weights become 0, >= 0.

    Raises:
        ValueError: for bits other than 2 or a negative threshold.
    """

    variable_bits = False
    fixed_bits = 2

    def __init__(self, bits=2, per_channel=False, threshold=0.7):
        super().__init__(bits, per_channel)
        if self.deploy_bits != 2:
            raise ValueError(f"TernaryWeightQuantizer: bits must be 2 (three levels), got {bits!r}.")
        if not threshold >= 0:
            raise ValueError(f"TernaryWeightQuantizer: threshold must be >= 0, got {threshold!r}.")
        self.threshold = float(threshold)

    def level_count(self, weights):
        return 3

    def codes_and_step(self, w, weights):
        """Codes -127, 0, 127 (gradient: 1 / step on the code, so 1 on w_q) and alpha / 127."""
        w = self._channels_last(w)
        axes = list(range(len(w.shape) - 1)) if self.channelwise else None
        magnitude = tf.abs(w)
        cut = self.threshold * tf.reduce_mean(magnitude, axis=axes)
        kept = tf.cast(magnitude > cut, tf.float32)
        alpha = tf.stop_gradient(tf.reduce_sum(magnitude * kept, axis=axes)
                                 / tf.maximum(tf.reduce_sum(kept, axis=axes), 1.0))
        step = tf.maximum(alpha, 1e-12) / 127.0
        ternary = (2.0 * tf.cast(w >= 0.0, tf.float32) - 1.0) * kept
        codes = 127.0 * ternary + (w - tf.stop_gradient(w)) / step
        return codes, step

    def quantize(self, w, weights):
        codes, step = self.codes_and_step(w, weights)
        return self._int8_grid(codes * step, step, w.shape)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}
