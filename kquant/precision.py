"""Finds the bit-width and on/off variables of a quantized model and sets them.

Precision is state, not structure: techniques that change bit-widths during training
(progressive, stochastic precision, cyclic) call these functions between steps; nothing is
rebuilt or recompiled.
"""
import dataclasses
from typing import List

from kquant.backend import keras, tf, tfmot
from kquant.quantizers.base import LowBitQuantizer, check_bits


@dataclasses.dataclass
class QuantizerState:
    """One low-bit quantizer of a model and its variables.

    Attributes:
        layer: name of the quantized layer.
        role: "weight" or "activation".
        quantizer: the `LowBitQuantizer`.
        bits: its bit-width variable.
        enabled: its on/off variable (1.0 on, 0.0 off).
    """

    layer: str
    role: str
    quantizer: LowBitQuantizer
    bits: tf.Variable
    enabled: tf.Variable


def quantize_wrappers(model):
    """Yields every TF-MOT wrapper of a model (nested models included), in layer order.

    A training wrapper with a `quantized_models` attribute (such as `JointDistillation`) is
    represented by those models only, so its full-precision teacher is never included.
    """
    if hasattr(model, "quantized_models"):
        for quantized in model.quantized_models:
            yield from quantize_wrappers(quantized)
        return
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from quantize_wrappers(layer)
        if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2):
            yield layer


def quantizer_states(model) -> List[QuantizerState]:
    """Lists every low-bit quantizer of a model (see `quantize_wrappers`), in layer order."""
    states = []
    for layer in quantize_wrappers(model):
        for _, quantizer, variables in layer._weight_vars:  # pylint: disable=protected-access
            if isinstance(quantizer, LowBitQuantizer):
                states.append(QuantizerState(layer.layer.name, "weight", quantizer,
                                             variables["bits"], variables["enabled"]))
        for quantizer in layer._output_quantizers:  # pylint: disable=protected-access
            if isinstance(quantizer, LowBitQuantizer):
                variables = layer._output_quantizer_vars  # pylint: disable=protected-access
                states.append(QuantizerState(layer.layer.name, "activation", quantizer,
                                             variables["bits"], variables["enabled"]))
    return states


def _select(model, role, layers):
    states = [s for s in quantizer_states(model) if role in (None, s.role)]
    if layers is not None:
        known = {s.layer for s in states}
        missing = sorted(set(layers) - known)
        if missing:
            raise ValueError(f"No kquant quantizer in layers {missing}; layers with quantizers: "
                             f"{sorted(known)}.")
        states = [s for s in states if s.layer in set(layers)]
    return states


def assign(states, bits=None, enabled=None):
    """Sets the bit-width and/or switch of the given `QuantizerState`s.

    Raises:
        ValueError: for bits outside 1 to 8, or a new bit-width for a quantizer whose
            bit-width is fixed at build (`variable_bits` False, e.g. learnable levels).
    """
    if bits is not None:
        check_bits(bits, "assign")
        fixed = sorted({s.layer for s in states
                        if not s.quantizer.variable_bits and s.quantizer.bits != bits})
        if fixed:
            raise ValueError(f"Layers {fixed} have quantizers whose bit-width is fixed when the "
                             f"model is built (learnable levels); they cannot change to {bits} "
                             "bits. Leave them out of bit-width schedules.")
    for state in states:
        if bits is not None:
            state.bits.assign(float(bits))
        if enabled is not None:
            state.enabled.assign(1.0 if enabled else 0.0)


def set_bits(model, bits, role=None, layers=None):
    """Sets the bit-width of quantizers in a model.

    Args:
        model: a kquant model.
        bits: 1 to 8.
        role: "weight", "activation", or None for both.
        layers: names of the layers to change, or None for all.

    Raises:
        ValueError: for bits outside 1 to 8 or unknown layer names.
    """
    check_bits(bits, "set_bits")
    assign(_select(model, role, layers), bits=bits)


def set_enabled(model, enabled, role=None, layers=None):
    """Switches quantizers on (True) or off (False, full precision with clipped activations).

    Args:
        model: a kquant model.
        enabled: True or False.
        role: "weight", "activation", or None for both.
        layers: names of the layers to change, or None for all.
    """
    assign(_select(model, role, layers), enabled=enabled)
