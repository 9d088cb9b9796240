"""Channel-aware activation quantizer (Recipe name "channel-aware"): one clip per tensor, fit
to the mean of per-channel normalised errors."""
from kquant.backend import keras, tf
from kquant.replicas import replica_mean
from kquant.quantizers.base import ActivationQuantizer
from kquant.quantizers.rounding import steps
from kquant.serialization import serializable

STATISTICS = ("mean", "median", "trimmed_mean", "pooled")
CALIBRATION_ROWS = 16384  # rows `initialize` fits once; each training step fits 1024


def _quantized(activations, clips, bits):
    """Plain-arithmetic uniform quantization of relu(x) on [0, clip] for each candidate clip."""
    n = steps(bits)
    clips = tf.reshape(clips, [-1, 1, 1])
    return clips * tf.round(n * tf.minimum(activations[None], clips) / clips) / n


def _rows(x):
    """relu(x) as [rows, channels]."""
    return tf.nn.relu(tf.reshape(tf.cast(x, tf.float32), [-1, tf.shape(x)[-1]]))


def _sample_rows(rows, max_rows):
    """`max_rows` rows drawn uniformly at random over the batch and all positions, or every
    row when there are no more.

    A fixed stride would alias with the map's width: at batch 128 on 32x32 maps every
    (rows // 1024)-th row lies in column 0, the border computed from zero padding. The draw is
    seeded by the batch itself (stateless), so a run resumed from a checkpoint draws the same
    rows as an uninterrupted one.
    """
    count = tf.shape(rows)[0]
    seed = tf.stack([count, tf.bitcast(tf.reduce_sum(rows), tf.int32)])
    chosen = tf.random.stateless_uniform([max_rows], seed, 0, tf.maximum(count, 1), dtype=tf.int32)
    return tf.cond(count <= max_rows, lambda: rows, lambda: tf.gather(rows, chosen))


def _error_and_energy(x, clip, bits):
    """Per channel of a = relu(x): (||a_c - Q(a_c)||^2, ||a_c||^2), each of shape [C]."""
    a = _rows(x)
    quantized = _quantized(a, tf.constant([clip], tf.float32), bits)[0]
    return tf.reduce_sum(tf.square(a - quantized), axis=0), tf.reduce_sum(tf.square(a), axis=0)


def channel_errors(x, clip, bits):
    """Per-channel normalised error ||a_c - Q(a_c)||^2 / ||a_c||^2 of a = relu(x), shape [C].

    Channels that are zero everywhere get error 0.
    """
    error, energy = _error_and_energy(x, clip, bits)
    return error / tf.maximum(energy, 1e-30)


def pooled_error(x, clip, bits):
    """Normalised error of the whole tensor, sum ||a - Q(a)||^2 / sum ||a||^2, a = relu(x)."""
    error, energy = _error_and_energy(x, clip, bits)
    return tf.reduce_sum(error) / tf.maximum(tf.reduce_sum(energy), 1e-30)


def _aggregate(errors, energy, statistic, trim):
    """One number per candidate from per-channel errors [K, C]; dead channels left out."""
    if statistic == "pooled":
        return tf.reduce_sum(errors, axis=1)
    alive = energy > 0.0
    normalised = errors / tf.maximum(energy, 1e-30)
    count = tf.reduce_sum(tf.cast(alive, tf.int32))
    if statistic == "mean":
        return (tf.reduce_sum(tf.where(alive, normalised, 0.0), axis=1)
                / tf.cast(tf.maximum(count, 1), tf.float32))
    ranked = tf.sort(tf.where(alive, normalised, float("inf")), axis=1)
    if statistic == "median":
        low, high = (count - 1) // 2, count // 2
        return (tf.gather(ranked, tf.maximum(low, 0), axis=1)
                + tf.gather(ranked, tf.maximum(high, 0), axis=1)) / 2.0
    cut = tf.cast(tf.floor(trim * tf.cast(count, tf.float32)), tf.int32)
    index = tf.range(tf.shape(ranked)[1])
    kept = (index >= cut) & (index < count - cut)
    return (tf.reduce_sum(tf.where(kept, ranked, 0.0), axis=1)
            / tf.cast(tf.maximum(count - 2 * cut, 1), tf.float32))


