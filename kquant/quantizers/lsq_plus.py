"""LSQ+: a learned step and a learned offset, for activations that go negative (Recipe name
"lsq+").

Paper: Bhalgat, Lee, Nagel, Blankevoort, Kwak, "LSQ+: Improving low-bit quantization through
learnable offsets and better initialization", CVPR Workshops 2020, arXiv 2004.09576.
"""
import numpy as np

from kquant.backend import keras, tf
from kquant.quantizers.base import ActivationGrid
from kquant.quantizers.lsq import LSQActivationQuantizer
from kquant.quantizers.rounding import offset_activation, offset_ranges, steps
from kquant.serialization import serializable

_INIT_SAMPLE = 1 << 16  # activations the MSE start looks at
_INIT_STEPS = 96  # candidate steps, fractions of the range


def _lowest_level(step, depth, n):
    """beta_q = s * clip(round(-depth / s), -(n - 1), 0): the offset on whole steps, so that the
    grid holds zero (TFLite's integer zero point) and at least one level above it."""
    return tf.clip_by_value(tf.round(-depth / step), 1.0 - n, 0.0) * step


def _lsq_plus_activation(x, step, depth, bits, gradient_scale):
    """`offset_activation` on LSQ+'s grid, with LSQ+'s gradients for x, the step and the depth.

    `bits` and `gradient_scale` are tensors read before (a custom gradient reads no variable).
    """
    n = steps(bits)

    @tf.custom_gradient
    def function(a, s, d):
        low = _lowest_level(s, d, n)

        def gradient(dy):
            scaled = (a - low) / s
            inside = tf.cast((scaled >= 0.0) & (scaled <= n), dy.dtype)
            dstep = tf.where(scaled > n, n, tf.where(scaled < 0.0, 0.0,
                                                     tf.round(scaled) - scaled))
            dbeta = tf.reduce_sum(dy * (1.0 - inside)) * gradient_scale
            return dy * inside, tf.reduce_sum(dy * dstep) * gradient_scale, -dbeta

        return offset_activation(a, low, s, bits), gradient

    return function(x, step, depth)


def _mse_start(values, bits):
    """(s, beta) minimizing mean (a - a_q)^2 over the activations `values`: steps from 1/96 to
    all of the range over the levels, offsets at 0, half and all of the way to the minimum."""
    n = 2 ** bits - 1
    a = np.asarray(values, np.float32).reshape(-1)
    if a.size > _INIT_SAMPLE:
        a = np.random.default_rng(0).choice(a, _INIT_SAMPLE, replace=False)
    low, high = min(float(a.min()), 0.0), max(float(a.max()), 1e-6)
    best = None
    for s in (high - low) / n * np.arange(1, _INIT_STEPS + 1) / _INIT_STEPS:
        for m in sorted({float(np.clip(np.round(f * low / s), 1 - n, 0)) for f in (0.0, 0.5, 1.0)}):
            error = np.mean((a - s * np.clip(np.floor(a / s + 0.5), m, m + n)) ** 2)
            if best is None or error < best[0]:
                best = (error, s, m * s)
    return best[1], best[2]


