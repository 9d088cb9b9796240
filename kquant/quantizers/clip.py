"""The common form of activation quantizers whose clip is a variable (PACT, channel-aware)."""
from kquant.backend import tf
from kquant.quantizers.base import LowBitQuantizer
from kquant.quantizers.ste import uniform_activation


class VariableClipQuantizer(LowBitQuantizer):
    """Uniform activations on [0, clip], clip held in the variable "clip" that subclasses build.

    Forward: a_q = clip * round(n * clip(a, 0, clip) / clip) / n, n = 2^k - 1; switched off,
    min(relu(a), clip). Subclasses decide how the clip is learned.
    """

    def quantize(self, x, weights):
        return uniform_activation(x, tf.maximum(weights["clip"], 1e-3), weights["bits"])

    def bypass(self, x, weights):
        return tf.minimum(tf.nn.relu(x), weights["clip"])
