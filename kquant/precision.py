"""Sets the bit-widths and on/off switches of a quantized model's quantizers.

Precision is state, not structure: techniques that change bit-widths during training
(progressive, stochastic precision, cyclic) call these functions between steps; nothing is
rebuilt or recompiled. The quantizers are found by `kquant.quantizers.quantizer_states`.

Several techniques can steer one quantizer at once, each as its own `source`: a quantizer is
on only while every source that switched it wants it on, at the lowest bit-width any source
asked for. So stochastic precision's draws never switch on what two-stage switched off, and
never undo a progressive stage's bit-width.
"""
from kquant.quantizers.base import check_bits
from kquant.quantizers.model_states import QuantizerState, quantizer_states

__all__ = ["QuantizerState", "apply_deployed", "apply_requests", "assign", "quantizer_states",
           "refit", "set_bits", "set_deployed", "set_enabled"]

USER = "user"
_requests = {}  # the enabled variable's ref() -> {source: (bits or None, enabled or None)}


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


def _apply(state):
    """Sets a quantizer's variables from the requests of every source."""
    requests = _requests.get(state.enabled.ref(), {}).values()
    bits = [b for b, _ in requests if b is not None]
    switches = [e for _, e in requests if e is not None]
    if bits:
        state.bits.assign(float(min(bits)))
    if switches:
        state.enabled.assign(1.0 if all(switches) else 0.0)


def assign(states, bits=None, enabled=None, source=USER):
    """Records what `source` wants for the given `QuantizerState`s and applies it.

    Args:
        states: the quantizers to change.
        bits: the bit-width `source` wants, or None to leave its wish unchanged.
        enabled: True/False, or None to leave its wish unchanged.
        source: who asks (a technique's name; "user" for direct calls).

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
        wishes = _requests.setdefault(state.enabled.ref(), {})
        old_bits, old_enabled = wishes.get(source, (None, None))
        wishes[source] = (bits if bits is not None else old_bits,
                          bool(enabled) if enabled is not None else old_enabled)
        _apply(state)


def set_bits(model, bits, role=None, layers=None, source=USER):
    """Sets the bit-width of quantizers in a model.

    Args:
        model: a kquant model, or a model that trains kquant models.
        bits: 1 to 8.
        role: "weight", "activation", or None for both.
        layers: names of the layers to change, or None for all.
        source: who asks (see the module docstring).

    Raises:
        ValueError: for bits outside 1 to 8 or unknown layer names.
    """
    assign(_select(model, role, layers), bits=check_bits(bits, "set_bits"), source=source)


def set_enabled(model, enabled, role=None, layers=None, source=USER):
    """Switches quantizers on (True) or off (False, full precision with clipped activations).

    Args:
        model: a kquant model, or a model that trains kquant models.
        enabled: True or False.
        role: "weight", "activation", or None for both.
        layers: names of the layers to change, or None for all.
        source: who asks (see the module docstring).
    """
    assign(_select(model, role, layers), enabled=enabled, source=source)


def refit(model, role=None, layers=None, epoch_steps=None):
    """Asks quantizers to fit their data-dependent parameters (e.g. clips) again, on the next
    training batch (`LowBitQuantizer.refit`); techniques call it when precision changes.

    Args:
        model: a kquant model, or a model that trains kquant models.
        role: "weight", "activation", or None for both.
        layers: names of the layers, or None for all.
        epoch_steps: for a re-fit at an epoch's first batch, the steps per epoch: when the
            optimizer is already past that batch (a fit resumed mid-epoch by
            `BackupAndRestore`), the interrupted run did the re-fit and nothing is asked.
    """
    if epoch_steps and int(model.optimizer.iterations.numpy()) % epoch_steps:
        return
    for state in _select(model, role, layers):
        state.quantizer.refit(state.variables)


def apply_deployed(model):
    """Sets every quantizer to its deployed precision (on, `deploy_bits`) without forgetting
    what the sources asked for: `apply_requests` returns to that. Evaluation inside `fit`
    runs between the two, so validation scores and checkpoints judge the deployed model."""
    for state in quantizer_states(model):
        state.bits.assign(float(state.quantizer.deploy_bits))
        state.enabled.assign(1.0)


def apply_requests(model):
    """Sets every quantizer that a source steers back to what the sources ask for."""
    for state in quantizer_states(model):
        _apply(state)


def set_deployed(model):
    """Forgets every source's wishes and puts the model at its deployed precision, e.g. a
    checkpoint saved in the middle of a bit-width schedule before export."""
    for state in quantizer_states(model):
        _requests.pop(state.enabled.ref(), None)
    apply_deployed(model)


def _unset_ranges(model):
    """Layers whose 8-bit range variables (TF-MOT's "<name>_min"/"<name>_max" pairs) both hold
    0, as TF-MOT's input quantizer does until a batch passes in training."""
    ranges = {}
    for variable in model.variables:
        name = variable.name.split(":")[0]
        for end in ("_min", "_max"):
            if name.endswith(end) and variable.shape == ():
                ranges.setdefault(name[:-len(end)], []).append(float(variable.numpy()))
    return sorted({name.split("/")[0] for name, values in ranges.items() if values == [0.0, 0.0]})


def check_deployable(model, owner):
    """Raises unless a model holds kquant quantizers, every one on at its deployed bit-width.

    Args:
        model: the model about to be exported or run as integers.
        owner: the function asking, for the message.

    Raises:
        ValueError: if a quantizer is switched off or at another bit-width than it deploys at
            (the model would not be the one trained to be deployed), an 8-bit range was never
            set, or the model has no kquant quantizers.
    """
    states = quantizer_states(model)
    if not states:
        raise ValueError(f"{owner}: model {model.name!r} has no kquant quantizers; quantize it with "
                         "kquant.quantize_model first, or use convert_float for a float model.")
    off = sorted({s.layer for s in states if s.enabled.numpy() < 0.5})
    if off:
        raise ValueError(f"{owner}: quantizers of layers {off} are switched off; switch them on "
                         "(kquant.precision.set_deployed(model)) before export.")
    unset = _unset_ranges(model)
    if unset:
        raise ValueError(f"{owner}: the 8-bit ranges of layers {unset} are still [0, 0]: no data "
                         "has passed through the model; train it, or start its ranges with "
                         "kquant.calibrate_ranges(model, float_model, data), before export.")
    elsewhere = [f"{s.layer} ({s.role} at {int(s.bits.numpy())} bits, deployed at "
                 f"{s.quantizer.deploy_bits})" for s in states
                 if int(s.bits.numpy()) != s.quantizer.deploy_bits]
    if elsewhere:
        raise ValueError(f"{owner}: quantizers are not at the bit-width the model deploys at: "
                         f"{', '.join(elsewhere)} (a checkpoint from the middle of a bit-width "
                         "schedule?); kquant.precision.set_deployed(model) sets them, then export.")
