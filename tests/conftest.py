import os
import re

import numpy as np
import pytest

import kquant
from kquant.backend import keras


@pytest.fixture(scope="session")
def digits():
    return kquant.load_dataset("digits", batch_size=32)


def tiny_cnn(input_shape=(8, 8, 1), num_classes=10):
    """Conv-BN-ReLU, a residual Add, a depthwise conv and a dense head: every rule in one model."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="first")(inputs)
    x = keras.layers.BatchNormalization(name="first_bn")(x)
    x = keras.layers.ReLU(name="first_relu")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="middle")(x)
    y = keras.layers.BatchNormalization(name="middle_bn")(y)
    x = keras.layers.ReLU(name="block_out")(keras.layers.Add(name="add")([x, y]))
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="depthwise_bn")(x)
    x = keras.layers.ReLU(6.0, name="depthwise_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x))


def assert_exports_exactly(model, images):
    """Exports `model` and checks it on every runtime: fully integer, the Keras levels and
    codes, int8 outputs identical to the integer-exact mode. Returns the flatbuffer."""
    import tflite_export

    blob = tflite_export.convert(model, [images])
    for runtime in ("xnnpack", "builtin", "micro"):
        report = tflite_export.verify(blob, model, [(images, np.zeros(len(images)))],
                                      runtime=runtime)
        assert report.float_ops == [] and report.levels_ok
        assert all(report.weight_codes_match.values())
        assert report.exact_agreement == 1.0, runtime
    return blob


@pytest.fixture
def random_images():
    return np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)


def pending_runs():
    """(suite, flags) of each `run` line of benchmarks/pending.sh, continuation lines joined."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "benchmarks", "pending.sh")) as f:
        return re.findall(r"^run (\S+) (.*)$", f.read().replace("\\\n", ""), re.M)
