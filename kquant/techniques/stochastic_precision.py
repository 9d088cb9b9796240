"""Stochastic precision inside one `fit` (technique "stochastic-precision").

Zhuang, Liu, Tan, Liu, Reid, Shen, "Effective Training of Convolutional Neural Networks with
Low-bitwidth Weights and Activations", arXiv 1908.04680 (stochastic precision).
"""
from typing import Optional, Sequence, Union

import numpy as np

from kquant import graph, precision
from kquant.backend import keras
from kquant.quantizers.model_states import quantized_models
from kquant.techniques.base import PrecisionSchedule
from kquant.techniques.registry import register


@register
class StochasticPrecision(PrecisionSchedule):
    """Quantizes each unit with probability p(t) per training step, full precision otherwise.

    A unit (a residual block, a layer, or a group of layers you name) is quantized as a whole:
    all its weight and activation quantizers switch on or off together. Switched off, weights
    are float and activations stay clipped. p(t) ramps from `initial_probability` to 1 over the
    first `ramp_fraction` of training, linearly or in four equal steps (p0, ..., 1.0); the rest
    of training, and every `evaluate`, `predict`, validation and export, is fully quantized.
    Combined with two-stage or bit-width decrease, a unit runs quantized only where both
    want it (see `kquant.precision`).

    The draw of step t comes from a generator seeded with (seed, t), so a run repeats exactly,
    also after resuming from a checkpoint (the step counter is the optimizer's).

    Args:
        units: "auto" (residual blocks if the model has any, else layers), "residual" (blocks
            found by `kquant.graph.residual_units`), "layers" (each quantized layer), or a list
            of lists of layer names.
        initial_probability: p0, in (0, 1].
        ramp: "linear" or "steps".
        ramp_fraction: part of training over which p reaches 1, in (0, 1].
        seed: random seed.
        total_steps: training steps over which p ramps; by default those of the `fit` (its
            epochs times the steps of an epoch, which `fit` must know).

    Raises:
        ValueError: for probabilities or fractions out of range, an unknown ramp or units, or
            unit names that have no quantizer.
    """

    name = "stochastic-precision"

    def __init__(self, units: Union[str, Sequence[Sequence[str]]] = "auto",
                 initial_probability: float = 0.25, ramp: str = "linear",
                 ramp_fraction: float = 0.8, seed: int = 0, total_steps: Optional[int] = None):
        super().__init__()
        if not 0 < initial_probability <= 1:
            raise ValueError("StochasticPrecision: initial_probability must be in (0, 1], got "
                             f"{initial_probability!r}.")
        if ramp not in ("linear", "steps"):
            raise ValueError(f"StochasticPrecision: ramp must be 'linear' or 'steps', got {ramp!r}.")
        if not 0 < ramp_fraction <= 1:
            raise ValueError(f"StochasticPrecision: ramp_fraction must be in (0, 1], got {ramp_fraction!r}.")
        if isinstance(units, str) and units not in ("auto", "residual", "layers"):
            raise ValueError("StochasticPrecision: units must be 'auto', 'residual', 'layers' or "
                             f"lists of layer names, got {units!r}.")
        self.units, self.initial_probability = units, float(initial_probability)
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"StochasticPrecision: total_steps must be >= 1, got {total_steps!r}.")
        self.ramp, self.ramp_fraction, self.seed = ramp, float(ramp_fraction), int(seed)
        self.total_steps = total_steps
        self._units, self._state, self._total_steps = [], None, 1

    def probability(self, progress):
        """p at a fraction `progress` in [0, 1] of training."""
        ramp_progress = min(1.0, progress / self.ramp_fraction)
        if self.ramp == "steps" and ramp_progress < 1:
            ramp_progress = np.floor(ramp_progress * 4) / 3  # p0, then thirds of the way, then 1
        return self.initial_probability + (1.0 - self.initial_probability) * ramp_progress

    def resolve_units(self, model):
        """The units as lists of the `QuantizerState`s they switch."""
        states = precision.quantizer_states(model)
        names = {s.layer for s in states}
        models = quantized_models(model)
        has_blocks = all(any(isinstance(graph.unwrap(l), keras.layers.Add) for l in m.layers)
                         for m in models)
        if self.units == "residual" or self.units == "auto" and has_blocks:
            units = [unit for m in models for unit in graph.residual_units(m)]
        elif self.units in ("layers", "auto"):
            units = [[name] for name in dict.fromkeys(s.layer for s in states)]
        else:
            units = [list(unit) for unit in self.units]
            unknown = sorted({n for unit in units for n in unit} - names)
            if unknown:
                raise ValueError(f"StochasticPrecision: layers {unknown} have no kquant quantizer; "
                                 f"layers with quantizers: {sorted(names)}.")
        resolved = [[s for s in states if s.layer in set(unit)] for unit in units]
        return [unit for unit in resolved if unit]

    def on_train_begin(self, logs=None):
        self._units = self.resolve_units(self.model)
        steps = self.params.get("steps")
        if self.total_steps is None and not steps:
            raise ValueError("StochasticPrecision: fit does not know how many steps an epoch has "
                             "(a dataset of unknown length), so p(t) cannot ramp over training; "
                             "pass steps_per_epoch to fit, or total_steps to StochasticPrecision.")
        self._total_steps = self.total_steps or steps * self.params["epochs"]
        self._state = None

    def _apply(self, state):
        if state == self._state:
            return
        for on, unit in zip(state, self._units):
            precision.assign(unit, enabled=on, source=self.name)
        self._state = state

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        p = self.probability(step / self._total_steps)
        draws = np.random.default_rng([self.seed, step]).random(len(self._units))
        self._apply(tuple(bool(d < p) for d in draws))

    def on_train_end(self, logs=None):
        self._apply(tuple(True for _ in self._units))  # trained: fully quantized from here on
