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

    kquant's defaults (the paper leaves them open): the fully quantized stage, the one that is
    deployed, gets `final_share` = 3/4 of the epochs; the learning-rate cosine starts again
    at the boundary (through `kquant.techniques.prepare`), so the second stage is not trained
    on the tail of one cosine; and the activation clips are fit again to the first batch of
    the second stage (`kquant.precision.refit`), since they were fit to float activations.
    The optimizer state is kept.

    Args:
        boundary_epoch: first epoch of the second stage; or
        boundary_step: first training step of the second stage (at most one of the two).
        final_share: with neither boundary, the share of the epochs the second stage gets.
        restart_learning_rate: restart the cosine at the boundary.
        refit_clips: fit the activation clips again when the activations are switched on.

    Raises:
        ValueError: if both boundaries are given, final_share is outside (0, 1), or a boundary
            lies outside the run.
    """

    name = "two-stage"

    def __init__(self, boundary_epoch: Optional[int] = None, boundary_step: Optional[int] = None,
                 final_share: float = 0.75, restart_learning_rate: bool = True,
                 refit_clips: bool = True):
        super().__init__()
        if boundary_epoch is not None and boundary_step is not None:
            raise ValueError("TwoStageQuantization: give at most one of boundary_epoch and "
                             f"boundary_step; got {boundary_epoch!r} and {boundary_step!r}.")
        if not 0 < final_share < 1:
            raise ValueError(f"TwoStageQuantization: final_share must be in (0, 1), got "
                             f"{final_share!r}.")
        self.boundary_epoch, self.boundary_step = boundary_epoch, boundary_step
        self.final_share = float(final_share)
        self.restart_learning_rate, self.refit_clips = restart_learning_rate, refit_clips
        self._epoch, self._quantized = None, None

    def first_quantized_epoch(self, epochs):
        """The epoch the second stage starts at (with an epoch boundary)."""
        if self.boundary_epoch is not None:
            return self.boundary_epoch
        return epochs - max(1, min(epochs - 1, round(self.final_share * epochs)))

    def learning_rate_restarts(self, model, schedule):
        if not self.restart_learning_rate:
            return []
        if self.boundary_step is not None:
            return [self.boundary_step]
        return [self.first_quantized_epoch(schedule.epochs) * schedule.steps_per_epoch]

    def on_train_begin(self, logs=None):
        epochs, steps = self.params["epochs"], self.params.get("steps")
        if self.boundary_step is None:
            self._epoch = self.first_quantized_epoch(epochs)
            if not 0 < self._epoch < epochs:
                raise ValueError(f"TwoStageQuantization: the second stage must start inside the "
                                 f"run (epoch 1 to {epochs - 1}); got epoch {self._epoch}.")
        if self.boundary_step is not None and steps and not 0 < self.boundary_step < steps * epochs:
            raise ValueError(f"TwoStageQuantization: boundary_step {self.boundary_step} must lie "
                             f"inside the run (1 to {steps * epochs - 1}).")
        self._quantized = None

    def _set(self, quantized, at_boundary, epoch_steps=None):
        if quantized != self._quantized:
            precision.set_enabled(self.model, quantized, role="activation", source=self.name)
            precision.set_enabled(self.model, True, role="weight", source=self.name)
            self._quantized = quantized
        if self.refit_clips and at_boundary:  # also when a run resumes at the boundary
            precision.refit(self.model, role="activation", epoch_steps=epoch_steps)

    def on_epoch_begin(self, epoch, logs=None):
        if self.boundary_step is None:
            self._set(epoch >= self._epoch, epoch == self._epoch, self.params.get("steps"))

    def on_train_batch_begin(self, batch, logs=None):
        if self.boundary_step is not None:
            step = int(self.model.optimizer.iterations.numpy())
            self._set(step >= self.boundary_step, step == self.boundary_step)
