"""A weight layer's activation other than ReLU/ReLU6 (a softmax head, a sigmoid gate, swish)
as an Activation layer of its own.

TFLite fuses only ReLU/ReLU6 into a conv or dense op; any other activation runs as an op of
its own on the layer's int8 output, so that output needs a quantizer before the activation,
and the activation its own output quantizer. Split, each gets one (`kquant.configs`).
"""
from kquant import graph
from kquant.backend import keras
from kquant.eight_bit import INTEGER_ACTIVATIONS

_WEIGHT_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def split_activations(model):
    """A copy of a functional model in which every conv/dense activation TFLite does not fuse
    but runs in int8 (`kquant.eight_bit.INTEGER_ACTIVATIONS`) follows as an `Activation`
    layer named "<layer>_<activation>".

    Args:
        model: a built functional tf_keras model.

    Returns:
        The new model (same weights), or `model` itself if no layer needs splitting.
    """
    split = {layer.name: graph.activation_name(layer) for layer in model.layers
             if isinstance(layer, _WEIGHT_TYPES)
             and graph.activation_name(layer) in INTEGER_ACTIVATIONS}
    if not split:
        return model
    renames = {name: f"{name}_{activation}" for name, activation in split.items()}

    def rewrite(entry):
        if entry["name"] not in split:
            return [entry]
        entry["config"]["activation"] = "linear"
        return [entry, {"class_name": "Activation", "name": renames[entry["name"]],
                        "config": {"name": renames[entry["name"]],
                                   "activation": split[entry["name"]],
                                   "trainable": entry["config"].get("trainable", True),
                                   "dtype": entry["config"].get("dtype", "float32")},
                        "inbound_nodes": [[[entry["name"], 0, 0, {}]]]}]

    return graph.rebuilt(model, rewrite, renames)

