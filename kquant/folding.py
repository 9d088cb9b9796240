"""Batch norm folded into the conv before it during training, as TFLite deploys it.

The converter folds each batch norm into its conv: the deployed weights are w * gamma / sigma
on the int8 grid, not w on the grid with a float batch norm after it. `fold_batch_norms`
replaces each Conv2D/DepthwiseConv2D -> BatchNormalization pair of a float model by one
folded layer, so the weight quantizer sees the deployed (folded) kernel while training
(Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018, section 3.2; Krishnamoorthi, "Quantizing deep
convolutional networks for efficient inference", 2018, section 3.2.1).

Forward, with k = gamma / sqrt(moving_variance + eps) per output channel and a kquant weight
quantizer Q applied to the folded kernel w * k (`fold`; without one, Q is the identity):
  y = conv(x, Q(w * k))
  training, before the freeze: the batch statistics of y / k (the conv's output on the
    unfolded scale, one convolution as in PyTorch's QAT ConvBn) normalize it:
    (y / k + b - mean_B) * gamma / sqrt(var_B + eps) + beta, and the moving statistics update;
  inference, and training after `freeze_after` steps: y + (b - moving_mean) * k + beta, the
    deployed arithmetic.
Gradients reach w, gamma and beta through both forms (straight through Q).
"""

from kquant import graph
from kquant.backend import keras, tf
from kquant.serialization import serializable


class _Folded:
    """The batch-norm half of a folded layer (mixed into Conv2D and DepthwiseConv2D)."""

    def _init_folding(self, momentum, epsilon, freeze_after):
        # Set by a kquant weight quantizer that quantizes fold(kernel) itself: the kernel the
        # layer then receives is folded already.
        self.kernel_folded = False
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.freeze_after = None if freeze_after is None else int(freeze_after)

    def _build_folding(self, channels):
        def add(name, initializer, trainable=True, dtype=tf.float32):
            return self.add_weight(name, shape=() if name == "folded_steps" else (channels,),
                                   dtype=dtype, initializer=initializer, trainable=trainable)
        self.gamma = add("gamma", "ones")
        self.beta = add("beta", "zeros")
        self.moving_mean = add("moving_mean", "zeros", False)
        self.moving_variance = add("moving_variance", "ones", False)
        self.folded_steps = add("folded_steps", "zeros", False, tf.int64)

    def multiplier(self):
        """k = gamma / sqrt(moving_variance + eps) per output channel, as the converter folds it."""
        return self.gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)

    def folded_bias(self):
        """(b - moving_mean) * k + beta: the deployed bias."""
        bias = self.bias if self.use_bias else 0.0
        return (bias - self.moving_mean) * self.multiplier() + self.beta

    def _frozen(self):
        if self.freeze_after is None:
            return tf.constant(False)
        return self.folded_steps >= self.freeze_after

    def _normalized(self, y):
        """Training before the freeze: batch norm on y / k with the batch statistics."""
        k = self.multiplier()
        # A channel whose gamma reached 0 has k = 0 and y = 0: keep the division finite.
        k = tf.where(tf.abs(k) < 1e-12, tf.ones_like(k) * 1e-12, k)
        raw = y / k + (self.bias if self.use_bias else 0.0)
        mean, variance = tf.nn.moments(raw, axes=list(range(raw.shape.rank - 1)))
        # The steps count towards the freeze; after it nothing changes the statistics.
        updates = [self.moving_mean.assign(self.momentum * self.moving_mean +
                                           (1 - self.momentum) * mean),
                   self.moving_variance.assign(self.momentum * self.moving_variance +
                                               (1 - self.momentum) * variance),
                   self.folded_steps.assign_add(1)]
        with tf.control_dependencies(updates):
            return (raw - mean) * self.gamma * tf.math.rsqrt(variance + self.epsilon) + self.beta

    def _fold_output(self, y, training):
        if training is None:
            training = keras.backend.learning_phase()
        if isinstance(training, (bool, int)) and not training:
            return y + self.folded_bias()
        return tf.cond(tf.logical_and(tf.cast(training, tf.bool), tf.logical_not(self._frozen())),
                       lambda: self._normalized(y), lambda: y + self.folded_bias())

    def get_build_config(self):
        # Built from its config, the layer builds when first called, as Keras' own layers
        # do inside a TF-MOT wrapper: built earlier, the wrapper tracks its kernel twice.
        return None

    def _folding_config(self):
        return {"momentum": self.momentum, "epsilon": self.epsilon,
                "freeze_after": self.freeze_after}


