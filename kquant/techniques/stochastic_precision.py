"""Stochastic precision inside one `fit` (technique "stochastic-precision").

Zhuang, Liu, Tan, Liu, Reid, Shen, "Effective Training of Convolutional Neural Networks with
Low-bitwidth Weights and Activations", arXiv 1908.04680 (stochastic precision).
"""
from typing import Sequence, Union

import numpy as np

from kquant import graph, precision
from kquant.backend import keras
from kquant.quantizers.model_states import quantized_models
from kquant.techniques.base import Technique
from kquant.techniques.registry import register


@register
class StochasticPrecision(Technique, keras.callbacks.Callback):
    """Quantizes each unit with probability p(t) per training step, full precision otherwise.

    A unit (a residual block, a layer, or a group of layers you name) is quantized as a whole:
    all its weight and activation quantizers switch on or off together. Switched off, weights
    are float and activations stay clipped. p(t) ramps from `initial_probability` to 1 over the
    first `ramp_fraction` of training, linearly or in four equal steps (p0, ..., 1.0); the rest
    of training, and every `evaluate`, `predict`, validation and export, is fully quantized.

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

    Raises:
        ValueError: for probabilities or fractions out of range, an unknown ramp or units, or
            unit names that have no quantizer.
    """

    name = "stochastic-precision"

    def __init__(self, units: Union[str, Sequence[Sequence[str]]] = "auto",
                 initial_probability: float = 0.25, ramp: str = "linear",
                 ramp_fraction: float = 0.8, seed: int = 0):
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
        self.ramp, self.ramp_fraction, self.seed = ramp, float(ramp_fraction), int(seed)
        self._unit_variables, self._state, self._total_steps = [], None, 1

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

    def callbacks(self, model, context):
        return [self]

    def on_train_begin(self, logs=None):
        self._unit_variables = [[s.enabled for s in unit] for unit in self.resolve_units(self.model)]
        self._total_steps = max(1, (self.params.get("steps") or 1) * self.params["epochs"])
        self._state = None

    def _apply(self, state):
        if state == self._state:
            return
        for on, variables in zip(state, self._unit_variables):
            for variable in variables:
                variable.assign(1.0 if on else 0.0)
        self._state = state

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        p = self.probability(step / self._total_steps)
        draws = np.random.default_rng([self.seed, step]).random(len(self._unit_variables))
        self._apply(tuple(bool(d < p) for d in draws))

    def _quantize_all(self, logs=None):
        self._apply(tuple(True for _ in self._unit_variables))

    on_test_begin = on_predict_begin = on_train_end = _quantize_all
