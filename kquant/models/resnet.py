"""ResNet-20 for 32x32 images (He et al., "Deep Residual Learning", 2016, section 4.2)."""
from kquant.backend import keras
from kquant.models.layers import BATCH_NORM_MOMENTUM, classifier, conv_bn


def _basic_block(x, filters, strides, name, momentum):
    y = conv_bn(x, filters, 3, strides, name=f"{name}_a", momentum=momentum)
    y = keras.layers.ReLU(name=f"{name}_a_relu")(y)
    y = conv_bn(y, filters, 3, 1, name=f"{name}_b", momentum=momentum)
    if strides != 1 or x.shape[-1] != filters:
        # Projection shortcut (option B): a 1x1 conv that the low-bit papers quantize too.
        x = conv_bn(x, filters, 1, strides, name=f"{name}_shortcut", momentum=momentum)
    y = keras.layers.Add(name=f"{name}_add")([y, x])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet20(input_shape=(32, 32, 3), num_classes=10, blocks_per_stage=3, width=16,
             batch_norm_momentum=BATCH_NORM_MOMENTUM):
    """Builds ResNet-20 (3 stages of 3 basic blocks, 16/32/64 filters) as a functional model.

    Args:
        input_shape: (height, width, channels) of one image.
        num_classes: number of output logits.
        blocks_per_stage: basic blocks per stage (3 gives ResNet-20, 5 gives ResNet-32).
        width: filters of the first stage; each later stage doubles it.
        batch_norm_momentum: momentum of every BatchNormalization.

    Returns:
        A `keras.Model` that outputs logits. Residual blocks end in layers named
        `stage{s}_block{b}_add` followed by a ReLU named `stage{s}_block{b}_out`.
    """
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn(inputs, width, 3, name="stem", momentum=batch_norm_momentum)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage in range(3):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, width * 2 ** stage, strides,
                             f"stage{stage + 1}_block{block + 1}", batch_norm_momentum)
    return keras.Model(inputs, classifier(x, num_classes), name="resnet20")
