"""Structure found in functional Keras models: activation layers, who consumes a layer's
output, residual blocks; and a copy of such a model with some layers rewritten."""
import collections
import copy

from kquant.backend import QuantizeLayer, keras

ACTIVATIONS = {"relu", "relu6"}


def activation_name(layer):
    """The activation a layer applies ("relu", "relu6", "linear", ...), or None if it has none.

    A ReLU layer counts as "relu" or "relu6" only in its plain forms (no slope, no threshold).
    """
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return "leaky or thresholded ReLU"
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else f"ReLU(max_value={layer.max_value})"
    if isinstance(layer, (keras.layers.LeakyReLU, keras.layers.PReLU)):
        return "leaky_relu" if isinstance(layer, keras.layers.LeakyReLU) else "prelu"
    if isinstance(layer, keras.layers.Softmax):
        return "softmax" if layer.axis in (-1, [-1]) else f"softmax(axis={layer.axis})"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return keras.activations.serialize(activation) if callable(activation) else str(activation)


def is_activation_layer(layer):
    """Whether a layer is a ReLU or ReLU6 of its own (a ReLU layer or an Activation layer)."""
    return isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)) and \
        activation_name(layer) in ACTIVATIONS


def consumers(model):
    """Maps each layer name to the layers that take its output as input, within `model`."""
    result = collections.defaultdict(list)
    for layer in model.layers:
        for node in layer._inbound_nodes:  # pylint: disable=protected-access
            for inbound in node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]:
                result[inbound.name].append(layer)
    return result


def producers(layer):
    """The layers whose outputs `layer` takes (at its first call)."""
    inbound = layer._inbound_nodes[0].inbound_layers  # pylint: disable=protected-access
    return inbound if isinstance(inbound, list) else [inbound]


def renamed(value, names):
    """`value` (a layer config's inbound nodes or a model's output list) with every layer
    name in `names` replaced by its value."""
    if isinstance(value, list):
        return [renamed(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


def rebuilt(model, rewrite, renames=None, weights=None):
    """A copy of a functional model whose layer configs pass through `rewrite`.

    Args:
        model: a built functional tf_keras model.
        rewrite: called with each layer's config entry (a copy, inbound nodes already renamed);
            returns the entries that replace it (none drops the layer, two insert one after).
        renames: {old layer name: new name} for the inbound nodes and outputs of the copy.
        weights: called with each layer of the copy that the model has by name; returns its
            weights (default: that layer's). Layers the rewrite inserted keep their own.

    Returns:
        The new model.
    """
    renames = renames or {}
    config = copy.deepcopy(model.get_config())
    layers = []
    for entry in config["layers"]:
        entry["inbound_nodes"] = renamed(entry["inbound_nodes"], renames)
        layers.extend(rewrite(entry))
    config.update(layers=layers, output_layers=renamed(config["output_layers"], renames))
    result = keras.Model.from_config(config)
    sources = {layer.name: layer for layer in model.layers}
    for layer in result.layers:
        if layer.name in sources:
            layer.set_weights(weights(layer) if weights else sources[layer.name].get_weights())
    return result


def as_class(entry, cls, config):
    """A layer config entry turned into a (registered, serializable) `cls` with `config`."""
    name = keras.utils.get_registered_name(cls)
    entry = dict(entry, class_name=name, registered_name=name, config=config)
    entry.pop("module", None)
    return entry


def is_sequential_or_functional(model):
    """True for Sequential and functional models, False for subclassed ones."""
    return isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)


def unwrap(layer):
    """The float layer inside a TF-MOT wrapper (or the layer itself)."""
    return getattr(layer, "layer", layer)


def residual_units(model):
    """Splits a functional model into units that end at each residual Add (and its activation).

    A unit also ends where the model forks into a residual block (a layer whose output feeds an
    Add and another layer), so the layers before the first block (the stem) and after the
    last (the head) form units of their own. Only layers with weights or quantizers matter to
    callers; the input and TF-MOT's input quantizer are left out. Names are those of the float
    layers (inside TF-MOT wrappers).

    Returns:
        A list of lists of layer names, in order.

    Raises:
        ValueError: if the model has no residual Add layers.
    """
    layer_consumers = consumers(model)
    units, current, close_at = [], [], None
    for layer in model.layers:
        inner = unwrap(layer)
        if isinstance(layer, (keras.layers.InputLayer, QuantizeLayer)):
            continue
        current.append(inner.name)
        following = layer_consumers.get(layer.name, [])
        if len(following) > 1 and any(isinstance(unwrap(c), keras.layers.Add) for c in following):
            units.append(current)
            current = []
            continue
        if isinstance(inner, keras.layers.Add):
            if len(following) == 1 and is_activation_layer(unwrap(following[0])):
                close_at = following[0].name
                continue
            close_at = layer.name
        if layer.name == close_at:
            units.append(current)
            current, close_at = [], None
    if not units:
        raise ValueError(f"residual_units: model {model.name!r} has no residual Add layers; give "
                         "the units by layer name, or use one unit per layer.")
    if current:
        units.append(current)
    return units


def residual_adds(model):
    """Names of a model's Add layers (inside TF-MOT wrappers too), in order: the outputs of
    its residual blocks, before their activations."""
    return [unwrap(layer).name for layer in model.layers
            if isinstance(unwrap(layer), keras.layers.Add)]


def find_layer(model, name):
    """The layer of `model` named `name`, or wrapping a layer of that name; None if there is
    none."""
    return next((layer for layer in model.layers if name in (layer.name, unwrap(layer).name)),
                None)
