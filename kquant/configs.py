"""What to quantize in each layer type: TF-MOT QuantizeConfigs and the rules that pick them.

A layer's output is requantized (gets an int8 grid) only where TFLite will hold it as a tensor
of its own: a conv or dense output that goes straight into batch norm or an activation is not,
because the converter fuses them; an activation layer's output is, on the low-bit grid; every
other requantization point (a batch norm or Add feeding no activation, average pooling, the
logits) gets an 8-bit range learned from data, as TF-MOT's default scheme does.
"""
from kquant.backend import keras, tfmot
from kquant.folding import FoldedConv2D, FoldedDepthwiseConv2D
from kquant.graph import ACTIVATIONS, activation_name, is_activation_layer
from kquant.serialization import serializable

WEIGHT_LAYERS = {keras.layers.Conv2D: "kernel", keras.layers.Dense: "kernel",
                 keras.layers.DepthwiseConv2D: "depthwise_kernel", FoldedConv2D: "kernel",
                 FoldedDepthwiseConv2D: "depthwise_kernel"}
MERGE_LAYERS = (keras.layers.Add, keras.layers.Concatenate)
AVERAGE_POOLING = (keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D)
PASS_THROUGH = (keras.layers.MaxPooling2D, keras.layers.GlobalMaxPooling2D, keras.layers.Flatten,
                keras.layers.Reshape, keras.layers.Dropout, keras.layers.ZeroPadding2D)


def eight_bit_output_quantizer():
    """The 8-bit, data-calibrated range of TF-MOT's default scheme, for requantization points."""
    return tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


def _serialize(quantizer):
    return keras.utils.serialize_keras_object(quantizer) if quantizer is not None else None


def _deserialize(config):
    return keras.utils.deserialize_keras_object(config) if config is not None else None


@serializable()
class OutputConfig(tfmot.quantization.keras.QuantizeConfig):
    """Layers without weights (activations, batch norm, Add, pooling): quantize the output, or not.

    Args:
        output_quantizer: quantizer of the layer's output; None passes the layer through.
    """

    def __init__(self, output_quantizer=None):
        self.output_quantizer = output_quantizer

    def get_weights_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def get_activations_and_quantizers(self, layer):
        # Inline activations are quantized at the output instead (see `config_for`).
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [self.output_quantizer] if self.output_quantizer is not None else []

    def get_config(self):
        return {"output_quantizer": _serialize(self.output_quantizer)}

    @classmethod
    def from_config(cls, config):
        return cls(_deserialize(config["output_quantizer"]))


@serializable()
class WeightLayerConfig(OutputConfig):
    """Conv2D, DepthwiseConv2D and Dense: quantize the kernel, and the output where needed.

    Args:
        weight_quantizer: the kernel's quantizer.
        output_quantizer: quantizer of the layer's output, or None.
        weight_attribute: the layer attribute holding the kernel.
    """

    def __init__(self, weight_quantizer, output_quantizer=None, weight_attribute="kernel"):
        super().__init__(output_quantizer)
        self.weight_quantizer = weight_quantizer
        self.weight_attribute = weight_attribute

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, self.weight_attribute), self.weight_quantizer)]

    def set_quantize_weights(self, layer, quantize_weights):
        setattr(layer, self.weight_attribute, quantize_weights[0])

    def get_config(self):
        return {**super().get_config(), "weight_quantizer": _serialize(self.weight_quantizer),
                "weight_attribute": self.weight_attribute}

    @classmethod
    def from_config(cls, config):
        return cls(_deserialize(config["weight_quantizer"]),
                   _deserialize(config["output_quantizer"]), config["weight_attribute"])


def _activation_quantizer(layer, recipe, layer_consumers):
    quantizer = recipe.activation_quantizer_for(layer)
    quantizer.input_rectified = not quantizer.replaces_activation  # it sits on a ReLU(6)
    quantizer.standalone = any(isinstance(c, keras.layers.Concatenate) for c in layer_consumers)
    return quantizer


def config_for(layer, recipe, layer_consumers, first_or_last):
    """Picks the QuantizeConfig of one layer.

    Args:
        layer: the float layer.
        recipe: the `Recipe`.
        layer_consumers: the layers that take this layer's output.
        first_or_last: whether this is the first or last weight layer.

    Returns:
        A QuantizeConfig, or a string saying why the layer cannot be quantized.
    """
    feeds_fused = bool(layer_consumers) and all(
        is_activation_layer(c) or isinstance(c, keras.layers.BatchNormalization)
        for c in layer_consumers)
    feeds_activation = bool(layer_consumers) and all(is_activation_layer(c) for c in layer_consumers)
    if type(layer) in WEIGHT_LAYERS:  # exact types: Conv2DTranspose's kernel layout differs
        attribute = WEIGHT_LAYERS[type(layer)]
        activation = activation_name(layer)
        if activation in ACTIVATIONS:
            output = _activation_quantizer(layer, recipe, layer_consumers)
        elif activation == "linear":
            output = None if feeds_fused else eight_bit_output_quantizer()
        else:
            return (f"activation {activation!r} inside the layer; use a linear layer followed by "
                    "a ReLU/ReLU6 layer, or output logits and train with from_logits=True")
        return WeightLayerConfig(recipe.weight_quantizer_for(layer, first_or_last), output, attribute)
    if is_activation_layer(layer):
        return OutputConfig(_activation_quantizer(layer, recipe, layer_consumers))
    if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
        return (f"activation {activation_name(layer)!r}; kquant quantizes ReLU and ReLU6 "
                "(Activation('relu'/'relu6') or ReLU layers)")
    if isinstance(layer, keras.layers.BatchNormalization):
        return OutputConfig(None if feeds_activation else eight_bit_output_quantizer())
    if isinstance(layer, MERGE_LAYERS):
        # The converter folds an activation quantizer's shift of its input (sign, sparse codes)
        # into a conv's bias, not into an Add: there the sum gets an int8 tensor of its own.
        fused = feeds_activation and not any(
            recipe.activation_quantizer_for(c).input_shift for c in layer_consumers)
        return OutputConfig(None if fused else eight_bit_output_quantizer())
    if isinstance(layer, AVERAGE_POOLING):
        return OutputConfig(eight_bit_output_quantizer())
    if isinstance(layer, PASS_THROUGH):
        return OutputConfig(None)
    if isinstance(layer, keras.Model):
        return "a nested model; build the model flat (call the inner model's layers directly)"
    return (f"no kquant rule for {type(layer).__name__}; supported: Conv2D, DepthwiseConv2D, "
            "Dense, ReLU/ReLU6, BatchNormalization, Add, Concatenate, pooling, Flatten, Reshape, "
            "Dropout, ZeroPadding2D")
