"""Sets the bit-widths and on/off switches of a quantized model's quantizers.

Precision is state, not structure: techniques that change bit-widths during training
(progressive, stochastic precision, cyclic) call these functions between steps; nothing is
rebuilt or recompiled. The quantizers are found by `kquant.quantizers.quantizer_states`.
"""
from kquant.quantizers.base import check_bits
from kquant.quantizers.model_states import QuantizerState, quantizer_states

__all__ = ["QuantizerState", "assign", "quantizer_states", "set_bits", "set_enabled"]


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
        bits = check_bits(bits, "assign")
        fixed = sorted({s.layer for s in states
                        if not s.quantizer.variable_bits and s.quantizer.deploy_bits != bits})
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
        model: a kquant model, or a model that trains kquant models.
        bits: 1 to 8.
        role: "weight", "activation", or None for both.
        layers: names of the layers to change, or None for all.

    Raises:
        ValueError: for bits outside 1 to 8 or unknown layer names.
    """
    assign(_select(model, role, layers), bits=check_bits(bits, "set_bits"))


def set_enabled(model, enabled, role=None, layers=None):
    """Switches quantizers on (True) or off (False, full precision with clipped activations).

    Args:
        model: a kquant model, or a model that trains kquant models.
        enabled: True or False.
        role: "weight", "activation", or None for both.
        layers: names of the layers to change, or None for all.
    """
    assign(_select(model, role, layers), enabled=enabled)
