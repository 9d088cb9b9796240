"""Batch norm folded into the conv during training: same function, the deployed grid, exact export."""
import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras, tf
from kquant.quantizers.model_states import quantizer_states
from tests.conftest import assert_exports_exactly, tiny_cnn


def _trained(model, images):
    """A float model whose batch norms hold statistics and affine terms of their own."""
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(images, np.arange(len(images)) % 10, batch_size=16, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def float_model():
    images = np.random.default_rng(3).normal(size=(64, 8, 8, 1)).astype(np.float32)
    return _trained(tiny_cnn(), images), images


def test_folded_float_model_computes_the_same_function(float_model):
    model, images = float_model
    folded = kquant.folding.fold_batch_norms(model)
    kinds = {layer.name: type(layer).__name__ for layer in folded.layers}
    assert kinds["first"] == kinds["middle"] == "FoldedConv2D"
    assert kinds["depthwise"] == "FoldedDepthwiseConv2D"
    assert not {"first_bn", "middle_bn", "depthwise_bn"} & set(kinds)
    np.testing.assert_allclose(folded.predict(images, verbose=0), model.predict(images, verbose=0),
                               atol=1e-5)


def test_quantized_folded_model_matches_unfolded_with_quantizers_off(float_model):
    model, images = float_model
    outputs = []
    for fold in (False, True):
        quantized = kquant.quantize_model(model, kquant.Recipe(2, 2, per_channel=True,
                                                               fold_batch_norm=fold))
        kquant.precision.set_enabled(quantized, False)
        outputs.append(quantized.predict(images, verbose=0))
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-4)


def test_training_step_is_batch_norm_with_batch_statistics(float_model):
    model, images = float_model
    quantized = kquant.quantize_model(model, kquant.Recipe(4, 4, per_channel=True,
                                                           fold_batch_norm=True))
    kquant.precision.set_enabled(quantized, False)
    layer = quantized.get_layer("quant_first").layer
    norm = model.get_layer("first_bn")
    x = quantized.layers[1](images, training=False)  # the 8-bit input quantizer
    got = quantized.get_layer("quant_first")(x, training=True).numpy()
    y = model.get_layer("first")(x).numpy()
    mean, variance = y.mean((0, 1, 2)), y.var((0, 1, 2))
    expected = (y - mean) / np.sqrt(variance + norm.epsilon) * norm.gamma.numpy() + norm.beta.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), norm.momentum * norm.moving_mean.numpy()
                               + (1 - norm.momentum) * mean, atol=1e-5)
    assert int(layer.folded_steps.numpy()) == 1


def test_statistics_freeze_after_the_given_steps(float_model):
    model, images = float_model
    recipe = kquant.Recipe(2, 2, per_channel=True, fold_batch_norm=True, freeze_batch_norm_after=2)
    quantized = kquant.quantize_model(model, recipe)
    quantized.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    layer = quantized.get_layer("quant_middle").layer
    quantized.fit(images, np.arange(64) % 10, batch_size=16, epochs=1, verbose=0)  # 4 steps
    assert int(layer.folded_steps.numpy()) == 2
    frozen = layer.moving_variance.numpy()
    quantized.fit(images, np.arange(64) % 10, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(layer.moving_variance.numpy(), frozen)
    # Frozen, a training step computes what inference computes.
    x = images[:8]
    np.testing.assert_allclose(quantized(x, training=True).numpy(), quantized(x, training=False).numpy(),
                               atol=1e-5)


@pytest.mark.parametrize("bits", [2, 4])
def test_weights_are_quantized_after_folding_and_export_exactly(float_model, bits):
    model, images = float_model
    recipe = kquant.Recipe(bits, bits, per_channel=True, fold_batch_norm=True,
                           freeze_batch_norm_after=3)
    quantized = kquant.quantize_model(model, recipe)
    quantized.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    quantized.fit(images, np.arange(64) % 10, batch_size=16, epochs=2, verbose=0)
    for state in quantizer_states(quantized):
        if state.role == "weight" and state.layer != "logits":
            layer = quantized.get_layer(f"quant_{state.layer}").layer
            folded = state.quantizer(state.kernel, False, state.variables).numpy()
            channels = folded.reshape(-1, layer.multiplier().shape[0])
            levels = max(len(np.unique(c)) for c in channels.T)
            assert levels <= 2 ** (8 if state.layer == "first" else bits)
            # The grid is that of w * gamma / sigma, not of w.
            expected = state.quantizer.quantize(layer.fold(state.kernel), state.variables).numpy()
            np.testing.assert_array_equal(folded, expected)
    blob = assert_exports_exactly(quantized, images)
    unfolded = kquant.quantize_model(model, kquant.Recipe(bits, bits, per_channel=True))
    unfolded(images, training=True)  # sets the input range, as training would
    assert tflite_export.inspect(blob).ops == tflite_export.inspect(
        tflite_export.convert(unfolded, [images])).ops


def test_bad_folding_settings_are_named(float_model):
    model, _ = float_model
    with pytest.raises(ValueError, match="freeze_batch_norm_after .* needs fold_batch_norm=True"):
        kquant.Recipe(freeze_batch_norm_after=10)
    with pytest.raises(ValueError, match="freeze_batch_norm_after must be None or an integer"):
        kquant.Recipe(fold_batch_norm=True, freeze_batch_norm_after=-1)
    with pytest.raises(ValueError, match="DirectLevelsWeightQuantizer on layer 'first'.*folded"):
        kquant.quantize_model(model, kquant.Recipe(2, 2, weight_quantizer="direct-levels",
                                                   fold_batch_norm=True, first_last_bits=None))
    with pytest.raises(ValueError, match="DoReFaWeightQuantizer on layer 'first'.*per_channel=True"):
        kquant.quantize_model(model, kquant.Recipe(2, 2, fold_batch_norm=True))


def test_a_model_without_conv_batch_norm_pairs_is_left_as_it_is():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.BatchNormalization()(inputs)))
    assert kquant.folding.fold_batch_norms(model) is model
    assert tf.is_tensor(model(np.zeros((1, 4), np.float32)))
