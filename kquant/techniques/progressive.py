"""Progressive bit-width decrease inside one `fit` (technique "progressive-bits").

Zhuang, Liu, Tan, Liu, Reid, Shen, "Effective Training of Convolutional Neural Networks with
Low-bitwidth Weights and Activations", arXiv 1908.04680 (progressive quantization). Only
precision variables change between epochs (see `kquant.precision`): no model is rebuilt and
nothing recompiles. The stage is computed from the epoch, which `BackupAndRestore` restores,
so an interrupted run resumes in the stage of the epoch it resumes at.
"""
from typing import Mapping, Optional, Sequence, Union

from kquant import precision
from kquant.quantizers.base import MAX_BITS, MIN_BITS
from kquant.techniques.base import PrecisionSchedule
from kquant.techniques.registry import register

FLOAT = 32  # a "bit-width" meaning: quantizer switched off (full precision, activations clipped)

DECREASING = "decreasing"
Schedule = Union[str, Sequence[int], Mapping[int, int]]


def decreasing_schedule(target_bits):
    """The paper's 32 -> 8 -> 4 -> 2 sequence, cut at the target: e.g. [32, 8, 4] for 4 bits."""
    return [b for b in (FLOAT, 8, 4, 2) if b > target_bits] + [target_bits]


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


@register
class ProgressiveBitWidth(PrecisionSchedule):
    """Trains at a decreasing sequence of bit-widths in one `fit`, e.g. 32 -> 8 -> 4 -> 2.

    Each stage starts from the weights the previous stage ended with. Bits of 32 switch the
    quantizers off: weights in float, activations clipped but not rounded. Only the quantizers
    deployed at the schedule's final bit-width are scheduled (`deploy_bits`), so layers kept at
    other precisions (the 8-bit first and last layers) stay as they are.

    Args:
        weight_schedule: "decreasing" (the paper's 32 -> 8 -> 4 -> 2, cut at the weights'
            lowest deployed bit-width, in equal shares of the epochs), a sequence of bit-widths
            (equal shares) or a mapping {first epoch: bits}; None leaves weights alone.
        activation_schedule: the same for activations.
        allow_increase: allow a schedule whose bit-width goes up.

    Raises:
        ValueError: for bits outside 1-8 and 32, a rising schedule without `allow_increase`,
            or (when `fit` starts) a schedule that does not fit its epochs.
    """

    name = "progressive-bits"

    def __init__(self, weight_schedule: Optional[Schedule] = DECREASING,
                 activation_schedule: Optional[Schedule] = DECREASING,
                 allow_increase: bool = False):
        super().__init__()
        self.schedules = {"weight": weight_schedule, "activation": activation_schedule}
        for role, schedule in self.schedules.items():
            if schedule is None or schedule == DECREASING:
                continue
            if isinstance(schedule, str):
                raise ValueError(f"ProgressiveBitWidth: {role}_schedule must be "
                                 f"{DECREASING!r}, a list of bits or a mapping, got {schedule!r}.")
            values = list(dict(sorted(schedule.items())).values()) if isinstance(schedule, Mapping) \
                else list(schedule)
            _check_bits_list(f"{role}_schedule", values)
            if not allow_increase and any(b > a for a, b in zip(values, values[1:])):
                raise ValueError(f"ProgressiveBitWidth: {role}_schedule {values} goes up; "
                                 "pass allow_increase=True if that is intended.")
        self._starts = {}

    def on_train_begin(self, logs=None):
        epochs = self.params["epochs"]
        states = precision.quantizer_states(self.model)
        self._starts = {}
        for role, schedule in self.schedules.items():
            if schedule == DECREASING:
                schedule = decreasing_schedule(min(
                    (s.quantizer.deploy_bits for s in states if s.role == role), default=8))
            if schedule is not None:
                self._starts[role] = stage_starts(schedule, epochs, f"{role}_schedule")
        for role, starts in self._starts.items():
            target = list(starts.values())[-1]
            if not any(s.role == role and s.quantizer.deploy_bits == target for s in states):
                configured = sorted({s.quantizer.deploy_bits for s in states if s.role == role})
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
                      if s.role == role and s.quantizer.deploy_bits == target]
            precision.assign(states, bits=None if bits == FLOAT else bits, enabled=bits != FLOAT,
                             source=self.name)
