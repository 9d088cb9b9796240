"""A small MobileNetV2-style network for 32x32 images (Sandler et al., CVPR 2018)."""
from kquant.backend import keras
from kquant.models.layers import classifier, conv_bn

# (expansion, output channels, blocks, first stride), a CIFAR-sized cut of MobileNetV2's table.
_STAGES = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2)]


def _inverted_residual(x, expansion, filters, strides, name):
    y = x
    if expansion != 1:
        y = conv_bn(y, x.shape[-1] * expansion, 1, name=f"{name}_expand")
        y = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = conv_bn(y, None, 3, strides, name=name, depthwise=True)
    y = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = conv_bn(y, filters, 1, name=f"{name}_project")  # linear bottleneck: no activation
    if strides == 1 and x.shape[-1] == filters:
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    return y


def small_mobilenet_v2(input_shape=(32, 32, 3), num_classes=10):
    """Builds a small MobileNetV2 (inverted residuals with depthwise convs and ReLU6).

    Args:
        input_shape: (height, width, channels) of one image.
        num_classes: number of output logits.

    Returns:
        A functional `keras.Model` that outputs logits.
    """
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn(inputs, 32, 3, name="stem")
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    for s, (expansion, filters, blocks, first_stride) in enumerate(_STAGES):
        for b in range(blocks):
            x = _inverted_residual(x, expansion, filters, first_stride if b == 0 else 1,
                                   name=f"stage{s + 1}_block{b + 1}")
    x = conv_bn(x, 256, 1, name="head")
    x = keras.layers.ReLU(6.0, name="head_relu")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="mobilenet_v2")
