"""PACT: activations with a learnable clip (Recipe name "pact")."""
import numpy as np

from kquant.backend import keras, tf
from kquant.quantizers.learned_range import LearnedRangeActivationQuantizer
from kquant.serialization import serializable


@serializable("pact")
class PACTQuantizer(LearnedRangeActivationQuantizer):
    """Parameterized clipping activation with a learnable, per-tensor clip alpha.

    Forward: a_q = alpha * round(n * clip(a, 0, alpha) / alpha) / n, n = 2^k - 1.
    Backward: da_q/da = 1 on [0, alpha], 0 outside; da_q/dalpha = 1 where a > alpha, 0
    elsewhere (the paper's straight-through estimator). alpha carries an L2 penalty, as in the
    paper. Switched off, it is clip(a, 0, alpha).

    Paper: Choi, Wang, Venkataramani, Chuang, Srinivasan, Gopalakrishnan, "PACT:
    Parameterized Clipping Activation for Quantized Neural Networks", arXiv 1805.06085.

    kquant's choices: `initialize` starts alpha at a percentile of the float model's
    activations (`kquant.calibrate_ranges`) instead of a fixed value; `refit` re-fits it on
    the next batch (`LearnedRangeActivationQuantizer`); alpha is kept >= 1e-3 in the forward
    pass so a collapsed clip cannot divide by zero.

    Args:
        bits: bit-width k, 1 to 8.
        initial_clip: starting alpha (> 0) before any calibration.
        clip_regularization: L2 coefficient on alpha.
        calibration_percentile: the percentile of the float activations (zeros included) that
            `initialize` makes alpha, in (0, 100].

    Raises:
        ValueError: for initial_clip <= 0 or a percentile outside (0, 100].
    """

    def __init__(self, bits, initial_clip=6.0, clip_regularization=5e-5,
                 calibration_percentile=99.9):
        super().__init__(bits)
        if not initial_clip > 0:
            raise ValueError(f"PACTQuantizer: initial_clip must be > 0, got {initial_clip!r}.")
        if not 0 < calibration_percentile <= 100:
            raise ValueError("PACTQuantizer: calibration_percentile must be in (0, 100], got "
                             f"{calibration_percentile!r}.")
        self.initial_clip = float(initial_clip)
        self.clip_regularization = float(clip_regularization)
        self.calibration_percentile = float(calibration_percentile)

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        weights["clip"] = layer.add_weight(
            f"{name}_clip", shape=(), dtype=tf.float32, trainable=True,
            initializer=keras.initializers.Constant(self.initial_clip),
            regularizer=keras.regularizers.L2(self.clip_regularization),
            constraint=keras.constraints.NonNeg())
        return weights

    def assign_clip(self, weights, clip):
        return weights["clip"].assign(clip)

    def initialize(self, weights, values):
        """alpha := the `calibration_percentile` of the float activations `values`."""
        clip = max(float(np.percentile(values, self.calibration_percentile)), 1e-3)
        weights["clip"].assign(clip)
        return clip

    def get_config(self):
        return {**super().get_config(), "initial_clip": self.initial_clip,
                "clip_regularization": self.clip_regularization,
                "calibration_percentile": self.calibration_percentile}
