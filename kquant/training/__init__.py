"""Techniques with their own train_step: joint knowledge distillation."""
from kquant.training.distillation import JointDistillation, clipped_teacher

__all__ = ["JointDistillation", "clipped_teacher"]
