"""Data-driven starting values for the learned ranges of a freshly quantized model."""
import numpy as np

from kquant import folding
from kquant.backend import QuantizeLayer, keras, tfmot
from kquant.batches import image_batches
from kquant.quantizers.model_states import quantizer_states


def _eight_bit_ranges(model):
    """{layer name: variables} of the 8-bit min/max output ranges (TF-MOT's quantizers)."""
    return {layer.layer.name: layer._output_quantizer_vars  # pylint: disable=protected-access
            for layer in model.layers
            if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2)
            and "min_var" in getattr(layer, "_output_quantizer_vars", {})}


def calibrate_ranges(model, float_model, data, max_batches=4):
    """Starts a kquant model's learned ranges from the float model's activations.

    A fixed start fits no network: TF-MOT's 8-bit ranges begin at [-6, 6] (clipping the logits
    and the inputs of residual Adds) and PACT's clip at 6. Measured in training mode on the
    CIFAR-10 ResNet-20 checkpoint, those starting ranges alone, every low-bit quantizer off,
    cost 9 points of accuracy. Here every activation quantizer starts itself from the float
    activations at its layer (its `initialize`: PACT at a percentile, channel-aware at its own
    fit; fixed ranges have nothing to start), each 8-bit range at the min and max of the float
    output there, and the input range at the min and max of the images, so quantization-aware
    training starts near the float model.

    Args:
        model: a model from `kquant.quantize_model`.
        float_model: the float model it was made from (same layer names).
        data: batches of images or (images, labels), an array of images or an (images, labels)
            pair of arrays (`kquant.batches.image_batches`).
        max_batches: how many batches to look at.

    Returns:
        {layer name: what was set (a clip, or (min, max))} ("input" for the input range).

    Raises:
        ValueError: if the float model lacks one of the quantized layers, or `data` holds no
            images the model takes.
    """
    if folding.holds_folded_layers(model):  # a folded layer's output is its batch norm's
        float_model = folding.fold_batch_norms(float_model)
    activations = {s.layer: s for s in quantizer_states(model) if s.role == "activation"}
    ranges = _eight_bit_ranges(model)
    targets = list(dict.fromkeys([*activations, *ranges]))
    missing = sorted(set(targets) - {layer.name for layer in float_model.layers})
    if missing:
        raise ValueError(f"calibrate_ranges: float model {float_model.name!r} has no layers "
                         f"{missing}; pass the model that was quantized.")
    probe = keras.Model(float_model.inputs, [float_model.get_layer(n).output for n in targets])
    collected = {name: [] for name in ["input", *targets]}
    for i, (images, _) in enumerate(image_batches(data, model.input_shape, "calibrate_ranges")):
        if i >= max_batches:
            break
        collected["input"].append(images)
        outputs = probe(images, training=False)
        for name, output in zip(targets, outputs if isinstance(outputs, (list, tuple)) else [outputs]):
            collected[name].append(np.asarray(output))
    if not collected["input"]:
        raise ValueError("calibrate_ranges: data yielded no images; pass a few batches of "
                         "training images (e.g. data.train.take(4)).")
    values = {name: np.concatenate(parts) for name, parts in collected.items()}
    chosen = {}
    for name, state in activations.items():
        result = state.quantizer.initialize(state.variables, values[name])
        if result is not None:
            chosen[name] = result
    for name, variables in ranges.items():
        chosen[name] = _assign_range(variables, values[name])
    inputs = [layer for layer in model.layers if isinstance(layer, QuantizeLayer)]
    if inputs:
        chosen["input"] = _assign_range(inputs[0].quantizer_vars, values["input"])
    return chosen


def _assign_range(variables, values):
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)  # keep 0 exact
    variables["min_var"].assign(low)
    variables["max_var"].assign(high)
    return low, high
