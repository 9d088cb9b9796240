import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras


@pytest.mark.slow
@pytest.mark.parametrize("name,shape,weight_layers", [
    ("small_cnn", (8, 8, 1), 4), ("resnet20", (32, 32, 3), 22), ("mobilenet_v2", (32, 32, 3), 23)])
def test_reference_models_quantize_and_export_to_integer_tflite(name, shape, weight_layers):
    model = kquant.models.build_model(name, shape, 10)
    assert model.output_shape == (None, 10)
    quantized = kquant.quantize_model(model, kquant.Recipe(2, 2, per_channel=True))
    images = np.random.default_rng(0).normal(size=(16, *shape)).astype(np.float32)
    quantized.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    quantized.fit(images, np.arange(16) % 10, batch_size=8, verbose=0)
    tflite = tflite_export.convert(quantized, [images])
    report = tflite_export.verify(tflite, quantized, [(images, np.zeros(16))])
    assert report.float_ops == [] and report.levels_ok
    assert len(report.weight_codes_match) == weight_layers and all(report.weight_codes_match.values())
    # The integer-exact mode computes what TFLite does, op by op; the float path only comes
    # near (one-step differences grow through a deep 2-bit network on random weights).
    assert report.exact_agreement == 1.0
    assert len(report.layer_differences) >= weight_layers
    assert all(d.differing == 0 for d in report.layer_differences.values())
    assert report.mean_logit_difference <= 3 * report.output_step


def test_activation_layers_concatenate_and_pass_through_layers_export():
    inputs = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="inline_relu")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="plain")(inputs)
    b = keras.layers.Activation("relu", name="activation_relu")(b)
    x = keras.layers.Concatenate(name="concat")([a, b])
    x = keras.layers.MaxPooling2D(name="max_pool")(x)
    x = keras.layers.Conv2D(4, 3, name="middle")(x)
    x = keras.layers.Activation("relu6", name="activation_relu6")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    quantized = kquant.quantize_model(model, kquant.Recipe(3, 3, first_last_bits=None))
    images = np.random.default_rng(1).normal(size=(32, 8, 8, 1)).astype(np.float32)
    quantized.compile("sgd", "mse")
    quantized.fit(images, np.zeros((32, 3)), verbose=0)
    tflite = tflite_export.convert(quantized, [images])
    report = tflite_export.verify(tflite, quantized, [(images, np.zeros(32))])
    assert report.float_ops == [] and report.levels_ok
    assert set(report.activation_levels) == {"inline_relu", "activation_relu", "activation_relu6"}
    assert {"CONCATENATION", "MAX_POOL_2D"} <= set(tflite_export.inspect(tflite).ops)
    assert report.mean_logit_difference <= report.output_step
