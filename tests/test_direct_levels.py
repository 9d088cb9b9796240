"""Learnable-level weights: exact level gradients, direct code updates, export of the levels."""
import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras, tf
from kquant.quantizers import DirectLevelsWeightQuantizer
from tests.conftest import tiny_cnn


def direct_levels_quantizers(model):
    """[(kernel, quantizer, variables)] of the learnable-level quantizers of `model`."""
    return [(s.kernel, s.quantizer, s.variables) for s in kquant.quantizers.quantizer_states(model)
            if isinstance(s.quantizer, DirectLevelsWeightQuantizer)]


def standalone(bits=2, depthwise=False, **options):
    """A built conv layer and a learnable-levels quantizer initialised from its kernel."""
    layer = (keras.layers.DepthwiseConv2D(3, depth_multiplier=2) if depthwise
             else keras.layers.Conv2D(6, 3))
    layer.build((None, 8, 8, 3))
    kernel = layer.depthwise_kernel if depthwise else layer.kernel
    quantizer = DirectLevelsWeightQuantizer(bits, **options)
    variables = quantizer.build(kernel.shape, "kernel", layer)
    quantizer.initialize(variables, kernel)
    return kernel, quantizer, variables


def channels_last(quantizer, tensor):
    return quantizer._channels_last(tf.convert_to_tensor(tensor)).numpy()  # pylint: disable=protected-access


@pytest.mark.parametrize("per_channel,depthwise,reduction", [
    (False, False, "sum"), (True, False, "sum"), (True, True, "sum"), (True, False, "mean")])
