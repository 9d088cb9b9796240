"""Training techniques, one module each, behind the protocol in `base` and the registry.

    training = kquant.techniques.prepare(model, "two-stage+stochastic-precision", context)
    training.model.fit(data, epochs=..., callbacks=training.callbacks)

Names (join with '+'): see `names()`. Callback techniques also work on their own in `fit`.
"""
from kquant.techniques.auxiliary_module import AuxiliaryModule, auxiliary_trainer
from kquant.techniques.base import Context, PrecisionSchedule, Schedule, Technique, Training
from kquant.techniques.cotraining import CoTraining
from kquant.techniques.ctmq import CyclicMultiStep, MultiStepChain, Phase
from kquant.techniques.joint_distillation import (JointDistillation, JointDistillationTechnique,
                                                  clipped_teacher, teacher_for)
from kquant.techniques.progressive import ProgressiveBitWidth, decreasing_schedule
from kquant.techniques.registry import names, options_of, parse, prepare, register
from kquant.techniques.stochastic_precision import StochasticPrecision
from kquant.techniques.tsq import TwoStepQuantization, TwoStepQuantizationFinetune
from kquant.techniques.two_stage import TwoStageQuantization

__all__ = ["AuxiliaryModule", "CoTraining", "Context", "CyclicMultiStep", "JointDistillation",
           "JointDistillationTechnique", "MultiStepChain", "Phase", "PrecisionSchedule",
           "ProgressiveBitWidth", "Schedule", "StochasticPrecision", "Technique", "Training",
           "TwoStageQuantization", "TwoStepQuantization", "TwoStepQuantizationFinetune",
           "auxiliary_trainer", "clipped_teacher", "decreasing_schedule", "names", "options_of",
           "parse", "prepare", "register", "teacher_for"]
