"""Techniques by name, so examples and benchmarks assemble them the same way.

Names (joined with "+" to combine): "two-stage", "progressive-bits", "stochastic-precision",
"joint-distillation". The first three are callbacks (`precision_callbacks`); joint
distillation wraps the model (`kquant.training.JointDistillation`).
"""
from kquant.callbacks import ProgressiveBitWidth, StochasticPrecision, TwoStageQuantization
from kquant.callbacks.progressive import FLOAT

TECHNIQUES = ("two-stage", "progressive-bits", "stochastic-precision", "joint-distillation")


def parse_techniques(spec):
    """Turns "none" or "a+b" into a list of technique names.

    Raises:
        ValueError: for unknown names.
    """
    names = [] if spec in ("", "none") else spec.split("+")
    unknown = [n for n in names if n not in TECHNIQUES]
    if unknown:
        raise ValueError(f"Unknown technique(s) {unknown}; choose from {list(TECHNIQUES)} joined "
                         "with '+', or 'none'.")
    return names


def decreasing_schedule(target_bits):
    """The paper's 32 -> 8 -> 4 -> 2 sequence, cut at the target: e.g. [32, 8, 4] for 4 bits."""
    return [b for b in (FLOAT, 8, 4, 2) if b > target_bits] + [target_bits]


def precision_callbacks(techniques, epochs, weight_bits, activation_bits, stage_boundary_epoch=None,
                        initial_probability=0.25, seed=0):
    """The callbacks that carry the precision techniques among `techniques`.

    Args:
        techniques: names from `parse_techniques`.
        epochs: epochs of the coming `fit` (two-stage defaults its boundary to half of them).
        weight_bits, activation_bits: the final bit-widths.
        stage_boundary_epoch: first epoch of two-stage's second stage.
        initial_probability: stochastic precision's p0.
        seed: stochastic precision's seed.

    Returns:
        A list of Keras callbacks.
    """
    callbacks = []
    if "two-stage" in techniques:
        callbacks.append(TwoStageQuantization(boundary_epoch=stage_boundary_epoch or max(1, epochs // 2)))
    if "progressive-bits" in techniques:
        callbacks.append(ProgressiveBitWidth(decreasing_schedule(weight_bits),
                                             decreasing_schedule(activation_bits)))
    if "stochastic-precision" in techniques:
        callbacks.append(StochasticPrecision(initial_probability=initial_probability, seed=seed))
    return callbacks
