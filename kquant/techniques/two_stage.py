"""Two-stage quantization inside one `fit` (technique "two-stage").

Zhuang, Liu, Tan, Liu, Reid, Shen, "Effective Training of Convolutional Neural Networks with
Low-bitwidth Weights and Activations", arXiv 1908.04680 (two-stage optimization): quantized
weights with full-precision activations first, then both quantized. Only the on/off variables
change (see `kquant.precision`); the stage follows the epoch or the optimizer's step counter,
which `BackupAndRestore` restores.
"""
from typing import Optional

from kquant import precision
from kquant.techniques.base import PrecisionSchedule
from kquant.techniques.registry import register


@register
class TwoStageQuantization(PrecisionSchedule):
    """Quantized weights with full-precision (clipped) activations first, then both.

    Args:
        boundary_epoch: first epoch of the second stage; or
        boundary_step: first training step of the second stage (at most one of the two;
            with neither, the second stage starts at half of the epochs).

    Raises:
        ValueError: if both boundaries are given, or one lies outside the run.
    """

    name = "two-stage"

    def __init__(self, boundary_epoch: Optional[int] = None, boundary_step: Optional[int] = None):
        super().__init__()
        if boundary_epoch is not None and boundary_step is not None:
            raise ValueError("TwoStageQuantization: give at most one of boundary_epoch and "
                             f"boundary_step; got {boundary_epoch!r} and {boundary_step!r}.")
        self.boundary_epoch, self.boundary_step = boundary_epoch, boundary_step
        self._quantized = None

    def on_train_begin(self, logs=None):
        epochs, steps = self.params["epochs"], self.params.get("steps")
        if self.boundary_epoch is None and self.boundary_step is None:
            self.boundary_epoch = max(1, epochs // 2)
        if self.boundary_epoch is not None and not 0 < self.boundary_epoch < epochs:
            raise ValueError(f"TwoStageQuantization: boundary_epoch {self.boundary_epoch} must lie "
                             f"inside the run (1 to {epochs - 1}).")
        if self.boundary_step is not None and steps and not 0 < self.boundary_step < steps * epochs:
            raise ValueError(f"TwoStageQuantization: boundary_step {self.boundary_step} must lie "
                             f"inside the run (1 to {steps * epochs - 1}).")
        self._quantized = None

    def _set(self, quantized):
        if quantized != self._quantized:
            precision.set_enabled(self.model, quantized, role="activation", source=self.name)
            precision.set_enabled(self.model, True, role="weight", source=self.name)
            self._quantized = quantized

    def on_epoch_begin(self, epoch, logs=None):
        if self.boundary_epoch is not None:
            self._set(epoch >= self.boundary_epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.boundary_step is not None:
            self._set(int(self.model.optimizer.iterations.numpy()) >= self.boundary_step)
