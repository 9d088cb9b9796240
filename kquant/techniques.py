"""Techniques by name, so examples and benchmarks assemble them the same way.

Names (joined with "+" to combine): "two-stage", "progressive-bits", "stochastic-precision",
"joint-distillation". The first three are callbacks (`precision_callbacks`); joint
distillation wraps the model (`kquant.training.JointDistillation`).
"""
from kquant.backend import keras
from kquant.callbacks import (DirectLevelsUpdate, ProgressiveBitWidth, StochasticPrecision,
                              TwoStageQuantization)
from kquant.callbacks.direct_levels import direct_levels_quantizers
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


def prepare(model, techniques, epochs, steps_per_epoch, learning_rate, float_model=None,
            extra_students=(), temperature=1.0, stage_boundary_epoch=None,
            initial_probability=0.25, seed=0):
    """Compiles what `fit` should train for `techniques`, and the callbacks they need.

    Models with learnable weight levels also get `DirectLevelsUpdate`. Without joint
    distillation the model itself is compiled (SGD, cosine schedule). With it,
    a `JointDistillation` of a float teacher (from `float_model`, see `teacher_for`), `model`
    and `extra_students` is compiled, each network with its own optimizer; `model` stays the one
    to evaluate and export.

    Args:
        model: the kquant model to train.
        techniques: names from `parse_techniques`.
        epochs, steps_per_epoch, learning_rate: the training schedule.
        float_model: the float model the teacher starts from (joint distillation only).
        extra_students: further kquant models trained beside `model` by joint distillation.
        temperature, stage_boundary_epoch, initial_probability, seed: technique settings.

    Returns:
        (model to pass to `fit`, list of callbacks).

    Raises:
        ValueError: if joint distillation is asked for without a float model.
    """
    from kquant.compile import compile_classifier, cosine_sgd
    from kquant.training import JointDistillation

    callbacks = precision_callbacks(techniques, epochs, *_final_bits(model),
                                    stage_boundary_epoch, initial_probability, seed)
    if direct_levels_quantizers(model) or any(direct_levels_quantizers(s) for s in extra_students):
        callbacks.append(DirectLevelsUpdate())
    if "joint-distillation" not in techniques:
        return compile_classifier(model, learning_rate, epochs, steps_per_epoch), callbacks
    if float_model is None:
        raise ValueError("prepare: joint-distillation needs the float model its teacher starts from.")
    trainable = JointDistillation(teacher_for(model, float_model), [model, *extra_students],
                                  temperature=temperature)
    optimizers = [cosine_sgd(learning_rate, epochs, steps_per_epoch)
                  for _ in range(len(extra_students) + 2)]
    trainable.compile(optimizers[0], optimizers[1:])
    return trainable, callbacks


def teacher_for(student, float_model):
    """The float teacher of joint distillation for `student`.

    Students with DoReFa's fixed [0, 1] activations get a teacher clipped to the same range
    (METHODS.md 1d); students that learn their clips (PACT) get the float model unchanged, since
    no single clip matches theirs and clipping a ReLU-trained model to 1 costs it most of its
    accuracy (ResNet-20 CIFAR-10: 82% -> 20%).
    """
    from kquant.precision import quantizer_states
    from kquant.quantizers import ClippedActivationQuantizer
    from kquant.training import clipped_teacher

    activations = [s.quantizer for s in quantizer_states(student) if s.role == "activation"]
    if activations and all(isinstance(q, ClippedActivationQuantizer) for q in activations):
        return clipped_teacher(float_model)
    teacher = keras.models.clone_model(float_model)
    teacher.set_weights(float_model.get_weights())
    return teacher


def _final_bits(model):
    """(weight bits, activation bits) a model is configured to end at: its lowest of each."""
    from kquant.precision import quantizer_states

    states = quantizer_states(model)
    return tuple(min((s.quantizer.bits for s in states if s.role == role), default=8)
                 for role in ("weight", "activation"))
