"""What to quantize in each layer type: TF-MOT QuantizeConfigs and the rules that pick them.

A layer's output is requantized (gets an int8 grid) only where TFLite will hold it as a tensor
of its own: a conv or dense output that goes straight into batch norm or an activation is not,
because the converter fuses them; an activation layer's output is, on the low-bit grid; every
other requantization point (a batch norm or Add feeding no activation, average pooling, the
logits) gets an 8-bit range learned from data, as TF-MOT's default scheme does.
"""
from kquant import eight_bit
from kquant.backend import keras, tfmot
from kquant.eight_bit import eight_bit_output_quantizer
from kquant.folding import FoldedConv2D, FoldedDepthwiseConv2D
from kquant.graph import ACTIVATIONS, activation_name, is_activation_layer, producers
from kquant.pointwise_dense import PointwiseDense
from kquant.serialization import serializable

WEIGHT_LAYERS = {keras.layers.Conv2D: "kernel", keras.layers.Dense: "kernel",
                 keras.layers.DepthwiseConv2D: "depthwise_kernel", FoldedConv2D: "kernel",
                 FoldedDepthwiseConv2D: "depthwise_kernel", PointwiseDense: "kernel"}
MERGE_LAYERS = (keras.layers.Add, keras.layers.Concatenate)
AVERAGE_POOLING = (keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D)
PASS_THROUGH = (keras.layers.MaxPooling2D, keras.layers.GlobalMaxPooling2D, keras.layers.Flatten,
                keras.layers.Reshape, keras.layers.Dropout, keras.layers.ZeroPadding2D,
                keras.layers.SpatialDropout2D, keras.layers.Cropping2D, keras.layers.Permute)


def _serialize(quantizer):
    return keras.utils.serialize_keras_object(quantizer) if quantizer is not None else None


def _deserialize(config):
    return keras.utils.deserialize_keras_object(config) if config is not None else None


@serializable()
class OutputConfig(tfmot.quantization.keras.QuantizeConfig):
    """Layers without weights (activations, batch norm, Add, pooling): quantize the output, or not.

    Args:
        output_quantizer: quantizer of the layer's output; None passes the layer through.
        why: the rule that chose it, for `kquant.describe`.
    """

    def __init__(self, output_quantizer=None, why=""):
        self.output_quantizer = output_quantizer
        self.why = why

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
        return {"output_quantizer": _serialize(self.output_quantizer), "why": self.why}

    @classmethod
    def from_config(cls, config):
        return cls(_deserialize(config["output_quantizer"]), config.get("why", ""))


@serializable()
class WeightLayerConfig(OutputConfig):
    """Conv2D, DepthwiseConv2D and Dense: quantize the kernel, and the output where needed.

    Args:
        weight_quantizer: the kernel's quantizer.
        output_quantizer: quantizer of the layer's output, or None.
        weight_attribute: the layer attribute holding the kernel.
        why: the rule that chose the output quantizer, for `kquant.describe`.
    """

    def __init__(self, weight_quantizer, output_quantizer=None, weight_attribute="kernel", why=""):
        super().__init__(output_quantizer, why)
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
                   _deserialize(config["output_quantizer"]), config["weight_attribute"],
                   config.get("why", ""))


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
    fused_why = "no output of its own: TFLite fuses it with the ReLU or batch norm after it"
    learned_why = "8-bit output: a requantization point with no low-bit grid"
    activation = activation_name(layer)
    if type(layer) in WEIGHT_LAYERS:  # exact types: Conv2DTranspose's kernel layout differs
        attribute = WEIGHT_LAYERS[type(layer)]
        if activation in ACTIVATIONS:
            output, why = _activation_quantizer(layer, recipe, layer_consumers), \
                f"low-bit output: the {activation} fused into it"
        elif activation == "linear":
            output, why = (None, fused_why) if feeds_fused else \
                (eight_bit_output_quantizer(), learned_why)
        else:
            return f"activation {activation!r} inside the layer: LiteRT has no integer kernel for it"
        return WeightLayerConfig(recipe.weight_quantizer_for(layer, first_or_last), output,
                                 attribute, why)
    if is_activation_layer(layer):
        return OutputConfig(_activation_quantizer(layer, recipe, layer_consumers),
                            f"low-bit output: {activation}")
    if activation is not None and isinstance(layer, (keras.layers.ReLU, keras.layers.Activation,
                                                     keras.layers.LeakyReLU, keras.layers.PReLU,
                                                     keras.layers.Softmax)):
        rule = eight_bit.activation_output(activation)
        if rule is None:
            return f"activation {activation!r}: LiteRT has no integer kernel for it"
        return OutputConfig(*rule)
    if isinstance(layer, keras.layers.BatchNormalization):
        return OutputConfig(None, fused_why) if feeds_activation else \
            OutputConfig(eight_bit_output_quantizer(), learned_why)
    if isinstance(layer, MERGE_LAYERS):
        # The converter folds an activation quantizer's shift of its input (sign, sparse codes)
        # into a conv's bias, not into an Add: there the sum gets an int8 tensor of its own.
        fused = feeds_activation and not any(
            recipe.activation_quantizer_for(c).input_shift for c in layer_consumers)
        return OutputConfig(None, fused_why) if fused else \
            OutputConfig(eight_bit_output_quantizer(), learned_why)
    if isinstance(layer, keras.layers.AveragePooling2D) and not any(
            is_activation_layer(p) or activation_name(p) in ACTIVATIONS for p in producers(layer)):
        # LiteRT's AVERAGE_POOL_2D keeps its input's scale; the converter refuses a range of
        # its own after an 8-bit tensor (after a low-bit grid it adds a QUANTIZE).
        return OutputConfig(None, "keeps its 8-bit input's scale, as LiteRT's AVERAGE_POOL_2D does")
    if isinstance(layer, AVERAGE_POOLING):
        return OutputConfig(eight_bit_output_quantizer(), learned_why)
    if isinstance(layer, eight_bit.ELEMENTWISE_LAYERS):
        return OutputConfig(eight_bit_output_quantizer(),
                            f"8-bit output: no low-bit rule for {type(layer).__name__}")
    if isinstance(layer, PASS_THROUGH):
        return OutputConfig(None, "pass-through: moves or picks int8 values, computes none")
    if isinstance(layer, keras.Model):
        return "a nested model; build the model flat (call the inner model's layers directly)"
    if type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda", "Lambda"):
        return ("a TensorFlow op or Lambda applied to a Keras tensor (such as `x + 3.0`); write "
                "it with Keras layers (Add, Multiply, Rescaling, an Activation)")
    return f"no kquant rule for {type(layer).__name__}"


SUPPORTED = ("Conv2D, DepthwiseConv2D, Dense; ReLU/ReLU6 (low-bit); sigmoid, softmax, tanh, "
             "swish, gelu, hard_sigmoid, LeakyReLU, PReLU (8-bit); BatchNormalization, Add, "
             "Concatenate, Multiply, Subtract, Average, Maximum, Minimum, Rescaling, "
             "Normalization, UpSampling2D, pooling, Flatten, Reshape, Permute, Cropping2D, "
             "ZeroPadding2D, Dropout")
