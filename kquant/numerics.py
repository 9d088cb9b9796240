"""Stops training at the first NaN or infinity, naming where it is (TerminateOnNaN, with a cause)."""
import math

import numpy as np

from kquant.backend import keras
from kquant.quantizers.model_states import quantizer_states


def _first_non_finite_quantizer(states):
    for state in states:
        for name, variable in state.variables.items():
            if variable.dtype.is_floating and not np.all(np.isfinite(variable.numpy())):
                return (f"layer {state.layer!r}, {state.role} quantizer "
                        f"{type(state.quantizer).__name__}: its {name!r} holds NaN or infinity")
    return None


def non_finite_cause(model):
    """Where a model holds NaN or infinity: the first quantizer variable (its range, step or
    levels) that does, else the first layer weight, else None."""
    cause = _first_non_finite_quantizer(quantizer_states(model))
    if cause is None:
        cause = next((f"weight {v.name!r} holds NaN or infinity" for v in model.weights
                      if v.dtype.is_floating and not np.all(np.isfinite(v.numpy()))), None)
    return cause


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops `fit` at the first NaN or infinity in the loss or a quantizer, and says where.

    Before training it checks every weight and quantizer variable; after each batch, the loss
    and every quantizer variable (ranges, steps, levels: a handful of small tensors). A
    quantizer variable that stops being finite is named with its layer and quantizer; a loss
    that does while every quantizer was finite before the step points at the batch's inputs,
    labels or the learning rate. It prints the message, keeps it in `message` and stops.
    """

    def __init__(self):
        super().__init__()
        self.message = None
        self._states = []

    def _stop(self, message):
        self.message = f"kquant: training stopped {message}."
        print(self.message)
        self.model.stop_training = True

    def on_train_begin(self, logs=None):
        self._states = quantizer_states(self.model)
        cause = non_finite_cause(self.model)
        if cause is not None:
            self._stop(f"before it started: {cause}")

    def on_train_batch_end(self, batch, logs=None):
        if self.model.stop_training:
            return
        cause = _first_non_finite_quantizer(self._states)
        if cause is not None:
            self._stop(f"at batch {batch}: {cause}")
            return
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop(f"at batch {batch}: the loss is {loss} while every quantizer variable was "
                       "finite; look at this batch's inputs and labels, or lower the learning rate")
