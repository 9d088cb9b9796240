"""The conv + batch-norm building block every reference model is made of."""
from kquant.backend import keras

WEIGHT_DECAY = 5e-5  # L2 on kernels; Keras' L2 gradient is 2 * 5e-5 * w, i.e. weight decay 1e-4.
# PyTorch's default (its momentum 0.1). Keras' 0.99 lets the inference statistics lag a few
# hundred steps behind, which short quantization-aware fine-tuning cannot afford.
BATCH_NORM_MOMENTUM = 0.9


def conv_bn(x, filters, kernel_size, strides=1, name=None, depthwise=False,
            momentum=BATCH_NORM_MOMENTUM):
    """Conv2D (or DepthwiseConv2D) without bias, followed by BatchNormalization.

    The conv has no bias because the batch norm that follows it provides one; kquant folds the
    batch norm into the conv on export.
    """
    regularizer = keras.regularizers.L2(WEIGHT_DECAY)
    if depthwise:
        conv = keras.layers.DepthwiseConv2D(kernel_size, strides, padding="same", use_bias=False,
                                            depthwise_regularizer=regularizer, name=f"{name}_dw")
    else:
        conv = keras.layers.Conv2D(filters, kernel_size, strides, padding="same", use_bias=False,
                                   kernel_initializer="he_normal", kernel_regularizer=regularizer,
                                   name=f"{name}_conv")
    return keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(conv(x))


def classifier(x, num_classes):
    """Global average pooling and a dense layer that outputs logits."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dense(num_classes, kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY),
                              name="logits")(x)
