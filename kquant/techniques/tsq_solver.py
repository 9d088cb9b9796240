"""TSQ's step 2: ternary weights of one layer by alternating least squares (NumPy).

Wang, Hu, Zhang, Zhang, Liu, Cheng, "Two-Step Quantization for Low-bit Neural Networks",
CVPR 2018, section 4 (transformation learning). For one layer, with X [d, N] its inputs (d the
fan-in, N sampled positions) as the already quantized earlier layers produce them, Y [N, C] the
codes the step-1 network's activation quantizer f gives at this layer, and an affine map
(scale s, shift t per channel; the batch norm that follows the layer, identity without one):

    min_{Z, alpha, W}  ||Y - f(Z)||^2 + lambda * ||Z - (s * alpha * W^T X + t)||^2,
    W in {-1, 0, 1}^{d x C}, alpha > 0 per output channel.

Alternation: Z in closed form per element (f is piecewise constant: the best z in each level's
interval, the cheapest of those); alpha = b^T w / (w^T A w) per channel with A = X X^T and
b = X u, u = (z - t) / s; W by one Gauss-Seidel sweep of coordinate-wise ternary updates. Every
step minimises the objective over its block, so for a fixed lambda the objective never
increases; lambda grows between rounds as the paper allows.
"""
import dataclasses
from typing import List, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class StepFunction:
    """f(z) = levels[k] for thresholds[k - 1] < z <= thresholds[k] (thresholds[-1] = -inf,
    thresholds[len] = +inf): a quantizer's forward as a piecewise constant function.

    Attributes:
        thresholds: increasing, one fewer than the levels.
        levels: the outputs.
    """

    thresholds: Sequence[float]
    levels: Sequence[float]

    def __call__(self, z):
        return np.asarray(self.levels)[np.searchsorted(self.thresholds, z, side="left")]

    def best_inputs(self, y, v, lam):
        """argmin_z (y - f(z))^2 + lam * (z - v)^2, elementwise."""
        edges = [-np.inf, *self.thresholds, np.inf]
        best, best_cost = None, None
        for k, level in enumerate(self.levels):
            # the interval (edges[k], edges[k + 1]]; nudged inside its open lower end
            low = np.nextafter(edges[k], np.inf) if np.isfinite(edges[k]) else edges[k]
            z = np.clip(v, low, edges[k + 1])
            cost = (y - level) ** 2 + lam * (z - v) ** 2
            if best is None:
                best, best_cost = z, cost
            else:
                better = cost < best_cost
                best, best_cost = np.where(better, z, best), np.where(better, cost, best_cost)
        return best


@dataclasses.dataclass
class Solution:
    """What `solve_ternary` returns.

    Attributes:
        ternary: W, [d, C] in {-1, 0, 1}: of the start and every alternation, the one whose
            codes f(s * alpha * W^T X + t) are closest to Y (the surrogate objective can go
            down while the codes get worse).
        alpha: its per-channel scale, [C].
        objectives: the objective after each alternation (lambda of that round).
        lambdas: lambda of each alternation.
        reconstruction: ||Y - f(s * alpha * W^T X + t)||^2 / ||Y||^2 at the ternarised start
            and for the returned W (never larger).
    """

    ternary: np.ndarray
    alpha: np.ndarray
    objectives: List[float]
    lambdas: List[float]
    reconstruction: tuple


def ternarize(w, threshold=0.7):
    """TWN's start: sign(w) where |w| > threshold * mean|w| of the channel, else 0 (w [d, C])."""
    return np.where(np.abs(w) > threshold * np.abs(w).mean(axis=0), np.sign(w), 0.0)


def _objective(f, y, z, x, ternary, alpha, scale, shift, lam):
    fitted = scale * alpha * (x.T @ ternary) + shift
    return float(np.sum((y - f(z)) ** 2) + lam * np.sum((z - fitted) ** 2))