@serializable()
class FoldedConv2D(_Folded, keras.layers.Conv2D):
    """Conv2D with the batch norm after it folded in (see the module docstring).

    Args:
        *args, **kwargs: those of `keras.layers.Conv2D` (linear activation).
        momentum, epsilon: those of the batch norm.
        freeze_after: training steps after which the moving statistics replace the batch
            statistics; None keeps batch statistics throughout training.
    """

    def __init__(self, *args, momentum=0.99, epsilon=1e-3, freeze_after=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_folding(momentum, epsilon, freeze_after)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_folding(self.filters)

    def fold(self, kernel):
        """The kernel the weight quantizer sees: w * k."""
        return kernel * self.multiplier()

    def call(self, inputs, training=None):
        kernel = self.kernel if self.kernel_folded else self.fold(self.kernel)
        return self._fold_output(self.convolution_op(inputs, kernel), training)

    def get_config(self):
        return {**super().get_config(), **self._folding_config()}


@serializable()
class FoldedDepthwiseConv2D(_Folded, keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D with the batch norm after it folded in (see the module docstring).

    Args:
        *args, **kwargs: those of `keras.layers.DepthwiseConv2D` (linear activation).
        momentum, epsilon, freeze_after: as for `FoldedConv2D`.
    """

    def __init__(self, *args, momentum=0.99, epsilon=1e-3, freeze_after=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_folding(momentum, epsilon, freeze_after)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_folding(int(input_shape[-1]) * self.depth_multiplier)

    def fold(self, kernel):
        """The kernel the weight quantizer sees: w * k, k per output (input x multiplier)."""
        return kernel * tf.reshape(self.multiplier(), kernel.shape[2:])

    def call(self, inputs, training=None):
        kernel = self.depthwise_kernel
        kernel = kernel if self.kernel_folded else self.fold(kernel)
        y = keras.backend.depthwise_conv2d(inputs, kernel, strides=self.strides,
                                           padding=self.padding, dilation_rate=self.dilation_rate,
                                           data_format=self.data_format)
        return self._fold_output(y, training)

    def get_config(self):
        return {**super().get_config(), **self._folding_config()}


_FOLDS = {keras.layers.Conv2D: FoldedConv2D, keras.layers.DepthwiseConv2D: FoldedDepthwiseConv2D}


def _foldable_pairs(model):
    """{batch norm name: conv layer} for each linear conv whose only consumer is a batch norm
    over the channels (with its gamma and beta)."""
    layer_consumers = graph.consumers(model)
    pairs = {}
    for layer in model.layers:
        following = layer_consumers.get(layer.name, [])
        if type(layer) in _FOLDS and graph.activation_name(layer) == "linear" and \
                len(following) == 1 and len(layer._inbound_nodes) == 1:  # pylint: disable=protected-access
            norm = following[0]
            if isinstance(norm, keras.layers.BatchNormalization) and norm.center and \
                    norm.scale and list(norm.axis) in ([-1], [3]):
                pairs[norm.name] = layer
    return pairs


def holds_folded_layers(model):
    """Whether a (quantized) model has layers with a batch norm folded in."""
    return any(isinstance(graph.unwrap(layer), _Folded) for layer in model.layers)


def fold_batch_norms(model, freeze_after=None):
    """A copy of a functional model with each conv -> batch norm pair folded into one layer.

    The folded layer takes the conv's name and both layers' weights, and computes the same
    function (inference: exactly the converter's folding; training: batch norm).

    Args:
        model: a built functional tf_keras model.
        freeze_after: training steps after which folded layers use their moving statistics
            (None: never).

    Returns:
        The new model, or `model` itself if it has no pair to fold.
    """
    pairs = _foldable_pairs(model)
    if not pairs:
        return model
    convs = {conv.name: norm for norm, conv in pairs.items()}

    def rewrite(entry):
        if entry["name"] in pairs:
            return []
        if entry["name"] not in convs:
            return [entry]
        norm = model.get_layer(convs[entry["name"]])
        return [graph.as_class(entry, _FOLDS[type(model.get_layer(entry["name"]))], {
            **entry["config"], "momentum": norm.momentum, "epsilon": norm.epsilon,
            "freeze_after": freeze_after})]

    def weights(layer):
        values = model.get_layer(layer.name).get_weights()
        if layer.name in convs:  # the conv's, the batch norm's, and the step counter
            values += model.get_layer(convs[layer.name]).get_weights() + [0]
        return values

    return graph.rebuilt(model, rewrite, {norm: conv.name for norm, conv in pairs.items()},
                         weights)
