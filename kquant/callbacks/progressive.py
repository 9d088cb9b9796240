"""Progressive quantization inside one `fit` (Zhuang et al., arXiv 1908.04680, sections 1a-1b).

Both techniques only change precision variables between steps (see `kquant.precision`): no
model is rebuilt and nothing recompiles. The stage is computed from the optimizer's step
counter and the epoch, which `BackupAndRestore` and checkpoints restore, so an interrupted run
resumes in the stage of the epoch it resumes at.
"""
from typing import Mapping, Optional, Sequence, Union

from kquant import precision
from kquant.backend import keras
from kquant.quantizers.base import MAX_BITS, MIN_BITS

FLOAT = 32  # a "bit-width" meaning: quantizer switched off (full precision, activations clipped)

Schedule = Union[Sequence[int], Mapping[int, int]]


def _check_bits_list(name, values):
    for bits in values:
        if bits != FLOAT and not (isinstance(bits, int) and MIN_BITS <= bits <= MAX_BITS):
            raise ValueError(f"ProgressiveBitWidth: {name} holds {bits!r}; allowed are integers "
                             f"{MIN_BITS}-{MAX_BITS} and {FLOAT} (full precision).")


def stage_starts(schedule: Schedule, epochs: int, name: str = "schedule"):
    """Turns a schedule into {first epoch: bits}.

    A sequence gives every stage an equal share of the epochs (earlier stages take the
    remainder); a mapping is used as it is and must start at epoch 0.

    Raises:
        ValueError: if the schedule has more stages than epochs, or epochs outside the run.
    """
    if isinstance(schedule, Mapping):
        starts = dict(sorted(schedule.items()))
        if 0 not in starts or max(starts) >= epochs:
            raise ValueError(f"ProgressiveBitWidth: {name} {dict(schedule)} must start at epoch 0 "
                             f"and start every stage before the last epoch ({epochs - 1}).")
        return starts
    stages = list(schedule)
    if not stages or len(stages) > epochs:
        raise ValueError(f"ProgressiveBitWidth: {name} {stages} has {len(stages)} stages but fit "
                         f"runs {epochs} epochs; give at most one stage per epoch.")
    share, extra = divmod(epochs, len(stages))
    starts, epoch = {}, 0
    for i, bits in enumerate(stages):
        starts[epoch] = bits
        epoch += share + (1 if i < extra else 0)
    return starts


class ProgressiveBitWidth(keras.callbacks.Callback):
    """Trains at a decreasing sequence of bit-widths in one `fit`, e.g. 32 -> 8 -> 4 -> 2.

    Each stage starts from the weights the previous stage ended with (METHODS.md 1b). Bits of 32
    switch the quantizers off: weights in float, activations clipped but not rounded. Only the
    quantizers configured at the schedule's final bit-width are scheduled, so layers kept at
    other precisions (the 8-bit first and last layers) stay as they are.

    Args:
        weight_schedule: a sequence of bit-widths (equal shares of the epochs) or a mapping
            {first epoch: bits}; None leaves weights alone.
        activation_schedule: the same for activations.
        allow_increase: allow a schedule whose bit-width goes up.

    Raises:
        ValueError: for bits outside 1-8 and 32, a rising schedule without `allow_increase`,
            or (when `fit` starts) a schedule that does not fit its epochs.
    """

    def __init__(self, weight_schedule: Optional[Schedule] = None,
                 activation_schedule: Optional[Schedule] = None, allow_increase: bool = False):
        super().__init__()
        self.schedules = {"weight": weight_schedule, "activation": activation_schedule}
        for role, schedule in self.schedules.items():
            if schedule is None:
                continue
            values = list(dict(sorted(schedule.items())).values()) if isinstance(schedule, Mapping) \
                else list(schedule)
            _check_bits_list(f"{role}_schedule", values)
            if not allow_increase and any(b > a for a, b in zip(values, values[1:])):
                raise ValueError(f"ProgressiveBitWidth: {role}_schedule {values} goes up; "
                                 "pass allow_increase=True if that is intended.")
        self._starts = {}

    def on_train_begin(self, logs=None):
        epochs = self.params["epochs"]
        self._starts = {role: stage_starts(schedule, epochs, f"{role}_schedule")
                        for role, schedule in self.schedules.items() if schedule is not None}
        states = precision.quantizer_states(self.model)
        for role, starts in self._starts.items():
            target = list(starts.values())[-1]
            if not any(s.role == role and s.quantizer.bits == target for s in states):
                configured = sorted({s.quantizer.bits for s in states if s.role == role})
                raise ValueError(f"ProgressiveBitWidth: the {role}_schedule ends at {target} bits, "
                                 f"but no {role} quantizer is configured at {target} bits (the "
                                 f"model has {configured}); quantize the model at the final bits.")

    def bits_at(self, epoch):
        """{role: bits} in force at an epoch."""
        return {role: [bits for start, bits in starts.items() if start <= epoch][-1]
                for role, starts in self._starts.items()}

    def on_epoch_begin(self, epoch, logs=None):
        for role, bits in self.bits_at(epoch).items():
            target = list(self._starts[role].values())[-1]
            states = [s for s in precision.quantizer_states(self.model)
                      if s.role == role and s.quantizer.bits == target]
            precision.assign(states, bits=None if bits == FLOAT else bits, enabled=bits != FLOAT)


class TwoStageQuantization(keras.callbacks.Callback):
    """Quantized weights with full-precision (clipped) activations first, then both (METHODS 1a).

    Args:
        boundary_epoch: first epoch of the second stage; or
        boundary_step: first training step of the second stage (exactly one of the two).

    Raises:
        ValueError: unless exactly one boundary is given, or if it lies outside the run.
    """

    def __init__(self, boundary_epoch: Optional[int] = None, boundary_step: Optional[int] = None):
        super().__init__()
        if (boundary_epoch is None) == (boundary_step is None):
            raise ValueError("TwoStageQuantization: give exactly one of boundary_epoch and "
                             f"boundary_step; got {boundary_epoch!r} and {boundary_step!r}.")
        self.boundary_epoch, self.boundary_step = boundary_epoch, boundary_step
        self._quantized = None

    def on_train_begin(self, logs=None):
        epochs, steps = self.params["epochs"], self.params.get("steps")
        if self.boundary_epoch is not None and not 0 < self.boundary_epoch < epochs:
            raise ValueError(f"TwoStageQuantization: boundary_epoch {self.boundary_epoch} must lie "
                             f"inside the run (1 to {epochs - 1}).")
        if self.boundary_step is not None and steps and not 0 < self.boundary_step < steps * epochs:
            raise ValueError(f"TwoStageQuantization: boundary_step {self.boundary_step} must lie "
                             f"inside the run (1 to {steps * epochs - 1}).")
        self._quantized = None

    def _set(self, quantized):
        if quantized != self._quantized:
            precision.set_enabled(self.model, quantized, role="activation")
            precision.set_enabled(self.model, True, role="weight")
            self._quantized = quantized

    def on_epoch_begin(self, epoch, logs=None):
        if self.boundary_epoch is not None:
            self._set(epoch >= self.boundary_epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.boundary_step is not None:
            self._set(int(self.model.optimizer.iterations.numpy()) >= self.boundary_step)
