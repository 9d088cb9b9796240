"""PACT: activations with a learnable clip (Choi et al., arXiv 1805.06085)."""
from kquant.backend import keras, tf
from kquant.quantizers.clip import VariableClipQuantizer


class PACTQuantizer(VariableClipQuantizer):
    """Parameterized clipping activation with a learnable, per-tensor clip alpha.

    Forward: a_q = alpha * round(n * clip(a, 0, alpha) / alpha) / n, n = 2^k - 1.
    Backward: da_q/da = 1 on [0, alpha], 0 outside; da_q/dalpha = 1 where a > alpha, 0
    elsewhere (the paper's straight-through estimator). alpha carries an L2 penalty, as in the
    paper. Switched off, it is clip(a, 0, alpha).

    Args:
        bits: bit-width k, 1 to 8.
        initial_clip: starting alpha (> 0).
        clip_regularization: L2 coefficient on alpha.
    """

    def __init__(self, bits, initial_clip=6.0, clip_regularization=5e-5):
        super().__init__(bits)
        if not initial_clip > 0:
            raise ValueError(f"PACTQuantizer: initial_clip must be > 0, got {initial_clip!r}.")
        self.initial_clip = float(initial_clip)
        self.clip_regularization = float(clip_regularization)

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        weights["clip"] = layer.add_weight(
            f"{name}_clip", shape=(), dtype=tf.float32, trainable=True,
            initializer=keras.initializers.Constant(self.initial_clip),
            regularizer=keras.regularizers.L2(self.clip_regularization),
            constraint=keras.constraints.NonNeg())
        return weights

    def get_config(self):
        return {**super().get_config(), "initial_clip": self.initial_clip,
                "clip_regularization": self.clip_regularization}
