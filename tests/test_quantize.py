import numpy as np
import pytest

import kquant
from kquant.backend import keras, tfmot
from kquant.configs import OutputConfig, WeightLayerConfig
from tests.conftest import tiny_cnn


def wrapper(model, name):
    return model.get_layer(f"quant_{name}")


def test_each_layer_type_gets_its_config():
    q = kquant.quantize_model(tiny_cnn(), kquant.Recipe(weight_bits=3, activation_bits=2))
    config = lambda name: wrapper(q, name).quantize_config  # noqa: E731
    assert isinstance(config("first"), WeightLayerConfig) and config("first").output_quantizer is None
    assert config("depthwise").weight_attribute == "depthwise_kernel"
    # conv -> BN -> Add: the BN output is a requantization point at 8 bits
    assert isinstance(config("middle_bn").output_quantizer,
                      tfmot.quantization.keras.quantizers.MovingAverageQuantizer)
    assert config("first_bn").output_quantizer is None  # fused into conv + ReLU
    assert config("add").output_quantizer is None  # feeds a ReLU
    assert config("block_out").output_quantizer.deploy_bits == 2
    assert config("depthwise_relu").output_quantizer.deploy_bits == 2
    assert isinstance(config("logits"), WeightLayerConfig)
    assert isinstance(config("pool"), OutputConfig)


def test_first_and_last_layers_default_to_eight_bits_and_overrides_win():
    recipe = kquant.Recipe(weight_bits=2, activation_bits=2,
                           overrides={"middle": {"weight_bits": 5},
                                      keras.layers.DepthwiseConv2D: {"weight_bits": 6},
                                      "block_out": {"activation_bits": 3}})
    rows = {(r["layer"], r["role"]): r["bits"]
            for r in kquant.describe(kquant.quantize_model(tiny_cnn(), recipe), print_fn=None)}
    assert rows[("first", "weight")] == 8 and rows[("logits", "weight")] == 8
    assert rows[("middle", "weight")] == 5 and rows[("depthwise", "weight")] == 6
    assert rows[("block_out", "activation")] == 3 and rows[("first_relu", "activation")] == 2


def test_sequential_models_are_quantized():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    q = kquant.quantize_model(model, kquant.Recipe(4, 4, first_last_bits=None))
    assert [r["bits"] for r in kquant.describe(q, print_fn=None)] == [4, 4, 4]
    assert q(np.zeros((1, 8, 8, 1), np.float32)).shape == (1, 3)


def test_unsupported_layers_are_named_in_one_error():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="elu", name="elu_conv")(inputs)
    x = keras.layers.Activation("softplus", name="softplus")(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = x + 3.0  # a TensorFlow op on a Keras tensor
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError) as error:
        kquant.quantize_model(model)
    message = str(error.value)
    for name in ("elu_conv", "softplus", "norm", "tf.__operators__.add"):
        assert name in message
    assert "no integer kernel" in message and "write it with Keras layers" in message
    assert message.count("swish") == 1  # what kquant does quantize, said once
    assert "quantize_annotate_layer" in message


def test_nested_models_get_the_same_error():
    inner = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)], name="inner")
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Flatten()(inner(inputs)))
    with pytest.raises(ValueError, match="inner.*nested model"):
        kquant.quantize_model(model)


def test_subclassed_and_unbuilt_models_are_rejected():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="subclassed"):
        kquant.quantize_model(Subclassed())
    with pytest.raises(ValueError, match="not built"):
        kquant.quantize_model(keras.Sequential([keras.layers.Dense(2)]))


def test_keras3_models_are_rejected_with_the_reason():
    import keras as keras3  # the Keras 3 package TensorFlow installs beside tf_keras

    assert keras3.__version__.startswith("3.")
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(TypeError, match="expected a tf_keras \\(Keras 2\\) Model, got keras"):
        kquant.quantize_model(model)


def test_float_weights_are_copied():
    model = tiny_cnn()
    q = kquant.quantize_model(model)
    float_kernel = wrapper(q, "middle")._weight_vars[0][0]
    np.testing.assert_array_equal(float_kernel.numpy(),
                                  model.get_layer("middle").kernel.numpy())


@pytest.mark.parametrize("fmt", ["h5", "tf"])
def test_save_and_load_give_identical_predictions(tmp_path, random_images, fmt):
    q = kquant.quantize_model(tiny_cnn(), kquant.Recipe(3, 2, activation_quantizer="pact",
                                                        per_channel=True))
    q.compile("sgd", "mse")
    q.fit(random_images, np.zeros((16, 10)), verbose=0)  # moves the 8-bit ranges off their init
    kquant.precision.set_bits(q, 4, role="weight", layers=["middle"])
    path = str(tmp_path / ("model.h5" if fmt == "h5" else "saved"))
    q.save(path, save_format=fmt)
    with kquant.quantize_scope():
        loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(random_images, verbose=0),
                               q.predict(random_images, verbose=0), atol=1e-6)
    assert kquant.describe(loaded, print_fn=None) == kquant.describe(q, print_fn=None)


def test_bit_widths_change_inside_one_fit_without_recompiling(digits):
    q = kquant.quantize_model(tiny_cnn(), kquant.Recipe(4, 4))
    kquant.compile_classifier(q, 0.01, 2, 10)
    seen, traces = [], []

    class LowerBits(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            kquant.precision.set_bits(self.model, 4 - 2 * epoch, role="activation")

        def on_epoch_end(self, epoch, logs=None):
            relu = self.model.get_layer("quant_first_relu")
            probe = keras.Model(self.model.inputs, relu.output)
            seen.append(len(np.unique(probe.predict(next(iter(digits.test))[0], verbose=0))))
            traces.append(self.model.train_function.experimental_get_tracing_count())

    q.fit(digits.train.take(10), epochs=2, callbacks=[LowerBits()], verbose=0)
    assert seen[0] <= 16 and seen[0] > 4 and seen[1] <= 4
    assert traces[1] == traces[0]  # the new bits took effect without a new trace
