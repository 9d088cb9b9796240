"""Progressive bit-width decrease inside one `fit` (technique "progressive-bits").

Zhuang, Liu, Tan, Liu, Reid, Shen, "Effective Training of Convolutional Neural Networks with
Low-bitwidth Weights and Activations", arXiv 1908.04680 (progressive quantization). Only
precision variables change between epochs (see `kquant.precision`): no model is rebuilt and
nothing recompiles. The stage is computed from the epoch, which `BackupAndRestore` restores,
so an interrupted run resumes in the stage of the epoch it resumes at.
"""
import itertools
from typing import Mapping, Optional, Sequence, Union

from kquant import precision
from kquant.quantizers.base import MAX_BITS, MIN_BITS
from kquant.techniques.base import PrecisionSchedule
from kquant.techniques.registry import register

FLOAT = 32  # a "bit-width" meaning: quantizer switched off (full precision, activations clipped)

DECREASING = "decreasing"
Schedule = Union[str, Sequence[int], Mapping[int, int]]


def decreasing_schedule(target_bits, float_stage=True):
    """The paper's 32 -> 8 -> 4 -> 2 sequence, cut at the target: e.g. [32, 8, 4] for 4 bits
    (without the 32-bit stage unless `float_stage`)."""
    return [b for b in (FLOAT, 8, 4, 2) if b > target_bits and (float_stage or b != FLOAT)] + [
        target_bits]


def _check_bits_list(name, values):
    for bits in values:
        if bits != FLOAT and not (isinstance(bits, int) and MIN_BITS <= bits <= MAX_BITS):
            raise ValueError(f"ProgressiveBitWidth: {name} holds {bits!r}; allowed are integers "
                             f"{MIN_BITS}-{MAX_BITS} and {FLOAT} (full precision).")


def stage_starts(schedule: Schedule, epochs: int, name: str = "schedule", final_share=None):
    """Turns a schedule into {first epoch: bits}.

    A sequence gives the last stage `final_share` of the epochs (rounded, leaving every other
    stage at least one) and the other stages equal shares of the rest (earlier stages take the
    remainder); with `final_share` None every stage gets an equal share. A mapping is used as
    it is and must start at epoch 0.

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
    if final_share is None or len(stages) == 1:
        lengths = _equal_shares(epochs, len(stages))
    else:
        final = min(max(1, round(final_share * epochs)), epochs - len(stages) + 1)
        lengths = _equal_shares(epochs - final, len(stages) - 1) + [final]
    return dict(zip(itertools.accumulate([0] + lengths[:-1]), stages))


def _equal_shares(epochs, count):
    """`count` lengths adding up to `epochs`, earlier ones taking the remainder."""
    return [epochs // count + (1 if i < epochs % count else 0) for i in range(count)]


@register
class ProgressiveBitWidth(PrecisionSchedule):
    """Trains at a decreasing sequence of bit-widths in one `fit`, e.g. 32 -> 8 -> 4 -> 2.

    Each stage starts from the weights the previous stage ended with. Bits of 32 switch the
    quantizers off: weights in float, activations clipped but not rounded. Only the quantizers
    deployed at the schedule's final bit-width are scheduled (`deploy_bits`), so layers kept at
    other precisions (the 8-bit first and last layers) stay as they are.

    kquant's defaults (the paper gives equal shares and one schedule): the decreasing schedule
    leaves out the 32-bit stage (`float_stage`), since kquant's QAT starts from a trained float
    model, which that stage would only train again; the final, deployed bit-width gets half
    the epochs (`final_share`); the learning-rate cosine starts again at every stage (through
    `kquant.techniques.prepare`), so later stages are not trained on the tail of one cosine;
    and the activation clips are fit again on the first batch of every stage
    (`kquant.precision.refit`). The optimizer state is kept.

    Args:
        weight_schedule: "decreasing" (32 -> 8 -> 4 -> 2 cut at the weights' lowest deployed
            bit-width), a sequence of bit-widths or a mapping {first epoch: bits}; None leaves
            weights alone.
        activation_schedule: the same for activations.
        allow_increase: allow a schedule whose bit-width goes up.
        float_stage: begin "decreasing" schedules with the 32-bit stage.
        final_share: the share of the epochs a sequence's last stage gets; None: equal shares.
        restart_learning_rate: restart the cosine at every stage.
        refit_clips: fit the activation clips again at every stage.

    Raises:
        ValueError: for bits outside 1-8 and 32, a rising schedule without `allow_increase`,
            or (when `fit` starts) a schedule that does not fit its epochs.
    """

    name = "progressive-bits"

    def __init__(self, weight_schedule: Optional[Schedule] = DECREASING,
                 activation_schedule: Optional[Schedule] = DECREASING,
                 allow_increase: bool = False, float_stage: bool = False,
                 final_share: Optional[float] = 0.5, restart_learning_rate: bool = True,
                 refit_clips: bool = True):
        super().__init__()
        if final_share is not None and not 0 < final_share < 1:
            raise ValueError(f"ProgressiveBitWidth: final_share must be in (0, 1) or None, got "
                             f"{final_share!r}.")
        self.float_stage, self.final_share = float_stage, final_share
        self.restart_learning_rate, self.refit_clips = restart_learning_rate, refit_clips
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

    def stages(self, model, epochs):
        """{role: {first epoch: bits}} for a model trained `epochs` epochs."""
        states = precision.quantizer_states(model)
        starts = {}
        for role, schedule in self.schedules.items():
            if schedule == DECREASING:
                schedule = decreasing_schedule(min(
                    (s.quantizer.deploy_bits for s in states if s.role == role), default=8),
                    self.float_stage)
            if schedule is not None:
                starts[role] = stage_starts(schedule, epochs, f"{role}_schedule", self.final_share)
        return starts

    def learning_rate_restarts(self, model, schedule):
        if not self.restart_learning_rate:
            return []
        return sorted({epoch * schedule.steps_per_epoch
                       for starts in self.stages(model, schedule.epochs).values()
                       for epoch in starts if epoch > 0})

    def on_train_begin(self, logs=None):
        states = precision.quantizer_states(self.model)
        self._starts = self.stages(self.model, self.params["epochs"])
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
        # A stage starts here (also when a run resumes at this epoch).
        if self.refit_clips and epoch > 0 and self.bits_at(epoch) != self.bits_at(epoch - 1):
            precision.refit(self.model, role="activation", epoch_steps=self.params.get("steps"))
