"""quantize_model: a float Keras model in, a TF-MOT quantization-aware model out."""
from kquant import configs, folding, graph
from kquant.backend import QuantizeLayer, default_8bit_transforms, keras, model_transformer, tfmot
from kquant.pointwise_dense import pointwise_dense
from kquant.quantizers.model_states import quantizer_states
from kquant.recipe import Recipe
from kquant.replicas import InputRangeQuantizer
from kquant.serialization import quantize_scope, serializable
from kquant.split_activations import split_activations

_tfmot_keras = tfmot.quantization.keras


@serializable()
class InputQuantizer(QuantizeLayer):
    """TF-MOT's input quantizer (the 8-bit input range), marked built by `build`, whose range
    every replica of a distribution strategy shares (`InputRangeQuantizer`).

    TF-MOT's `QuantizeLayer.build` leaves `built` False, so loading a `.keras` file built it
    a second time ("expected 5 variables, but received 3").
    """

    def __init__(self, quantizer, **kwargs):
        if type(quantizer) is _tfmot_keras.quantizers.AllValuesQuantizer:
            quantizer = InputRangeQuantizer(**quantizer.get_config())
        super().__init__(quantizer, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        self.built = True


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
                         f"\nkquant quantizes: {configs.SUPPORTED}.\nReplace them, or quantize "
                         "them yourself with tfmot.quantization.keras.quantize_annotate_layer "
                         "and a QuantizeConfig.")
    return result


def quantize_model(model, recipe=None):
    """Turns a float Keras model into a quantization-aware one that trains with `fit`.

    Weights of conv, depthwise and dense layers get the recipe's weight quantizer; ReLU/ReLU6
    activations are replaced by its activation quantizer; layers with no low-bit rule that
    LiteRT runs in int8 (sigmoid, softmax, swish, Multiply, Rescaling, ...) get 8-bit outputs
    (`kquant.eight_bit`), a conv's or dense layer's own such activation split off as a layer
    of its own; batch norm stays as a float layer in
    training and is folded into the conv by the TFLite converter; other requantization points
    get 8-bit ranges (see `kquant.configs`); with `Recipe(fold_batch_norm=True)` each conv and
    its batch norm train as one folded layer instead (`kquant.folding`). The float weights
    are copied over, and each weight quantizer starts from them (`initialize_weight_quantizers`).

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
    if isinstance(model, keras.Sequential):  # as functional, it gets kquant's input quantizer
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    model = split_activations(model)
    if recipe.per_channel:  # Dense kernels get a step per output unit only in this form
        model = pointwise_dense(model)
    if recipe.fold_batch_norm:
        model = folding.fold_batch_norms(model, recipe.freeze_batch_norm_after)
    layer_configs = plan(model, recipe)

    def annotate(layer):
        return _tfmot_keras.quantize_annotate_layer(_fresh_layer(layer, layer_configs[layer.name]),
                                                    layer_configs[layer.name])

    annotated = keras.models.clone_model(model, clone_function=annotate)
    with quantize_scope():
        applied = _tfmot_keras.quantize_apply(annotated, scheme=QuantizeScheme())
        # Rebuilt from its config, the model has the layout a loaded one has (the one
        # `quantize_apply` returns tracks each kernel twice), so it saves and loads in every format.
        quantized = keras.Model.from_config(_rebuild_config(applied.get_config()))
    _copy_float_weights(model, quantized)
    initialize_weight_quantizers(quantized)
    return quantized


def _fresh_layer(layer, layer_config):
    """A new copy of a float layer; linear where its output quantizer replaces the activation
    (e.g. the sign of binary networks, which needs the pre-activation)."""
    config = layer.get_config()
    if getattr(getattr(layer_config, "output_quantizer", None), "replaces_activation", False):
        if graph.is_activation_layer(layer):
            return keras.layers.Activation("linear", name=layer.name)
        config["activation"] = "linear"
    return layer.__class__.from_config(config)


def _rebuild_config(config):
    """The config `quantize_model` rebuilds its model from: TF-MOT's input QuantizeLayer
    becomes `InputQuantizer`, and without the layers' "build_config"s each layer builds when
    the model calls it, inside its name scope, so variable names stay unique
    ("quant_conv/kernel_bits"; optimizer slots and HDF5 files are keyed by them)."""
    if isinstance(config, list):
        return [_rebuild_config(v) for v in config]
    if not isinstance(config, dict):
        return config
    config = {k: _rebuild_config(v) for k, v in config.items() if k != "build_config"}
    if config.get("class_name") == "QuantizeLayer":
        config.update(class_name=keras.utils.get_registered_name(InputQuantizer),
                      registered_name=keras.utils.get_registered_name(InputQuantizer))
    return config


def _copy_float_weights(float_model, quantized):
    """Assigns every float layer's weights (kernel, bias, gamma, ...) to the variable of the
    same name in its wrapper, which tracks them beside its quantizers' variables."""
    def short(variable):
        return variable.name.split("/")[-1]

    float_layers = {layer.name: layer for layer in float_model.layers}
    for layer in quantized.layers:
        source = float_layers.get(getattr(layer, "layer", layer).name)
        targets = {short(v): v for v in layer.weights}
        for weight in getattr(source, "weights", []):
            if short(weight) not in targets:
                raise ValueError(f"quantize_model: layer {source.name!r} has weight "
                                 f"{weight.name!r} with no counterpart in its quantized layer.")
            targets[short(weight)].assign(weight)


def initialize_weight_quantizers(model):
    """Starts every weight quantizer of `model` from its current (float) kernel.

    `quantize_model` calls it; call it again after loading other float weights into the
    layers (learnable levels start from the kernels; most quantizers have nothing to start).
    """
    for state in quantizer_states(model):
        if state.role == "weight":  # the kernel it quantizes: with batch norm folded in
            state.quantizer.initialize(state.variables, state.quantizer.fold(state.kernel))
