"""Techniques with their own train_step: joint knowledge distillation."""
from kquant.training.distillation import JointDistillation

__all__ = ["JointDistillation"]
