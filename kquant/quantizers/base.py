"""The base of every kquant quantizer: bit-width and on/off switch as variables, export mode."""
import contextlib
import threading

from kquant.backend import keras, tf, tfmot

MIN_BITS, MAX_BITS = 1, 8

_state = threading.local()


@contextlib.contextmanager
def export_mode():
    """Within this context quantizers trace only their quantized path (no on/off switch).

    `tflite_export` traces the model here, so the exported graph holds nothing but the grids;
    it checks first that every quantizer is switched on.
    """
    previous = getattr(_state, "export", False)
    _state.export = True
    try:
        yield
    finally:
        _state.export = previous


def in_export_mode():
    return getattr(_state, "export", False)


def check_bits(bits, owner="quantizer", argument="bits"):
    """Raises ValueError unless `bits` is an integer from 1 to 8."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{owner}: {argument} must be an integer from {MIN_BITS} to {MAX_BITS}, "
                         f"got {bits!r}.")
    return bits


class LowBitQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """A TF-MOT quantizer whose bit-width and on/off switch are non-trainable variables.

    Callbacks change `bits` and `enabled` between steps of one `fit` without recompiling
    (see `kquant.precision`). Subclasses implement `quantize` (the grid) and `bypass` (what
    the tensor is when the quantizer is off).

    Args:
        bits: initial bit-width, 1 to 8.
    """

    variable_bits = True  # False: the bit-width shapes variables and is fixed at build

    def __init__(self, bits):
        self.bits = check_bits(bits, type(self).__name__)

    def build(self, tensor_shape, name, layer):
        return {
            "bits": layer.add_weight(f"{name}_bits", shape=(), dtype=tf.float32, trainable=False,
                                     initializer=keras.initializers.Constant(self.bits)),
            "enabled": layer.add_weight(f"{name}_enabled", shape=(), dtype=tf.float32,
                                        trainable=False, initializer="ones"),
        }

    def __call__(self, inputs, training, weights, **kwargs):
        if in_export_mode():
            return self.quantize(inputs, weights)
        return tf.cond(weights["enabled"] > 0.5, lambda: self.quantize(inputs, weights),
                       lambda: self.bypass(inputs, weights))

    def quantize(self, inputs, weights):
        raise NotImplementedError

    def bypass(self, inputs, weights):
        """The full-precision path: weights pass unchanged by default."""
        return tf.identity(inputs)

    def get_config(self):
        return {"bits": self.bits}

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self == other
