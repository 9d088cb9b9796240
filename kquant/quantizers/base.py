"""The quantizer protocol every kquant quantizer follows, and its weight and activation bases.

Besides TF-MOT's `build` and `__call__`, a kquant quantizer answers for itself what generic
code needs: its grid (integer codes and step for weights; step, range and level count for
activations) for export and verification, its data-dependent start (`initialize`), and the
training callbacks it needs. Export, verify, describe and calibration ask these methods and
never look at a quantizer's class.
"""
import contextlib
import dataclasses
import numbers
import threading

from kquant.backend import keras, tf, tfmot
from kquant.quantizers.int8_grid import per_channel_weight_grid, per_tensor_weight_grid
from kquant.quantizers.rounding import requantization_range, steps, uniform_activation

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
    """Returns `bits` as an int, or raises ValueError unless it is an integer from 1 to 8.

    Any integer type is accepted (Python's, numpy's); bools and floats are not.
    """
    if not isinstance(bits, numbers.Integral) or isinstance(bits, bool) or \
            not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{owner}: {argument} must be an integer from {MIN_BITS} to {MAX_BITS}, "
                         f"got {bits!r}.")
    return int(bits)


@dataclasses.dataclass(frozen=True)
class ActivationGrid:
    """The grid an activation quantizer puts its output on (what the TFLite tensor holds).

    Attributes:
        step: the scale of the int8 tensor holding the levels: the distance between
            neighbouring levels, or half of it for symmetric grids without a zero level.
        low, high: the smallest and largest level.
        levels: how many levels there are.
    """

    step: float
    low: float
    high: float
    levels: int


class LowBitQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """A TF-MOT quantizer whose bit-width and on/off switch are non-trainable variables.

    After `build` the bit-width lives only in the variable "bits": callbacks change it and
    "enabled" between steps of one `fit` without recompiling (see `kquant.precision`).
    `deploy_bits`, the constructor's bit-width, is the precision the model is built to be
    exported at; schedules that pass through other precisions end there. Subclasses implement
    `quantize` (the grid) and `bypass` (the tensor when the quantizer is switched off).

    Args:
        bits: the deployed bit-width, 1 to 8 (any integer type).

    Raises:
        ValueError: for bits outside 1 to 8.
    """

    variable_bits = True  # False: the bit-width shapes variables and is fixed at build
    fixed_bits = None  # the only bit-width a quantizer takes (ternary: 2), or None for 1 to 8

    def __init__(self, bits):
        self.deploy_bits = check_bits(bits, type(self).__name__)

    def build(self, tensor_shape, name, layer):
        return {
            "bits": layer.add_weight(f"{name}_bits", shape=(), dtype=tf.float32, trainable=False,
                                     initializer=keras.initializers.Constant(self.deploy_bits)),
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

    def level_count(self, weights):
        """How many distinct values one channel may hold at the current bit-width: 2^bits."""
        return 2 ** int(weights["bits"].numpy())

    def initialize(self, weights, values):
        """Sets data-dependent starting values; the default has none to set.

        Args:
            weights: this quantizer's variables (from `build`).
            values: for a weight quantizer, the layer's kernel variable holding the float
                weights; for an activation quantizer, a numpy array of the float model's
                activations at this layer.

        Returns:
            What was chosen (e.g. a clip), or None.
        """
        del weights, values
        return None

    def refit(self, weights):
        """Fits data-dependent parameters again on the next training batch (e.g. a clip after
        the bit-width changed); the default has none."""
        del weights

    def training_callbacks(self):
        """Keras callbacks `fit` needs for this quantizer to train (one instance per class
        serves every quantizer of a model)."""
        return []

    def get_config(self):
        return {"bits": self.deploy_bits}

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self == other


class LowBitWeightQuantizer(LowBitQuantizer):
    """A weight quantizer that sees kernels as [..., output channels], as TFLite stores them.

    Its grid for export is `codes_and_step`: integer codes in [-127, 127] and a step per
    output channel, with the quantized weight equal to codes * step. Depthwise kernels
    [h, w, c, m] are viewed per output channel (input channel times depth multiplier). Dense
    kernels always use per-layer statistics: TF 2.21's converter cannot export a
    per-output-unit grid on FULLY_CONNECTED (`per_channel` recipes turn Dense layers into
    `kquant.pointwise_dense.PointwiseDense`, a 1x1 convolution, which is per channel).

    In a layer with a folded batch norm (`kquant.folding`) it quantizes the folded kernel
    `fold(kernel)`, the one TFLite stores; its grid describes that kernel.

    Args:
        bits: bit-width, 1 to 8.
        per_channel: statistics (or levels) per output channel instead of per layer.
    """

    def __init__(self, bits, per_channel=False):
        super().__init__(bits)
        self.per_channel = bool(per_channel)
        self._depthwise = False
        self._dense = False
        self._fold = None

    def build(self, tensor_shape, name, layer):
        inner = getattr(layer, "layer", layer)  # TF-MOT passes the wrapper
        self._depthwise = isinstance(inner, keras.layers.DepthwiseConv2D)
        self._dense = isinstance(inner, keras.layers.Dense)
        self._fold = getattr(inner, "fold", None)
        if self._fold is not None and self.fold_refusal() is not None:
            raise ValueError(f"{type(self).__name__} on layer {inner.name!r} cannot quantize a "
                             f"kernel with batch norm folded in: {self.fold_refusal()}. Use "
                             "Recipe(fold_batch_norm=False) or another weight quantizer.")
        if self._fold is not None:
            inner.kernel_folded = True
        return super().build(tensor_shape, name, layer)

    def fold_refusal(self):
        """Why this quantizer cannot quantize a kernel with batch norm folded in, or None.

        A folded layer's moving variance tracks its conv output divided by gamma / sigma, so
        each output channel of the quantized kernel must scale with that channel's folded
        kernel; otherwise the variance feeds back on itself and drifts.
        """
        return None

    def fold(self, kernel):
        """The kernel this quantizer quantizes: `kernel` with its layer's batch norm folded in
        (gamma / sigma per output channel), or `kernel` itself."""
        return kernel if self._fold is None else self._fold(kernel)

    def __call__(self, inputs, training, weights, **kwargs):
        return super().__call__(self.fold(inputs), training, weights, **kwargs)

    @property
    def channelwise(self):
        """Whether statistics are per output channel (never for dense kernels)."""
        return self.per_channel and not self._dense

    def codes_and_step(self, w, weights):
        """The grid: (integer codes in [-127, 127], step per output channel), channels last.

        The quantized weight is codes * step; TFLite must store exactly these codes.
        """
        raise NotImplementedError

    def level_count(self, weights):
        """2^bits, at most 255: the narrow int8 range has 255 values."""
        return min(super().level_count(weights), 255)

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


class ActivationQuantizer(LowBitQuantizer):
    """Uniform activations on [0, clip], replacing ReLU; subclasses say where the clip comes from.

    Forward: a_q = clip * round(n * min(relu(a), clip) / clip) / n with n = 2^b - 1, written
    as `rounding.uniform_activation` so the TFLite tensor holds only the 2^b levels. Switched
    off: min(relu(a), clip), full precision on the same range.
    """

    fixed_clip = None  # the clip, for quantizers whose clip never changes; None when it is learned
    replaces_activation = False  # True: takes the pre-activation (quantize_model drops the ReLU)
    input_shift = 0.0  # a constant added to the input before rounding (folded into a conv bias)
    clamps_at_zero = True  # the requantized tensor has passed a ReLU: its int8 clamp starts at 0
    # Set by `kquant.quantize_model` for the TFLite graph (see `uniform_activation`): the
    # layer before already applies the ReLU (a second one after a ReLU6 would not fuse), and
    # a concatenation follows.
    input_rectified = False
    standalone = False
    _MODEL_FLAGS = ("input_rectified", "standalone")

    def clip(self, weights):
        """The upper end of the range, a scalar tensor: `fixed_clip` where a subclass sets one,
        else the variable "clip" it builds, kept >= 1e-3 so a collapsed clip cannot divide by
        zero."""
        if self.fixed_clip is not None:
            return tf.constant(self.fixed_clip)
        return tf.maximum(weights["clip"], 1e-3)

    def batch_update(self, x, weights):
        """State a training batch changes before it is quantized (e.g. a clip fit to it);
        returns a tensor to wait for, or None for quantizers that have none."""
        del x, weights
        return None

    def __call__(self, inputs, training, weights, **kwargs):
        if training is None or in_export_mode():
            training = False
        if type(self).batch_update is ActivationQuantizer.batch_update or training is False:
            return super().__call__(inputs, training, weights, **kwargs)
        if training is True:
            update = self.batch_update(inputs, weights)
        else:
            update = tf.cond(tf.cast(training, tf.bool), lambda: self.batch_update(inputs, weights),
                             lambda: tf.zeros([]))
        with tf.control_dependencies([update]):
            return super().__call__(inputs, training, weights, **kwargs)

    def quantize(self, x, weights):
        return uniform_activation(x, self.clip(weights), weights["bits"],
                                  rectify=not self.input_rectified, standalone=self.standalone)

    def get_config(self):
        return {**super().get_config(), **{flag: True for flag in self._MODEL_FLAGS
                                           if getattr(self, flag)}}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        flags = {flag: config.pop(flag, False) for flag in cls._MODEL_FLAGS}
        quantizer = cls(**config)
        for flag, value in flags.items():
            setattr(quantizer, flag, value)
        return quantizer

    def bypass(self, x, weights):
        return tf.minimum(tf.nn.relu(x), self.clip(weights))

    def requantization_range(self, weights):
        """(min, max) of the 8-bit FakeQuant where TFLite requantizes the accumulator onto this
        grid, as float32 values equal to the graph's (the converter derives the int8 scale and
        zero point from them)."""
        low, high = requantization_range(self.clip(weights), weights["bits"])
        return float(low.numpy()), float(high.numpy())

    def relabel(self, weights):
        """The elementwise ops the export applies after the requantization, in order: a list of
        (constant, subtract, (low, high)), each an ADD (SUB if `subtract`) of the constant onto
        the 8-bit range (low, high), as float32 values equal to the graph's; empty for grids
        that the requantization alone puts in place."""
        del weights
        return []

    def activation_grid(self, weights):
        """The `ActivationGrid` at the current clip and bit-width."""
        clip = float(self.clip(weights))
        n = float(steps(weights["bits"]))
        return ActivationGrid(step=clip / n, low=0.0, high=clip, levels=int(n) + 1)

