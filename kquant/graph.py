"""Structure found in functional Keras models: who consumes a layer's output, residual blocks."""
import collections

from kquant.backend import keras


def consumers(model):
    """Maps each layer name to the layers that take its output as input, within `model`."""
    result = collections.defaultdict(list)
    for layer in model.layers:
        for node in layer._inbound_nodes:  # pylint: disable=protected-access
            for inbound in node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]:
                result[inbound.name].append(layer)
    return result


def is_sequential_or_functional(model):
    """True for Sequential and functional models, False for subclassed ones."""
    return isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)