def test_level_gradient_is_the_sum_of_its_members_weight_gradients(per_channel, depthwise,
                                                                   reduction):
    kernel, quantizer, variables = standalone(2, depthwise, per_channel=per_channel,
                                              level_gradient=reduction)
    upstream = tf.constant(np.random.default_rng(1).normal(size=kernel.shape), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(quantizer(kernel, True, variables) * upstream)
    level_gradient, kernel_gradient = tape.gradient(loss, [variables["levels"], kernel])
    codes = variables["codes"].numpy().reshape(-1, variables["codes"].shape[-1])
    members = channels_last(quantizer, upstream).reshape(codes.shape)
    expected, counts = np.zeros(variables["levels"].shape), np.zeros(variables["levels"].shape)
    for channel in range(codes.shape[1]):
        row = channel if per_channel else 0
        np.add.at(expected[row], codes[:, channel], members[:, channel])
        np.add.at(counts[row], codes[:, channel], 1)
    if reduction == "mean":
        expected /= np.maximum(counts, 1)
    np.testing.assert_allclose(level_gradient.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kernel_gradient.numpy(), upstream.numpy())  # proxy gets dL/dw_q


@pytest.mark.parametrize("bits,per_channel", [(1, False), (2, True), (4, False), (8, False)])
def test_initial_weights_sit_on_at_most_two_to_the_bits_int8_levels(bits, per_channel):
    kernel, quantizer, variables = standalone(bits, per_channel=per_channel)
    codes, step = quantizer.codes_and_step(kernel, variables)
    codes = codes.numpy().reshape(-1, codes.shape[-1])
    assert np.array_equal(codes, np.round(codes)) and np.abs(codes).max() == 127
    w_q = channels_last(quantizer, quantizer(kernel, False, variables)).reshape(codes.shape)
    np.testing.assert_allclose(w_q, codes * step.numpy(), rtol=1e-6)
    for channel in range(codes.shape[1]):
        assert len(np.unique(codes[:, channel])) <= min(2 ** bits, 255)
    if bits == 8:
        return  # 255 levels fill the int8 grid: k-means and quantiles both end uniform
    # k-means starts closer to the float weights than equal-mass quantile levels
    quantile_kernel, quantile_quantizer, quantile_variables = standalone(
        bits, per_channel=per_channel, initialization="quantiles")
    quantile_kernel.assign(kernel)
    quantile_quantizer.initialize(quantile_variables, quantile_kernel)
    error = lambda q, k, v: float(tf.reduce_sum(tf.square(q(k, False, v) - k)))  # noqa: E731
    assert error(quantizer, kernel, variables) <= error(quantile_quantizer, quantile_kernel,
                                                        quantile_variables) * 1.0001


def test_projection_sorts_separates_and_mirrors_levels():
    _, quantizer, _ = standalone(2)
    crossed = tf.constant([[0.5, 0.1, 0.1, -0.3], [0.2, 0.2, 0.2, 0.2]])
    projected = quantizer._project(crossed).numpy()  # pylint: disable=protected-access
    step = np.abs(projected).max(axis=1, keepdims=True) / 127
    integers = projected / step
    assert np.all(np.diff(integers, axis=1) >= 1 - 1e-4)  # sorted and one int8 step apart
    assert np.all(np.abs(integers) <= 127 + 1e-4)
    _, symmetric, _ = standalone(2, symmetric=True)
    mirrored = symmetric._project(crossed).numpy()  # pylint: disable=protected-access
    np.testing.assert_allclose(mirrored, -mirrored[:, ::-1], atol=1e-6)
    assert np.all(np.diff(mirrored, axis=1) > 0)


def trained(recipe, digits, epochs=2, learning_rate=0.05):
    model = kquant.quantize_model(kquant.models.small_cnn((8, 8, 1), 10), recipe)
    kquant.compile_classifier(model, learning_rate, epochs, digits.train_size // 32 + 1)
    model.fit(digits.train, epochs=epochs, verbose=0,
              callbacks=[kquant.quantizers.DirectLevelsUpdate()])
    return model


@pytest.mark.parametrize("accumulate,optimizer", [(True, "sgd"), (False, "adam")])
def test_after_updates_every_weight_is_its_nearest_level_and_levels_stay_distinct(digits, accumulate,
                                                                                  optimizer):
    recipe = kquant.Recipe(2, 4, weight_quantizer="direct-levels", activation_quantizer="pact",
                           per_channel=True)
    model = kquant.quantize_model(kquant.models.small_cnn((8, 8, 1), 10), recipe)
    for _, quantizer, _ in direct_levels_quantizers(model):
        quantizer.accumulate = accumulate
    before = {k.name: v["codes"].numpy().copy() for k, _, v in direct_levels_quantizers(model)}
    if optimizer == "adam":  # any Keras optimizer
        model.compile(keras.optimizers.Adam(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    else:
        kquant.compile_classifier(model, 0.05, 2, digits.train_size // 32 + 1)
    model.fit(digits.train, epochs=2, verbose=0, callbacks=[kquant.quantizers.DirectLevelsUpdate()])
    flipped = 0
    for kernel, quantizer, variables in direct_levels_quantizers(model):
        codes = variables["codes"].numpy()
        flipped += int((codes != before[kernel.name]).sum())
        nearest = quantizer._nearest(quantizer._channels_last(kernel), variables["levels"])  # pylint: disable=protected-access
        np.testing.assert_array_equal(nearest.numpy(), codes)
        used = channels_last(quantizer, quantizer(kernel, False, variables))
        snapped = quantizer._levels_on_grid(variables["levels"])[0].numpy()  # pylint: disable=protected-access
        rows = np.arange(codes.shape[-1]) if snapped.shape[0] > 1 else np.zeros(codes.shape[-1], int)
        np.testing.assert_allclose(used, snapped[rows, codes], rtol=1e-6)
        integers = quantizer.codes_and_step(kernel, variables)[0].numpy()
        levels_int = np.round(snapped / (np.abs(snapped).max(axis=1, keepdims=True) / 127))
        assert np.all(np.diff(levels_int, axis=1) >= 1), kernel.name  # sorted, distinct in int8
        assert np.abs(integers).max() <= 127
        if not accumulate:  # the literal direct update: no float proxy left beside w_q
            np.testing.assert_allclose(channels_last(quantizer, kernel), used, rtol=1e-6)
    assert flipped > 0  # codes did move


def test_bit_width_schedules_refuse_learnable_levels():
    model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(4, 4, weight_quantizer="direct-levels"))
    with pytest.raises(ValueError, match="middle.*fixed when the model is built"):
        kquant.precision.set_bits(model, 2, role="weight")
    with pytest.raises(ValueError, match="initialization must be one of"):
        DirectLevelsWeightQuantizer(2, initialization="random")


def test_update_callback_refuses_models_without_learnable_levels(digits):
    model = kquant.quantize_model(kquant.models.small_cnn((8, 8, 1), 10))
    kquant.compile_classifier(model)
    with pytest.raises(ValueError, match="no learnable-levels"):
        model.fit(digits.train.take(1), callbacks=[kquant.quantizers.DirectLevelsUpdate()],
                  verbose=0)


def test_learnable_levels_train_save_load_and_export_exactly(tmp_path):
    keras.utils.set_random_seed(0)
    # A fresh data set: the shared fixture's shuffle order depends on the tests run before.
    digits = kquant.load_dataset("digits", batch_size=32, seed=0)
    recipe = kquant.Recipe(2, 2, weight_quantizer="direct-levels",
                           activation_quantizer="channel-aware", per_channel=True)
    model = trained(recipe, digits, epochs=6)
    accuracy = model.evaluate(digits.test, verbose=0)[1]
    assert accuracy > 0.6  # ten classes: chance is 0.1
    path = str(tmp_path / "levels.h5")
    model.save(path)
    with kquant.quantize_scope():
        loaded = keras.models.load_model(path, compile=False)
    images = next(iter(digits.test))[0]
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False),
                               rtol=1e-5, atol=1e-5)
    for (_, _, a), (_, q, b) in zip(direct_levels_quantizers(model), direct_levels_quantizers(loaded)):
        np.testing.assert_array_equal(a["codes"].numpy(), b["codes"].numpy())
        assert isinstance(q, DirectLevelsWeightQuantizer) and q.per_channel
    tflite = tflite_export.convert(model, digits.train.take(4))
    report = tflite_export.verify(tflite, model, digits.test)
    assert report.agreement >= 0.99
    assert all(report.weight_codes_match.values())
    for layer, (seen, allowed) in report.weight_levels.items():
        assert seen <= allowed, layer
    assert report.weight_levels["block2_conv"][1] == 4