@serializable("lsq+")
class LSQPlusActivationQuantizer(LSQActivationQuantizer):
    """Activations on a learned step s above a learned offset beta, replacing the activation.

    Forward, with Q_P = 2^b - 1 and beta_q = s * round(beta / s) kept in [-(Q_P - 1) s, 0]:

        a_q = s * round(clip((a - beta_q) / s, 0, Q_P)) + beta_q

    Backward (the paper's, with a_s = (a - beta_q) / s): da_q/da = 1 for 0 <= a_s <= Q_P, 0
    outside; da_q/ds = round(a_s) - a_s inside, 0 below and Q_P above; da_q/dbeta = 0 inside
    and 1 outside (the rounding of beta is straight-through); both times LSQ's gradient scale
    g = 1 / sqrt(N * Q_P), N the activations of one example in the layer. Start: LSQ+'s MSE
    initialization, s and beta minimizing the squared error on the float model's activations
    (`initialize`, from `kquant.calibrate_ranges`; a grid search). Switched off:
    clip(a, beta_q, beta_q + Q_P s).

    It replaces the activation it stands for (`replaces_activation`): `kquant.quantize_model`
    makes the layer linear, so the grid sees the pre-activation and a negative offset keeps
    levels below zero where the loss wants them (the paper's case: Swish-like activations;
    on a ReLU the MSE start is beta = 0, LSQ's grid, and training may move it down).

    kquant's choices, for TFLite: beta lies on whole steps (an int8 tensor's zero point is an
    integer, so only then does the grid hold zero exactly), at or below zero and above
    -Q_P s (every grid holds zero and a level above it: 1-bit LSQ+ is LSQ). The variable is
    the depth -beta >= 0. The export requantizes onto the step with int8's saturation at -128
    as beta_q, then clips the top with an ADD and a SUB of one step
    (`rounding.offset_activation`): two extra int8 ops per activation that XNNPACK takes, and
    no input shift, so a residual Add feeds the grid directly. After a bit-width change
    `refit` restarts it as LSQ's grid (beta = 0) fit to the next batch.

    Args:
        bits: bit-width b, 1 to 8.
        initial_clip: the top level s * Q_P before any calibration (beta 0), > 0.

    Raises:
        ValueError: for initial_clip <= 0.
    """

    replaces_activation = True
    clamps_at_zero = False

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        weights["depth"] = layer.add_weight(
            f"{name}_depth", shape=(), dtype=tf.float32, trainable=True, initializer="zeros",
            constraint=keras.constraints.NonNeg())
        return weights

    def _grid(self, weights):
        """(step, lowest level, top level) as float32 tensors, as the graph computes them."""
        step = self._step(weights)
        n = steps(weights["bits"])
        low = _lowest_level(step, weights["depth"], n)
        return step, low, low + n * step

    def clip(self, weights):
        """The top level beta_q + Q_P s."""
        return self._grid(weights)[2]

    def assign_clip(self, weights, clip):
        """LSQ's grid with its top at `clip` (beta = 0)."""
        return tf.group(weights["step"].assign(clip / steps(weights["bits"])),
                        weights["depth"].assign(0.0))

    def batch_update(self, x, weights):
        # The re-fit of `LearnedRangeActivationQuantizer` on what a ReLU would pass.
        return super().batch_update(tf.nn.relu(x), weights)

    def initialize(self, weights, values):
        """s and beta := LSQ+'s MSE start on the float activations `values`; returns the top
        level."""
        step, beta = _mse_start(values, self.deploy_bits)
        weights["step"].assign(step)
        weights["depth"].assign(-beta)
        return float(self.clip(weights))

    def quantize(self, x, weights):
        bits = tf.identity(weights["bits"])
        gradient_scale = tf.math.rsqrt(float(self._per_step) * steps(bits))
        return _lsq_plus_activation(x, self._step(weights), tf.identity(weights["depth"]), bits,
                                    gradient_scale)

    def bypass(self, x, weights):
        _, low, top = self._grid(weights)
        return tf.clip_by_value(x, low, top)

    def requantization_range(self, weights):
        """[beta_q, beta_q + 255 s]: the int8 step is s and -128 is beta_q."""
        grid, _ = self._ranges(weights)
        return grid

    def relabel(self, weights):
        """ADD s onto the range whose 127 is the top level plus s, SUB s back onto the grid."""
        grid, lifted = self._ranges(weights)
        step = float(self._step(weights).numpy())
        return [(step, False, lifted), (step, True, grid)]

    def _ranges(self, weights):
        step, low, _ = self._grid(weights)
        return tuple(tuple(float(t.numpy()) for t in pair)
                     for pair in offset_ranges(low, step, weights["bits"]))

    def activation_grid(self, weights):
        step, low, top = (float(t) for t in self._grid(weights))
        return ActivationGrid(step=step, low=low, high=top,
                              levels=int(steps(weights["bits"])) + 1)
