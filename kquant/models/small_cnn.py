"""A small CNN for 8x8 digits and 28x28 MNIST."""
from kquant.backend import keras
from kquant.models.layers import BATCH_NORM_MOMENTUM, classifier, conv_bn


def small_cnn(input_shape=(28, 28, 1), num_classes=10, width=32,
              batch_norm_momentum=BATCH_NORM_MOMENTUM):
    """Builds three conv + BN + ReLU layers (the last two strided), pooling and a dense layer.

    Args:
        input_shape: (height, width, channels) of one image.
        num_classes: number of output logits.
        width: filters of the first conv; the others use twice as many.
        batch_norm_momentum: momentum of every BatchNormalization.

    Returns:
        A functional `keras.Model` that outputs logits.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, (filters, strides) in enumerate([(width, 1), (2 * width, 2), (2 * width, 2)]):
        x = conv_bn(x, filters, 3, strides, name=f"block{i + 1}", momentum=batch_norm_momentum)
        x = keras.layers.ReLU(name=f"block{i + 1}_relu")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="small_cnn")
