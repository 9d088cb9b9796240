"""The base of every kquant quantizer (bit-width and on/off switch as variables, export mode),
and of weight quantizers (the channels-last view TFLite quantizes per channel)."""
import contextlib
import threading

from kquant.backend import keras, tf, tfmot
from kquant.quantizers.ste import per_channel_weight_grid, per_tensor_weight_grid

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


class LowBitWeightQuantizer(LowBitQuantizer):
    """A weight quantizer that sees kernels as [..., output channels], as TFLite stores them.

    Depthwise kernels [h, w, c, m] are viewed per output channel (input channel times depth
    multiplier). Dense kernels always use per-layer statistics: TF 2.21's converter cannot
    export a per-output-unit grid on FULLY_CONNECTED.

    Args:
        bits: bit-width, 1 to 8.
        per_channel: statistics (or levels) per output channel instead of per layer.
    """

    def __init__(self, bits, per_channel=False):
        super().__init__(bits)
        self.per_channel = bool(per_channel)
        self._depthwise = False
        self._dense = False

    def build(self, tensor_shape, name, layer):
        inner = getattr(layer, "layer", layer)  # TF-MOT passes the wrapper
        self._depthwise = isinstance(inner, keras.layers.DepthwiseConv2D)
        self._dense = isinstance(inner, keras.layers.Dense)
        return super().build(tensor_shape, name, layer)

    @property
    def channelwise(self):
        """Whether statistics are per output channel (never for dense kernels)."""
        return self.per_channel and not self._dense

    def _channels_last_shape(self, shape):
        shape = list(shape)
        return [shape[0], shape[1], 1, shape[2] * shape[3]] if self._depthwise else shape

    def _channels_last(self, w):
        """The kernel as [..., output channels], the layout TFLite quantizes per channel."""
        return tf.reshape(w, self._channels_last_shape(w.shape))

    def _int8_grid(self, w_q, step, shape):
        """Marks channels-last `w_q`, on a grid of `step` (scalar or per channel), as int8 for
        the converter and returns it in the kernel's `shape`."""
        step = tf.reshape(step, [-1])
        if self._dense:
            return tf.reshape(per_tensor_weight_grid(w_q, step[0]), shape)
        return tf.reshape(per_channel_weight_grid(w_q, step), shape)

    def get_config(self):
        return {**super().get_config(), "per_channel": self.per_channel}