def _sweep(ternary, alpha, gram, b):
    """One Gauss-Seidel pass of ternary coordinate updates minimising
    alpha^2 w^T A w - 2 alpha b^T w per channel (all channels at once)."""
    products = gram @ ternary  # A w, kept up to date
    diagonal = np.diag(gram)
    for j in range(ternary.shape[0]):
        others = products[j] - diagonal[j] * ternary[j]
        g = alpha * (b[j] - alpha * others)
        new = np.where(np.abs(g) > alpha ** 2 * diagonal[j] / 2, np.sign(g), 0.0)
        changed = new != ternary[j]
        if changed.any():
            products += np.outer(gram[:, j], (new - ternary[j]) * changed)
            ternary[j] = new
    return ternary


def solve_ternary(x, y, f, initial, scale=None, shift=None, lam=1.0, lam_growth=2.0, rounds=4,
                  iterations=3):
    """Ternary weights and per-channel scales for one layer (see the module docstring).

    Args:
        x: inputs [d, N].
        y: target codes [N, C].
        f: the activation quantizer as a `StepFunction`.
        initial: float weights [d, C] to start from (ternarised by `ternarize`).
        scale, shift: the affine map after the layer per channel [C] (the batch norm); None:
            1 and 0.
        lam: lambda of the first round.
        lam_growth: factor lambda grows by after each round.
        rounds: rounds of growing lambda.
        iterations: alternations (Z, alpha, W) per round.

    Returns:
        A `Solution`.

    Raises:
        ValueError: if x and y disagree in N, or there are fewer samples than the fan-in.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d, n = x.shape
    if y.shape[0] != n or initial.shape[0] != d:
        raise ValueError(f"solve_ternary: x is [{d}, {n}], y {list(y.shape)} and initial "
                         f"{list(initial.shape)}; they must be [d, N], [N, C] and [d, C].")
    if n < d:
        raise ValueError(f"solve_ternary: {n} samples for a fan-in of {d}; the least squares "
                         "need at least as many samples as inputs.")
    channels = y.shape[1]
    scale = np.ones(channels) if scale is None else np.asarray(scale, np.float64)
    shift = np.zeros(channels) if shift is None else np.asarray(shift, np.float64)
    gram = x @ x.T
    ternary = ternarize(np.asarray(initial, np.float64))
    projected = x.T @ ternary
    alpha = np.maximum(np.sum(projected * (x.T @ initial), axis=0), 1e-12) / np.maximum(
        np.sum(projected ** 2, axis=0), 1e-12)

    def reconstruction():
        fitted = f(scale * alpha * (x.T @ ternary) + shift)
        return float(np.sum((y - fitted) ** 2) / max(np.sum(y ** 2), 1e-12))

    before = reconstruction()
    best = (before, ternary.copy(), alpha.copy())
    objectives, lambdas = [], []
    # The first Z step starts from the float layer's own outputs (the step-1 network), later
    # ones from the ternary fit.
    fitted = scale * (x.T @ np.asarray(initial, np.float64)) + shift
    for _ in range(rounds):
        for _ in range(iterations):
            z = f.best_inputs(y, fitted, lam)
            u = (z - shift) / scale
            b = x @ u
            quadratic = np.sum(ternary * (gram @ ternary), axis=0)
            alpha = np.where(quadratic > 0, np.sum(b * ternary, axis=0) / np.maximum(quadratic, 1e-12),
                             alpha)
            alpha = np.maximum(alpha, 1e-12)
            ternary = _sweep(ternary, alpha, gram, b)
            fitted = scale * alpha * (x.T @ ternary) + shift
            objectives.append(_objective(f, y, z, x, ternary, alpha, scale, shift, lam))
            lambdas.append(lam)
            error = reconstruction()
            if error < best[0]:
                best = (error, ternary.copy(), alpha.copy())
        lam *= lam_growth
    return Solution(best[1], best[2], objectives, lambdas, (before, best[0]))
