"""A small MobileNetV2-style network for 32x32 images (Sandler et al., CVPR 2018)."""
from kquant.backend import keras
from kquant.models.layers import BATCH_NORM_MOMENTUM, classifier, conv_bn

# (expansion, output channels, blocks, first stride), a CIFAR-sized cut of MobileNetV2's table.
_STAGES = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2)]


def _inverted_residual(x, expansion, filters, strides, name, momentum):
    y = x
    if expansion != 1:
        y = conv_bn(y, x.shape[-1] * expansion, 1, name=f"{name}_expand", momentum=momentum)
        y = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = conv_bn(y, None, 3, strides, name=name, depthwise=True, momentum=momentum)
    y = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    # linear bottleneck: no activation
    y = conv_bn(y, filters, 1, name=f"{name}_project", momentum=momentum)
    if strides == 1 and x.shape[-1] == filters:
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    return y


def small_mobilenet_v2(input_shape=(32, 32, 3), num_classes=10,
                       batch_norm_momentum=BATCH_NORM_MOMENTUM):
    """Builds a small MobileNetV2 (inverted residuals with depthwise convs and ReLU6).

    Args:
        input_shape: (height, width, channels) of one image.
        num_classes: number of output logits.
        batch_norm_momentum: momentum of every BatchNormalization.

    Returns:
        A functional `keras.Model` that outputs logits.
    """
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn(inputs, 32, 3, name="stem", momentum=batch_norm_momentum)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    for s, (expansion, filters, blocks, first_stride) in enumerate(_STAGES):
        for b in range(blocks):
            x = _inverted_residual(x, expansion, filters, first_stride if b == 0 else 1,
                                   f"stage{s + 1}_block{b + 1}", batch_norm_momentum)
    x = conv_bn(x, 256, 1, name="head", momentum=batch_norm_momentum)
    x = keras.layers.ReLU(6.0, name="head_relu")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="mobilenet_v2")