def fit_clip(x, bits, statistic="mean", trim=0.1, candidates=32, max_rows=1024):
    """The clip that minimises `statistic` of the quantization errors of a = relu(x).

    Candidates are `candidates` evenly spaced fractions of max(a) (the largest is max(a)).
    "mean", "median" and "trimmed_mean" (dropping `trim` of the channels at each end) take
    that statistic of the per-channel normalised errors ||a_c - Q(a_c)||^2 / ||a_c||^2 over the
    channels that are not all zero; "pooled" minimises the error of the whole tensor, which a
    few high-variance channels dominate.

    Args:
        x: activations (pre- or post-ReLU), channels last.
        bits: bit-width.
        statistic: one of "mean", "median", "trimmed_mean", "pooled".
        trim: fraction cut at each end by "trimmed_mean".
        candidates: number of clips tried.
        max_rows: rows (positions over the batch) drawn uniformly from `x`; all rows when
            there are no more.

    Returns:
        A scalar float tensor; 0 when `x` has no positive value.

    Raises:
        ValueError: for an unknown statistic.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"fit_clip: statistic must be one of {list(STATISTICS)}, got {statistic!r}.")
    a = _sample_rows(_rows(x), max_rows)
    clips = tf.reduce_max(a) * tf.range(1, candidates + 1, dtype=tf.float32) / candidates
    safe = tf.maximum(clips, 1e-30)
    errors = tf.reduce_sum(tf.square(a[None] - _quantized(a, safe, bits)), axis=1)  # [K, C]
    energy = tf.reduce_sum(tf.square(a), axis=0)
    return tf.gather(clips, tf.argmin(_aggregate(errors, energy, statistic, trim)))


@serializable("channel-aware")
class ChannelAwareActivationQuantizer(ActivationQuantizer):
    """Uniform activations on [0, alpha] with alpha fit to the majority of channels.

    Forward: a_q = alpha * round(n * clip(a, 0, alpha) / alpha) / n, n = 2^k - 1, one alpha per
    tensor so the model deploys as int8. Backward: 1 on [0, alpha], 0 outside
    (straight-through); alpha has no gradient.

    Paper: Hoang, Do, Nguyen, Cheung, "Direct Quantization for Training Highly Accurate Low
    Bit-width Deep Neural Networks", IJCAI 2020, arXiv 2012.13762. Only its abstract was
    available: the objective (the mean over channels of normalised errors rather than the
    pooled error a few wide channels dominate) is the paper's, the fit below is kquant's.

    Fit (kquant's): in every training step alpha moves towards the batch's
    minimiser of the mean over channels of ||a_c - Q(a_c)||^2 / ||a_c||^2 (`fit_clip`), by an
    exponential moving average, alpha <- m * alpha + (1 - m) * alpha_batch; the first batch
    sets alpha directly. "median" and "trimmed_mean" are the robust variants and "pooled"
    (the error of the whole tensor) the comparison. We fit the clip only (levels stay uniform)
    so the TFLite model holds the levels exactly; we chose the EMA over a gradient because the
    gradient version of a learned clip is PACT. Switched off, it is min(relu(a), alpha); alpha
    keeps being fit.

    Args:
        bits: bit-width k, 1 to 8.
        statistic: "mean", "median", "trimmed_mean" or "pooled".
        momentum: EMA momentum m, in [0, 1).
        initial_clip: alpha before the first fit (> 0).
        trim: fraction of channels cut at each end by "trimmed_mean".

    Raises:
        ValueError: for an unknown statistic, or momentum or initial_clip out of range.
    """

    def __init__(self, bits, statistic="mean", momentum=0.9, initial_clip=6.0, trim=0.1):
        super().__init__(bits)
        if statistic not in STATISTICS:
            raise ValueError(f"ChannelAwareActivationQuantizer: statistic must be one of "
                             f"{list(STATISTICS)}, got {statistic!r}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"ChannelAwareActivationQuantizer: momentum must be in [0, 1), got "
                             f"{momentum!r}.")
        if not initial_clip > 0:
            raise ValueError(f"ChannelAwareActivationQuantizer: initial_clip must be > 0, got "
                             f"{initial_clip!r}.")
        self.statistic = statistic
        self.momentum = float(momentum)
        self.initial_clip = float(initial_clip)
        self.trim = float(trim)

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        weights["clip"] = layer.add_weight(
            f"{name}_clip", shape=(), dtype=tf.float32, trainable=False,
            initializer=keras.initializers.Constant(self.initial_clip))
        weights["fitted"] = layer.add_weight(f"{name}_fitted", shape=(), dtype=tf.float32,
                                             trainable=False, initializer="zeros")
        return weights

    def initialize(self, weights, values):
        """Sets the clip to this quantizer's fit of the float activations `values`; training
        continues the moving average from there."""
        clip = max(float(fit_clip(values, weights["bits"], self.statistic, self.trim,
                                  max_rows=CALIBRATION_ROWS)), 1e-3)
        weights["clip"].assign(clip)
        weights["fitted"].assign(1.0)
        return clip

    def refit(self, weights):
        """The next training batch's fit sets the clip directly, as the first batch's did."""
        weights["fitted"].assign(0.0)

    def batch_update(self, x, weights):
        """Moves the clip towards this batch's fit; returns the new clip."""
        batch_clip = replica_mean(
            fit_clip(tf.stop_gradient(x), weights["bits"], self.statistic, self.trim))
        momentum = tf.where(weights["fitted"] > 0.0, self.momentum, 0.0)
        clip = weights["clip"]
        new = tf.where(batch_clip > 0.0, momentum * clip + (1.0 - momentum) * batch_clip, clip)
        with tf.control_dependencies([clip.assign(new), weights["fitted"].assign(1.0)]):
            return tf.identity(new)

    def get_config(self):
        return {**super().get_config(), "statistic": self.statistic, "momentum": self.momentum,
                "initial_clip": self.initial_clip, "trim": self.trim}
