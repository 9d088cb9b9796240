"""Learnable-level weights updated directly in quantized form (Recipe name "direct-levels"),
and the callback that applies the direct update after every training step."""
import numpy as np

from kquant.backend import keras, tf
from kquant.quantizers.base import LowBitWeightQuantizer, in_export_mode
from kquant.quantizers.model_states import quantizer_states
from kquant.quantizers.rounding import round_ste
from kquant.serialization import serializable

INITIALIZATIONS = ("kmeans", "quantiles")
LEVEL_GRADIENTS = ("mean", "sum")


def level_count(bits):
    """2^b levels, except 255 at 8 bits: int8 has 255 symmetric values (ours, as for DoReFa)."""
    return min(2 ** bits, 255)


@serializable("direct-levels")
class DirectLevelsWeightQuantizer(LowBitWeightQuantizer):
    """Weights that are always one of 2^b learnable levels, updated in quantized form.

    Per layer, or per output channel with `per_channel`, a sorted level vector v (2^b values)
    and an integer code c[j] per weight define the weight the network uses:

        w_q[j] = v[c[j]]

    Gradients: the exact level gradient is dL/dv_k = sum of dL/dw_q[j] over the weights with
    c[j] = k (a gather's gradient); `level_gradient="sum"` hands the optimizer exactly that.
    The default, "mean", divides it by the number of members (ours): a level then moves at
    the pace of its average member. With the sum and SGD at the weights' learning rate, a level
    of a few hundred members moved a few hundred weight-steps per step, and the CIFAR-10
    ResNet-20 checkpoint at W2A8 fell from 52% to 12% top-1 within 30 steps (with the mean it
    rises). The layer's kernel, the float proxy, receives dL/dw_q unchanged.

    Paper: Hoang, Do, Nguyen, Cheung, "Direct Quantization for Training Highly Accurate Low
    Bit-width Deep Neural Networks", IJCAI 2020, arXiv 2012.13762. Only its abstract was
    available: learnable levels, exact level gradients and the direct code update are the
    paper's; the rules marked "ours" are kquant's reading.

    Direct code update, after each optimizer step (`DirectLevelsUpdate`, which this quantizer
    asks `fit` for through `training_callbacks`, calls `update`): the proxy after the step, w~ = v[c] - lr * dL/dw_q, is moved with its level
    (w~ += v_new[c] - v_old[c]) and each code is set to the nearest new level,
    c[j] = argmin_k |w~[j] - v_k|. Small steps (ours): with `accumulate` (default) a proxy
    keeps its accumulated steps while its code is unchanged and is reset to its new level when
    the code flips, so it never drifts more than half a level gap from the weight in use, and
    steps smaller than that gap still add up; without `accumulate` the proxy is reset to w_q
    after every step (the literal direct update, where steps below half a gap are lost).

    Export (ours): the levels used are snapped to a per-channel int8 grid, step s =
    max|v| / 127, with a straight-through rounding (so the level gradient stays the sum
    above), and kept at least one grid step apart; the TFLite model then holds exactly these
    levels, at most 2^b int8 values per channel. Levels start from k-means (Lloyd's algorithm
    from quantiles) or quantiles of the kernel at `initialize` (`kquant.quantize_model` calls
    it with the float weights). `symmetric` keeps v = -reverse(v). Dense kernels always share
    one level vector (see `LowBitWeightQuantizer`; per-channel recipes compute Dense layers
    as 1x1 convolutions, which have one per unit). The number of levels is fixed when the
    model is built, so callbacks cannot change this quantizer's bit-width.

    Args:
        bits: bit-width b, 1 to 8 (2^b levels; 255 at 8 bits).
        per_channel: one level vector per output channel instead of per layer.
        symmetric: levels symmetric around zero.
        initialization: "kmeans" or "quantiles".
        accumulate: keep sub-gap proxy steps until a code flips (see above).
        level_gradient: "mean" or "sum" of the members' gradients (see above).

    Raises:
        ValueError: for an unknown `initialization` or `level_gradient`.
    """

    variable_bits = False

    def fold_refusal(self):
        return "its codes index levels of the raw kernel, which its update rewrites"

    def __init__(self, bits, per_channel=False, symmetric=False, initialization="kmeans",
                 accumulate=True, level_gradient="mean"):
        super().__init__(bits, per_channel)
        for argument, value, allowed in (("initialization", initialization, INITIALIZATIONS),
                                         ("level_gradient", level_gradient, LEVEL_GRADIENTS)):
            if value not in allowed:
                raise ValueError(f"DirectLevelsWeightQuantizer: {argument} must be one of "
                                 f"{list(allowed)}, got {value!r}.")
        self.level_gradient = level_gradient
        self.symmetric = bool(symmetric)
        self.initialization = initialization
        self.accumulate = bool(accumulate)

    @property
    def levels_per_vector(self):
        return level_count(self.deploy_bits)

    def level_count(self, weights):
        return self.levels_per_vector

    def training_callbacks(self):
        return [DirectLevelsUpdate()]

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        channels = self._channels_last_shape(tensor_shape)[-1]
        vectors = channels if self.channelwise else 1
        spaced = np.linspace(-1.0, 1.0, self.levels_per_vector, dtype=np.float32)
        weights["levels"] = layer.add_weight(
            f"{name}_levels", shape=(vectors, self.levels_per_vector), dtype=tf.float32,
            trainable=True, initializer=keras.initializers.Constant(np.tile(spaced, (vectors, 1))))
        weights["levels_before_step"] = layer.add_weight(
            f"{name}_levels_before_step", shape=(vectors, self.levels_per_vector),
            dtype=tf.float32, trainable=False, initializer=keras.initializers.Constant(
                np.tile(spaced, (vectors, 1))))
        weights["codes"] = layer.add_weight(
            f"{name}_codes", shape=self._channels_last_shape(tensor_shape), dtype=tf.int32,
            trainable=False, initializer="zeros")
        return weights

    # --- the levels in use and their int8 grid ---

    def _grid_step(self, levels):
        return tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(levels), axis=1), 1e-12) / 127.0)

    def _levels_on_grid(self, levels):
        """(levels snapped to the int8 grid, straight-through; int8 values; step per vector)."""
        step = self._grid_step(levels)
        integers = round_ste(levels / step[:, None])
        return integers * step[:, None], integers, step

    def _gather(self, table, codes):
        """table[vector of channel, codes] for every weight, in the channels-last view."""
        flat = tf.reshape(codes, [-1, codes.shape[-1]])  # [weights per channel, channels]
        vectors = table.shape[0]
        if vectors == 1:
            values = tf.gather(table[0], flat)
        else:
            values = tf.transpose(tf.gather(table, tf.transpose(flat), batch_dims=1))
        return tf.reshape(values, codes.shape)

    def codes_and_step(self, w, weights):
        """Returns (int8 values in [-127, 127], step per channel) with w_q = values * step."""
        _, integers, step = self._levels_on_grid(weights["levels"])
        values = self._gather(integers, weights["codes"])
        channels = values.shape[-1]
        return values, tf.broadcast_to(step, [channels]) if step.shape[0] == 1 else step

    def _scaled_gradient(self, levels, codes):
        """`levels` unchanged forward; backward, the sum over members divided by their count."""
        if self.level_gradient == "sum" or in_export_mode():
            return levels
        flat = tf.reshape(codes, [-1, codes.shape[-1]])
        flat = tf.reshape(flat, [1, -1]) if levels.shape[0] == 1 else tf.transpose(flat)
        counts = tf.reduce_sum(tf.one_hot(flat, levels.shape[1]), axis=1)  # [vectors, levels]
        scale = 1.0 / tf.maximum(counts, 1.0)
        return levels * scale + tf.stop_gradient(levels * (1.0 - scale))

    def quantize(self, w, weights):
        levels = self._scaled_gradient(weights["levels"], weights["codes"])
        snapped, _, step = self._levels_on_grid(levels)
        proxy = self._channels_last(w)
        w_q = self._gather(snapped, weights["codes"])
        w_q += proxy - tf.stop_gradient(proxy)  # the proxy receives dL/dw_q
        return self._int8_grid(w_q, step, w.shape)

    # --- state changes outside the gradient step ---

    def _project(self, levels):
        """Sorted, distinct on the int8 grid (one step apart), |v| <= 127 steps, symmetric if asked."""
        step = tf.maximum(tf.reduce_max(tf.abs(levels), axis=1, keepdims=True), 1e-12) / 127.0
        m = tf.sort(levels / step, axis=1)
        count = self.levels_per_vector
        if self.symmetric:
            upper = (m[:, count // 2 + count % 2:] - tf.reverse(m[:, :count // 2], [1])) / 2.0
            upper = _spread(upper, 1.0, 127.0)
            middle = tf.zeros_like(m[:, :count % 2])
            m = tf.concat([-tf.reverse(upper, [1]), middle, upper], axis=1)
        else:
            m = _spread(m, -127.0, 127.0)
        return m * step

    def _nearest(self, proxy, levels):
        """Index of the nearest snapped level for every proxy weight (channels-last view)."""
        snapped = self._levels_on_grid(levels)[0]
        flat = tf.reshape(proxy, [-1, proxy.shape[-1]])  # [n, channels]
        table = tf.broadcast_to(snapped, [proxy.shape[-1], snapped.shape[1]])  # [channels, K]
        distance = tf.abs(flat[:, :, None] - table[None, :, :])
        return tf.reshape(tf.argmin(distance, axis=-1, output_type=tf.int32), proxy.shape)

    def update(self, kernel, weights):
        """The direct update after an optimizer step: levels projected, proxies moved, codes reset.

        Args:
            kernel: the layer's kernel variable (the float proxy).
            weights: this quantizer's variables (from `build`).
        """
        levels = self._project(weights["levels"])
        weights["levels"].assign(levels)
        codes = weights["codes"]
        old = self._levels_on_grid(weights["levels_before_step"])[0]
        new = self._levels_on_grid(levels)[0]
        proxy = (self._channels_last(kernel) + self._gather(new, codes)
                 - self._gather(old, codes))
        new_codes = self._nearest(proxy, levels)
        in_use = self._gather(new, new_codes)
        keep = tf.equal(new_codes, codes) if self.accumulate else tf.zeros_like(codes, tf.bool)
        kernel.assign(tf.reshape(tf.where(keep, proxy, in_use), kernel.shape))
        codes.assign(new_codes)
        weights["levels_before_step"].assign(levels)

    def initialize(self, weights, kernel):
        """Starts the levels from the kernel's values (k-means or quantiles) and sets the codes.

        Args:
            weights: this quantizer's variables.
            kernel: the layer's kernel variable, holding the pretrained float weights.

        Returns:
            None.
        """
        values = self._channels_last(tf.convert_to_tensor(kernel)).numpy()
        groups = values.reshape(-1, values.shape[-1]).T  # [channels, n]
        if weights["levels"].shape[0] == 1:
            groups = groups.reshape(1, -1)
        if self.symmetric:
            groups = np.concatenate([groups, -groups], axis=1)
        fit = _kmeans if self.initialization == "kmeans" else _quantiles
        levels = self._project(tf.constant(fit(groups, self.levels_per_vector), tf.float32))
        weights["levels"].assign(levels)
        weights["levels_before_step"].assign(levels)
        codes = self._nearest(self._channels_last(tf.convert_to_tensor(kernel)), levels)
        weights["codes"].assign(codes)
        if not self.accumulate:
            kernel.assign(tf.reshape(self._gather(self._levels_on_grid(levels)[0], codes),
                                     kernel.shape))
        return None

    def get_config(self):
        return {**super().get_config(), "symmetric": self.symmetric,
                "initialization": self.initialization, "accumulate": self.accumulate,
                "level_gradient": self.level_gradient}


class DirectLevelsUpdate(keras.callbacks.Callback):
    """Applies the direct code update of learnable-level weights after every training batch.

    Learnable-level quantizers ask for it (`training_callbacks`), and
    `kquant.techniques.prepare` adds it; with a plain `fit`, add it yourself:

        model.fit(data, callbacks=[kquant.quantizers.DirectLevelsUpdate()])

    Without it the levels still learn but no weight changes level. See
    `DirectLevelsWeightQuantizer.update` for the rule.

    Raises:
        ValueError: at the start of training, if the model has no learnable-levels quantizer.
    """

    def __init__(self):
        super().__init__()
        self._found = []
        self._update = None

    def on_train_begin(self, logs=None):
        self._found = [s for s in quantizer_states(self.model)
                       if isinstance(s.quantizer, DirectLevelsWeightQuantizer)]
        if not self._found:
            raise ValueError(f"DirectLevelsUpdate: model {self.model.name!r} has no learnable-levels "
                             "weight quantizer (Recipe(weight_quantizer='direct-levels')).")
        self._update = tf.function(self._update_all)

    def _update_all(self):
        for state in self._found:
            state.quantizer.update(state.kernel, state.variables)

    def on_train_batch_end(self, batch, logs=None):
        self._update()


def _spread(m, low, high):
    """Sorted rows of `m`, moved into [low, high] with neighbours at least 1 apart.

    A bottom-up pass lifts each value to one above its predecessor, a top-down pass lowers each
    to one below its successor (and the top to `high`); rows need at most high - low + 1 values.
    """
    rise = tf.range(m.shape[1], dtype=m.dtype)
    fall = tf.reverse(rise, [0])
    m = -_running_min(-(tf.clip_by_value(m, low, high) - rise)) + rise
    return tf.reverse(_running_min(tf.reverse(tf.minimum(m + fall, high), [1])), [1]) - fall


def _running_min(x):
    """Running minimum along axis 1."""
    return tf.transpose(tf.scan(tf.minimum, tf.transpose(x)))


def _quantiles(groups, count):
    """Per row, the (k + 0.5) / count quantiles: equal-mass levels."""
    return np.quantile(groups, (np.arange(count) + 0.5) / count, axis=1).T.astype(np.float32)


def _kmeans(groups, count, iterations=30):
    """Per row, 1-D k-means (Lloyd's algorithm) started from the quantiles."""
    centers = _quantiles(groups, count).astype(np.float64)
    for _ in range(iterations):
        nearest = np.abs(groups[:, :, None] - centers[:, None, :]).argmin(axis=2)
        for row in range(groups.shape[0]):
            sums = np.bincount(nearest[row], groups[row], minlength=count)
            counts = np.bincount(nearest[row], minlength=count)
            centers[row] = np.where(counts > 0, sums / np.maximum(counts, 1), centers[row])
    return centers.astype(np.float32)
