"""The models users bring: softmax and sigmoid heads, preprocessing layers, swish, gates,
pre-activation batch norm and Keras' application models, quantized and exported in int8."""
import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras
from kquant.graph import unwrap
from kquant.split_activations import split_activations

L = keras.layers


def _stem(inputs):
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    return L.BatchNormalization(name="stem_bn")(x)


def softmax_head():
    inputs = keras.Input((8, 8, 3))
    x = L.ReLU(name="stem_relu")(_stem(inputs))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dropout(0.2, name="dropout")(x)
    return keras.Model(inputs, L.Dense(10, activation="softmax", name="predictions")(x))


def preprocessing_and_swish():
    inputs = keras.Input((8, 8, 3))
    x = L.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    x = L.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.05, 0.06, 0.07], name="normalization")(x)
    x = L.Activation("swish", name="stem_swish")(_stem(x))
    x = L.Conv2D(8, 1, activation="swish", name="expand")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(10, activation="sigmoid", name="predictions")(x))


def squeeze_excite():
    """EfficientNet's gate: pooled features, a sigmoid per channel, a Multiply."""
    inputs = keras.Input((8, 8, 3))
    x = L.ReLU(name="stem_relu")(_stem(inputs))
    s = L.GlobalAveragePooling2D(name="squeeze")(x)
    s = L.Reshape((1, 1, 8), name="squeeze_reshape")(s)
    s = L.Conv2D(4, 1, activation="relu", name="reduce")(s)
    s = L.Conv2D(8, 1, activation="sigmoid", name="gate")(s)
    x = L.Multiply(name="excite")([x, s])
    x = L.Conv2D(8, 1, use_bias=False, name="project")(x)
    x = L.BatchNormalization(name="project_bn")(x)
    x = L.Activation("tanh", name="project_tanh")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def pre_activation():
    """ResNet V2's and DenseNet's order: batch norm and ReLU before each conv; a
    concatenation and DenseNet's transition (1x1 conv, average pooling) between blocks; a
    leaky ReLU and a hard sigmoid."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    y = L.BatchNormalization(name="pre_bn")(x)
    y = L.ReLU(name="pre_relu")(y)
    y = L.Conv2D(8, 3, padding="same", name="conv")(y)
    x = L.Add(name="add")([x, y])
    x = L.Concatenate(name="concat")([x, L.LeakyReLU(0.1, name="leaky")(y)])
    x = L.BatchNormalization(name="post_bn")(x)
    x = L.ReLU(name="post_relu")(x)
    x = L.Conv2D(8, 1, name="transition")(x)  # DenseNet's transition: 8-bit output, then pool
    x = L.AveragePooling2D(2, name="transition_pool")(x)
    x = L.Activation("hard_sigmoid", name="hard_sigmoid")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(10, activation="softmax", name="predictions")(x))


def _trained(model, images, bits):
    quantized = kquant.quantize_model(model, kquant.Recipe(bits, bits))
    quantized.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    quantized.fit(images, np.arange(len(images)) % 10, batch_size=16, epochs=2, verbose=0)
    return quantized


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, size=(64, 8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("build", [softmax_head, preprocessing_and_swish, squeeze_excite,
                                   pre_activation])
@pytest.mark.parametrize("bits", [2, 4])
def test_covered_model_exports_fully_integer_and_agrees(build, bits, images):
    model = _trained(build(), images, bits)
    tflite = tflite_export.convert(model, [images])
    report = tflite_export.verify(tflite, model, [images], layer_examples=0)
    assert report.float_ops == []
    assert report.weight_codes_match and all(report.weight_codes_match.values())
    # The float-path model and the integer model differ by rounding only (a pre-activation
    # batch norm's int8 MUL rounds once more than Keras' float one): within a few output
    # steps on each output, and on most outputs not at all.
    assert report.max_logit_difference <= 8 * report.output_step, report
    assert report.mean_logit_difference <= report.output_step, report


def test_softmax_head_splits_off_and_keeps_the_float_function():
    model = softmax_head()
    quantized = kquant.quantize_model(model, kquant.Recipe(8, 8))
    names = [unwrap(layer).name for layer in quantized.layers]
    assert names[-2:] == ["predictions", "predictions_softmax"]
    split = split_activations(model)
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(split.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-7)


def test_describe_names_every_layers_choice_and_why(images):
    rows = {r["layer"]: r for r in kquant.describe_layers(
        kquant.quantize_model(squeeze_excite(), kquant.Recipe(2, 2)), print_fn=None)}
    assert rows["reduce"]["weights"].endswith("2-bit") and rows["reduce"]["output"].endswith("2-bit")
    assert rows["stem"]["weights"].endswith("8-bit")  # first layer
    assert rows["stem"]["output"] == "-" and "fuses" in rows["stem"]["why"]
    assert rows["gate"]["output"] == "8-bit learned range"  # the sigmoid's int8 input
    assert rows["gate_sigmoid"]["output"] == "8-bit fixed range"
    assert "sigmoid" in rows["gate_sigmoid"]["why"]
    assert rows["excite"]["output"] == "8-bit learned range"
    assert "Multiply" in rows["excite"]["why"]
    assert rows["squeeze_reshape"]["output"] == "-" and "pass-through" in rows["squeeze_reshape"]["why"]
    # Every layer but the input, plus the gate's split-off sigmoid.
    assert len(rows) == len(squeeze_excite().layers)


# ResNet50 (V1) adds no pattern ResNet-20 and these lack, at 23M parameters: left out.
APPLICATIONS = [("MobileNet", {"alpha": 0.25}), ("MobileNetV2", {"alpha": 0.35}),
                ("ResNet50V2", {}), ("EfficientNetB0", {}), ("DenseNet121", {})]


@pytest.mark.slow
@pytest.mark.parametrize("name,options", APPLICATIONS, ids=[a[0] for a in APPLICATIONS])
def test_keras_applications_quantize_and_export_in_int8(name, options):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3),
                                              classes=10, **options)
    images = np.random.default_rng(0).uniform(0, 255, size=(32, 32, 32, 3)).astype(np.float32)
    quantized = kquant.quantize_model(model, kquant.Recipe(4, 4))
    quantized.compile(keras.optimizers.SGD(0.001), "sparse_categorical_crossentropy")
    quantized.fit(images, np.arange(32) % 10, batch_size=16, epochs=1, verbose=0)
    rows = kquant.describe_layers(quantized, print_fn=None)
    assert any(r["weights"].endswith("4-bit") for r in rows)
    tflite = tflite_export.convert(quantized, [images])
    report = tflite_export.verify(tflite, quantized, [images], layer_examples=0)
    assert report.float_ops == []
    # Softmax outputs of an untrained network on noise. Pre-activation batch norm (ResNet50V2:
    # 2.6 steps on average, 8 at most) runs as int8 MUL and ADD, whose per-tensor int8
    # multiplier and extra rounding Keras does not model; the others stay within one step.
    assert report.mean_logit_difference <= 4 * report.output_step, report


def test_covered_model_saves_and_loads(tmp_path, images):
    model = _trained(squeeze_excite(), images, 2)
    expected = model.predict(images, verbose=0)
    for name in ("model.keras", "model.h5"):
        model.save(str(tmp_path / name))
        loaded = kquant.load_model(str(tmp_path / name))
        np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
        assert kquant.describe_layers(loaded, print_fn=None) == \
            kquant.describe_layers(model, print_fn=None)
