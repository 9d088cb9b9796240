"""Dense layers computed as 1x1 convolutions, so each output unit keeps its own weight step.

TF 2.21's converter cannot carry a per-output-unit FakeQuant through FULLY_CONNECTED's
transposed kernel, so a Dense kernel gets one step per layer. The same product written as a
1x1 convolution on a [1, 1, inputs] map exports as RESHAPE, CONV_2D (per-channel scales),
RESHAPE. `quantize_model` uses this form for Dense layers when the recipe asks per_channel.
"""
from kquant import graph
from kquant.backend import keras, tf
from kquant.serialization import serializable


@serializable()
class PointwiseDense(keras.layers.Conv2D):
    """y = x W + b for x of shape [batch, inputs], as a 1x1 convolution (kernel [1, 1, inputs,
    units]).

    Args:
        units: output units.
        **kwargs: those of `keras.layers.Conv2D` (kernel size and strides are 1).
    """

    def __init__(self, units=None, **kwargs):
        kwargs.pop("kernel_size", None)
        units = kwargs.pop("filters", units)
        super().__init__(units, 1, **kwargs)
        self.units = units
        self.input_spec = keras.layers.InputSpec(ndim=2)

    def build(self, input_shape):
        super().build([input_shape[0], 1, 1, input_shape[-1]])
        self.input_spec = keras.layers.InputSpec(ndim=2, axes={-1: input_shape[-1]})

    def call(self, inputs):
        y = self.convolution_op(tf.reshape(inputs, [-1, 1, 1, inputs.shape[-1]]), self.kernel)
        if self.use_bias:
            y = tf.nn.bias_add(y, self.bias)
        return self.activation(tf.reshape(y, [-1, self.units]))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.units])

    def get_build_config(self):
        # Built from its config, the layer builds when first called, as Keras' own layers do
        # inside a TF-MOT wrapper: built earlier, the wrapper tracks its kernel twice.
        return None


def pointwise_dense(model):
    """A copy of a functional model with each Dense layer on a [batch, inputs] tensor as a
    `PointwiseDense` of the same name and weights, or `model` itself if it has none."""
    chosen = {layer.name for layer in model.layers
              if type(layer) is keras.layers.Dense and len(layer.input_shape) == 2}
    if not chosen:
        return model

    def rewrite(entry):
        if entry["name"] not in chosen:
            return [entry]
        dense = entry["config"]
        return [graph.as_class(entry, PointwiseDense, {"units": dense["units"], **{
            key: dense[key] for key in (
                "name", "trainable", "dtype", "activation", "use_bias", "kernel_initializer",
                "bias_initializer", "kernel_regularizer", "bias_regularizer",
                "activity_regularizer", "kernel_constraint", "bias_constraint") if key in dense}})]

    def weights(layer):
        values = model.get_layer(layer.name).get_weights()
        if layer.name in chosen:  # [inputs, units] -> [1, 1, inputs, units]
            values[0] = values[0].reshape(1, 1, *values[0].shape)
        return values

    return graph.rebuilt(model, rewrite, weights=weights)
