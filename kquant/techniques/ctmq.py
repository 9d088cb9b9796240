"""CTMQ inside one `fit`: a chain of bit-widths down to the target, then cycles between the
low-bit model and its full-precision twin (techniques "ctmq-chain" and "ctmq-cyclic").

Kim, Shin, Del Barrio, "CTMQ: Cyclic Training of Convolutional Neural Networks with Multiple
Quantization Steps", arXiv 2206.12794. The paper trains a new model per phase, initialised
from the previous one; here one model passes through the phases and only its precision
variables change (`kquant.precision`), so every phase starts from the weights the previous
one ended with. The phase follows the epoch, which `BackupAndRestore` restores, so an
interrupted run resumes in the step, cycle and phase of the epoch it resumes at.
"""
import dataclasses
from typing import Dict, List, Optional

from kquant import precision
from kquant.quantizers.base import MAX_BITS
from kquant.techniques.base import PrecisionSchedule
from kquant.techniques.registry import register

FULL_PRECISION = 32  # the bits a phase with every quantizer off records


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of the plan.

    Attributes:
        first_epoch: the epoch it starts at.
        epochs: how many epochs it lasts.
        cycle: 0 for the chain, 1..N for the cycles.
        accurate: True for the full-precision twin A (every quantizer off).
        bits: {role: bits} of the scheduled quantizers; empty for A.
    """

    first_epoch: int
    epochs: int
    cycle: int
    accurate: bool
    bits: Dict[str, int]

    def recorded_bits(self, role):
        return FULL_PRECISION if self.accurate else self.bits.get(role, FULL_PRECISION)


@register
class CyclicMultiStep(PrecisionSchedule):
    """CTMQ: multiple quantization steps down to the target, then N cycles of A and Q.

    Chain: the model trains at `first_bits`, then `first_bits - bits_per_step`, ..., down to
    the bit-width it is deployed at; each role (weights, activations) stops at its own
    deployed bits (W1A2 from 3 bits: W3A3, W2A2, W1A2). Only the quantizers deployed at each
    role's lowest bit-width are scheduled, so the 8-bit first and last layers stay 8-bit in
    Q phases. Cycles: the accurate twin A (same weights, every quantizer off: float weights,
    clipped float activations) trains, then the low-bit model Q again, `cycles` times.
    The history gets per epoch "ctmq_phase" (index in the plan), "ctmq_cycle" (0: chain),
    "ctmq_weight_bits" and "ctmq_activation_bits" (32 in A phases).

    kquant's defaults (the paper leaves them open): the chain starts one step above the
    target (`first_bits` None: target + `bits_per_step`), since the float checkpoint the model
    was quantized from is already the paper's 32-bit start; each chain step gets `step_epochs`
    epochs, each A or Q phase of a cycle `cycle_epochs`, and the final Q phase, the deployed
    one, also whatever the fit has beyond the plan; the learning-rate cosine starts again at every phase
    (through `kquant.techniques.prepare`: the paper trains each phase as a new run); the
    activation clips are fit again on the first batch of every phase that changes precision
    (`kquant.precision.refit`). The optimizer state (momentum) is kept across phases.

    Args:
        first_bits: bits of the first chain step, 2 to 8, above the lowest target; None: one
            step above it.
        bits_per_step: how many bits each chain step drops, >= 1.
        cycles: how many A-then-Q cycles follow the chain, >= 0.
        step_epochs: epochs of each chain step, >= 1.
        cycle_epochs: epochs of each A and each Q phase of a cycle, >= 1; None: `step_epochs`.
        restart_learning_rate: restart the cosine at every phase.
        refit_clips: fit the activation clips again when a phase changes precision.

    Raises:
        ValueError: for a chain that goes up or stands still, a bad first_bits, negative
            cycles, cycle_epochs without cycles, epochs < 1, or (when `fit` starts) a target above `first_bits`, a
            plan needing more epochs than the fit has, or quantizers whose bits are fixed at
            build (learnable levels) in a chain that changes them.
    """

    name = "ctmq-cyclic"

    def __init__(self, first_bits: Optional[int] = None, bits_per_step: int = 1,
                 cycles: int = 1, step_epochs: int = 1, cycle_epochs: Optional[int] = None,
                 restart_learning_rate: bool = True, refit_clips: bool = True):
        super().__init__()
        owner = type(self).__name__
        if not isinstance(bits_per_step, int) or bits_per_step < 1:
            raise ValueError(f"{owner}: bits_per_step must be an integer >= 1 (the chain goes "
                             f"down to the target), got {bits_per_step!r}.")
        if first_bits is not None and (not isinstance(first_bits, int) or
                                       not 2 <= first_bits <= MAX_BITS):
            raise ValueError(f"{owner}: first_bits must be None or an integer from 2 to "
                             f"{MAX_BITS}, got {first_bits!r}.")
        if not isinstance(cycles, int) or cycles < 0:
            raise ValueError(f"{owner}: cycles must be an integer >= 0, got {cycles!r}.")
        if cycles == 0 and cycle_epochs is not None:
            raise ValueError(f"{owner}: cycle_epochs={cycle_epochs!r} given with cycles=0; give "
                             "cycles >= 1 or leave cycle_epochs out.")
        cycle_epochs = step_epochs if cycle_epochs is None else cycle_epochs
        for argument, value in (("step_epochs", step_epochs), ("cycle_epochs", cycle_epochs)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{owner}: {argument} must be an integer >= 1, got {value!r}.")
        self.first_bits, self.bits_per_step = first_bits, bits_per_step
        self.cycles, self.step_epochs, self.cycle_epochs = cycles, step_epochs, cycle_epochs
        self.restart_learning_rate, self.refit_clips = restart_learning_rate, refit_clips
        self._plan = []

    def _targets(self, model):
        """{role: the lowest deployed bits of that role}."""
        targets = {}
        for state in precision.quantizer_states(model):
            targets[state.role] = min(targets.get(state.role, MAX_BITS), state.quantizer.deploy_bits)
        return targets

    def chain(self, model):
        """The chain's bit-widths, e.g. [3, 2, 1]; each role stops at its own target."""
        lowest = min(self._targets(model).values(), default=MAX_BITS)
        first = self.first_bits if self.first_bits is not None else min(
            lowest + self.bits_per_step, MAX_BITS)
        if first <= lowest:
            raise ValueError(f"{type(self).__name__}: first_bits {first} must be above the target "
                             f"{lowest} bits the model is deployed at (the chain goes down).")
        return list(range(first, lowest, -self.bits_per_step)) + [lowest]

    def plan(self, model, epochs) -> List[Phase]:
        """The phases of a `fit` of `epochs` epochs.

        Raises:
            ValueError: if the plan needs more epochs than `epochs`, or changes the bits of
                quantizers whose bits are fixed at build.
        """
        targets = self._targets(model)
        steps = [dict(cycle=0, accurate=False, bits={r: max(b, t) for r, t in targets.items()})
                 for b in self.chain(model)]
        lengths = [self.step_epochs] * len(steps)
        final = steps[-1]["bits"]
        for cycle in range(1, self.cycles + 1):
            steps += [dict(cycle=cycle, accurate=True, bits={}),
                      dict(cycle=cycle, accurate=False, bits=final)]
            lengths += [self.cycle_epochs] * 2
        if sum(lengths) > epochs:
            raise ValueError(f"{type(self).__name__}: the plan needs {sum(lengths)} epochs "
                             f"({len(lengths)} phases: step_epochs={self.step_epochs}, "
                             f"cycle_epochs={self.cycle_epochs}, cycles={self.cycles}) but fit "
                             f"runs {epochs}; give more epochs, fewer cycles or a shorter chain "
                             "(first_bits, bits_per_step).")
        fixed = sorted({s.layer for s in precision.quantizer_states(model)
                        if not s.quantizer.variable_bits and s.quantizer.deploy_bits == targets[s.role]
                        and any(step["bits"][s.role] != targets[s.role] for step in steps
                                if not step["accurate"])})
        if fixed:
            raise ValueError(f"{type(self).__name__}: layers {fixed} have quantizers whose bits are "
                             "fixed when the model is built (learnable levels), but the chain "
                             "changes them; use a quantizer with variable bits (dorefa) or "
                             "train directly at the target.")
        lengths[-1] += epochs - sum(lengths)
        starts = [sum(lengths[:i]) for i in range(len(steps))]
        return [Phase(first_epoch=s, epochs=n, **step) for s, n, step in zip(starts, lengths, steps)]

    def minimum_epochs(self, model):
        """The epochs the plan needs (a longer fit lengthens the final phase)."""
        return self.plan(model, 10 ** 6)[-1].first_epoch + (
            self.cycle_epochs if self.cycles else self.step_epochs)

    def learning_rate_restarts(self, model, schedule):
        if not self.restart_learning_rate:
            return []
        return [p.first_epoch * schedule.steps_per_epoch
                for p in self.plan(model, schedule.epochs)[1:]]

    def on_train_begin(self, logs=None):
        self._plan = self.plan(self.model, self.params["epochs"])

    def phase_at(self, epoch):
        """The `Phase` in force at an epoch."""
        return [p for p in self._plan if p.first_epoch <= epoch][-1]

    def on_epoch_begin(self, epoch, logs=None):
        phase = self.phase_at(epoch)
        states = precision.quantizer_states(self.model)
        targets = self._targets(self.model)
        precision.assign(states, enabled=not phase.accurate, source=self.name)
        for role, bits in phase.bits.items():
            precision.assign([s for s in states
                              if s.role == role and s.quantizer.deploy_bits == targets[role]],
                             bits=bits, source=self.name)
        # A phase starts here (also when a run resumes at this epoch).
        if self.refit_clips and epoch == phase.first_epoch and epoch > 0 and \
                not phase.accurate and phase != self.phase_at(epoch - 1):
            precision.refit(self.model, role="activation", epoch_steps=self.params.get("steps"))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        phase = self.phase_at(epoch)
        logs.update(ctmq_phase=self._plan.index(phase), ctmq_cycle=phase.cycle,
                    ctmq_weight_bits=phase.recorded_bits("weight"),
                    ctmq_activation_bits=phase.recorded_bits("activation"))


@register
class MultiStepChain(CyclicMultiStep):
    """CTMQ's multiple quantization steps alone: `CyclicMultiStep` without cycles.

    Args:
        first_bits, bits_per_step, step_epochs, restart_learning_rate, refit_clips: see
            `CyclicMultiStep`.
    """

    name = "ctmq-chain"

    def __init__(self, first_bits: Optional[int] = None, bits_per_step: int = 1,
                 step_epochs: int = 1, restart_learning_rate: bool = True,
                 refit_clips: bool = True):
        super().__init__(first_bits, bits_per_step, 0, step_epochs, None, restart_learning_rate,
                         refit_clips)
