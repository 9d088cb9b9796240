"""quantize_model: a float Keras model in, a TF-MOT quantization-aware model out."""
import contextlib

from kquant import configs, graph, quantizers
from kquant.backend import default_8bit_transforms, keras, model_transformer, tfmot
from kquant.callbacks.direct_levels import initialize_levels
from kquant.recipe import Recipe

_tfmot_keras = tfmot.quantization.keras


def custom_objects():
    """Every class a saved kquant model refers to, for `load_model(custom_objects=...)`."""
    objects = {cls.__name__: cls for cls in (
        configs.WeightLayerConfig, configs.OutputConfig, quantizers.DoReFaWeightQuantizer,
        quantizers.ClippedActivationQuantizer, quantizers.PACTQuantizer,
        quantizers.DirectLevelsWeightQuantizer, quantizers.ChannelAwareActivationQuantizer)}
    objects.update({f"kquant>{name}": cls for name, cls in list(objects.items())})
    return objects


@contextlib.contextmanager
def quantize_scope():
    """Scope in which kquant and TF-MOT objects deserialize, e.g. for `load_model` of HDF5 files.

    Example:
        with kquant.quantize_scope():
            model = keras.models.load_model("w4a4.h5")
    """
    with _tfmot_keras.quantize_scope(custom_objects()):
        yield


class _LayoutTransform(_tfmot_keras.QuantizeLayoutTransform):
    """Adds the 8-bit input quantizer; every other decision is already in the annotations."""

    def apply(self, model, layer_quantize_map):
        return model_transformer.ModelTransformer(
            model, [default_8bit_transforms.InputLayerQuantize()], set(layer_quantize_map),
            layer_quantize_map).transform()


class _Registry(_tfmot_keras.QuantizeRegistry):
    """kquant annotates every layer itself, so the registry is asked about none."""

    def get_quantize_config(self, layer):
        raise ValueError(f"kquant: layer {layer.name!r} reached quantize_apply without a config.")

    def supports(self, layer):
        return False


class QuantizeScheme(_tfmot_keras.QuantizeScheme):
    """kquant's TF-MOT scheme: the input quantizer transform and an empty registry."""

    def get_layout_transformer(self):
        return _LayoutTransform()

    def get_quantize_registry(self):
        return _Registry()


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"quantize_model: expected a tf_keras (Keras 2) Model, got {type(model).__module__}."
            f"{type(model).__name__}. Build the model with `from kquant.backend import keras` "
            "(or `import tf_keras as keras`); Keras 3 models cannot go through TF-MOT.")
    if not graph.is_sequential_or_functional(model):
        raise ValueError(f"quantize_model: model {model.name!r} is a subclassed model; kquant needs "
                         "a Sequential or functional model whose layers it can see.")
    if not model.built:
        raise ValueError(f"quantize_model: model {model.name!r} is not built; give its first layer "
                         "an input shape or call `model.build(input_shape)` first.")


def plan(model, recipe):
    """Returns {layer name: QuantizeConfig} for every layer of a float model.

    Raises:
        ValueError: naming every layer kquant cannot quantize and why.
    """
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    weight_layers = [layer for layer in layers if type(layer) in configs.WEIGHT_LAYERS]
    edges = {weight_layers[0].name, weight_layers[-1].name} if weight_layers else set()
    layer_consumers = graph.consumers(model)
    result, problems = {}, []
    for layer in layers:
        config = configs.config_for(layer, recipe, layer_consumers.get(layer.name, []),
                                    layer.name in edges)
        if isinstance(config, str):
            problems.append(f"  {layer.name} ({type(layer).__name__}): {config}")
        else:
            result[layer.name] = config
    if problems:
        raise ValueError("quantize_model: kquant cannot quantize these layers of model "
                         f"{model.name!r}:\n" + "\n".join(problems) +
                         "\nReplace them, or quantize them yourself with "
                         "tfmot.quantization.keras.quantize_annotate_layer and a QuantizeConfig.")
    return result


def quantize_model(model, recipe=None):
    """Turns a float Keras model into a quantization-aware one that trains with `fit`.

    Weights of conv, depthwise and dense layers get the recipe's weight quantizer; ReLU/ReLU6
    activations are replaced by its activation quantizer; batch norm stays as a float layer in
    training and is folded into the conv by the TFLite converter; other requantization points
    get 8-bit ranges (see `kquant.configs`). The float weights are copied over, and learnable
    weight levels start from them.

    Args:
        model: a built Sequential or functional tf_keras model.
        recipe: a `Recipe`; defaults to `Recipe()` (W4A4, DoReFa, first/last layer at 8 bits).

    Returns:
        A new functional model of TF-MOT `QuantizeWrapperV2` layers.

    Raises:
        TypeError: if the model is not a tf_keras model.
        ValueError: if the model is subclassed, unbuilt, or has layers kquant cannot quantize.
    """
    _check_model(model)
    recipe = recipe or Recipe()
    layer_configs = plan(model, recipe)

    def annotate(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        return _tfmot_keras.quantize_annotate_layer(fresh, layer_configs[layer.name])

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    with quantize_scope():
        quantized = _tfmot_keras.quantize_apply(annotated, scheme=QuantizeScheme())
    initialize_levels(quantized)  # learnable levels start from the float weights just copied in
    return quantized
