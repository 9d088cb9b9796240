"""LSQ: the grid, LSQ's gradients against a manual computation, its start, and an exact export."""
import numpy as np
import pytest

import kquant
from kquant.backend import keras, tf
from kquant.quantizers.model_states import quantizer_states
from tests.conftest import assert_exports_exactly, tiny_cnn


def _built(quantizer, shape, layer_type=keras.layers.Conv2D):
    layer = keras.layers.Layer()
    wrapped = layer_type(shape[-1], shape[:2]) if layer_type is keras.layers.Conv2D else layer
    layer.layer = wrapped  # the float layer TF-MOT's wrapper passes
    return quantizer.build(shape, "kernel", layer)


@pytest.mark.parametrize("bits,per_channel", [(2, True), (4, False), (8, True)])
def test_weights_sit_on_the_learned_grid_with_lsq_gradients(bits, per_channel):
    rng = np.random.default_rng(bits)
    kernel = tf.Variable(rng.normal(scale=0.1, size=(3, 3, 4, 6)).astype(np.float32))
    quantizer = kquant.quantizers.LSQWeightQuantizer(bits, per_channel=per_channel)
    variables = _built(quantizer, kernel.shape)
    quantizer.initialize(variables, kernel)
    negative, positive = (127, 127) if bits == 8 else (2 ** (bits - 1), 2 ** (bits - 1) - 1)
    axes = (0, 1, 2) if per_channel else None
    step = 2 * np.abs(kernel.numpy()).mean(axis=axes) / np.sqrt(positive)
    np.testing.assert_allclose(variables["step"].numpy(), step, rtol=1e-6)
    upstream = rng.normal(size=kernel.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        quantized = quantizer(kernel, True, variables)
        loss = tf.reduce_sum(quantized * upstream)
    grad_kernel, grad_step = tape.gradient(loss, [kernel, variables["step"]])
    w, s = kernel.numpy(), variables["step"].numpy()
    codes = quantized.numpy() / s
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert codes.min() >= -negative - 1e-3 and codes.max() <= positive + 1e-3
    assert max(len(np.unique(c)) for c in quantized.numpy().reshape(-1, 6).T) <= 2 ** bits
    # LSQ's gradients: straight through inside the range; for the step round(v) - v inside,
    # the bound outside, times 1 / sqrt(N * Q_P).
    scaled = w / s
    inside = (scaled >= -negative) & (scaled <= positive)
    np.testing.assert_allclose(grad_kernel.numpy(), upstream * inside, atol=1e-6)
    per_step = w.size // 6 if per_channel else w.size
    manual = upstream * np.where(scaled > positive, positive, np.where(
        scaled < -negative, -negative, np.round(scaled) - scaled)) / np.sqrt(per_step * positive)
    np.testing.assert_allclose(grad_step.numpy(), manual.sum(axis=axes), rtol=1e-4, atol=1e-6)


def test_activations_have_lsq_gradients_and_the_paper_start():
    rng = np.random.default_rng(0)
    x = tf.Variable(rng.normal(loc=0.5, size=(4, 5, 5, 3)).astype(np.float32))
    quantizer = kquant.quantizers.LSQActivationQuantizer(2)
    variables = _built(quantizer, tf.TensorShape([None, 5, 5, 3]), keras.layers.ReLU)
    values = np.maximum(x.numpy(), 0)
    quantizer.initialize(variables, values)
    s = 2 * values.mean() / np.sqrt(3)
    np.testing.assert_allclose(variables["step"].numpy(), s, rtol=1e-6)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        quantized = quantizer(tf.nn.relu(x), True, variables)
        loss = tf.reduce_sum(quantized * upstream)
    grad_x, grad_step = tape.gradient(loss, [x, variables["step"]])
    scaled = values / s
    np.testing.assert_allclose(quantized.numpy(), s * np.round(np.clip(scaled, 0, 3)), atol=1e-5)
    assert len(np.unique(np.round(quantized.numpy() / s, 3))) == 4
    inside = (x.numpy() > 0) & (scaled <= 3)
    np.testing.assert_allclose(grad_x.numpy(), upstream * inside, atol=1e-6)
    manual = (upstream * np.where(scaled > 3, 3.0, np.round(scaled) - scaled)).sum() / np.sqrt(75 * 3)
    np.testing.assert_allclose(grad_step.numpy(), manual, rtol=1e-4)


@pytest.mark.parametrize("bits", [2, 4])
def test_lsq_model_trains_and_exports_exactly(random_images, bits):
    keras.utils.set_random_seed(bits)
    float_model = tiny_cnn()
    model = kquant.quantize_model(float_model, kquant.Recipe(
        bits, bits, weight_quantizer="lsq", activation_quantizer="lsq", per_channel=True))
    kquant.calibrate_ranges(model, float_model, [random_images])
    steps_before = {s.layer: s.variables["step"].numpy().copy() for s in quantizer_states(model)
                    if "step" in s.variables}
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(random_images, np.arange(16) % 10, batch_size=8, epochs=2, verbose=0)
    moved = [not np.array_equal(s.variables["step"].numpy(), steps_before[s.layer])
             for s in quantizer_states(model) if "step" in s.variables]
    assert len(moved) == 7 and all(moved)  # 4 weight (first and last at 8 bits), 3 activation
    assert_exports_exactly(model, random_images)


def test_lsq_activation_clip_is_refit_after_a_bit_width_change(random_images):
    model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(4, 4, activation_quantizer="lsq"))
    state = next(s for s in quantizer_states(model) if s.layer == "first_relu")
    state.bits.assign(2.0)
    kquant.precision.refit(model, role="activation")
    model.compile(keras.optimizers.SGD(0.0), "mse")  # no gradient step: only the re-fit moves it
    model.fit(random_images, np.zeros((16, 10)), batch_size=16, verbose=0)
    clip = float(state.quantizer.clip(state.variables))
    assert clip != pytest.approx(6.0) and float(state.variables["refit"].numpy()) == 0.0
    assert float(state.variables["step"].numpy()) == pytest.approx(clip / 3, rel=1e-5)


def test_bad_lsq_settings_are_named():
    with pytest.raises(ValueError, match="LSQWeightQuantizer: bits must be an integer from 2 to 8"):
        kquant.quantizers.LSQWeightQuantizer(1)
    with pytest.raises(ValueError, match="LSQActivationQuantizer: initial_clip must be > 0"):
        kquant.quantizers.LSQActivationQuantizer(2, initial_clip=0)


def test_lsq_plus_has_the_papers_gradients_on_an_offset_grid():
    rng = np.random.default_rng(1)
    x = tf.Variable(rng.normal(size=(4, 5, 5, 3)).astype(np.float32))
    quantizer = kquant.quantizers.LSQPlusActivationQuantizer(2)
    variables = _built(quantizer, tf.TensorShape([None, 5, 5, 3]), keras.layers.ReLU)
    variables["step"].assign(0.6)
    variables["depth"].assign(0.5)  # beta = -0.5 rounds to one step below zero
    upstream = rng.normal(size=x.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        quantized = quantizer(x, True, variables)
        loss = tf.reduce_sum(quantized * upstream)
    grad_x, grad_step, grad_depth = tape.gradient(
        loss, [x, variables["step"], variables["depth"]])
    s, beta = np.float32(0.6), np.float32(-0.6)
    scaled = (x.numpy() - beta) / s
    np.testing.assert_allclose(quantized.numpy(), s * np.clip(np.floor(scaled + 0.5), 0, 3) + beta,
                               atol=1e-5)
    assert sorted(np.unique(np.round(quantized.numpy() / s, 3))) == [-1, 0, 1, 2]
    inside = (scaled >= 0) & (scaled <= 3)
    np.testing.assert_allclose(grad_x.numpy(), upstream * inside, atol=1e-6)
    scale = 1 / np.sqrt(75 * 3)
    manual_step = (upstream * np.where(scaled > 3, 3.0, np.where(
        scaled < 0, 0.0, np.round(scaled) - scaled))).sum() * scale
    np.testing.assert_allclose(grad_step.numpy(), manual_step, rtol=1e-4)
    # d a_q / d beta is 1 outside the grid; the variable is the depth -beta.
    np.testing.assert_allclose(grad_depth.numpy(), -(upstream * ~inside).sum() * scale, rtol=1e-4)


def test_lsq_plus_starts_at_the_mse_optimum_and_below_zero_only_where_activations_are():
    rng = np.random.default_rng(2)
    pre = rng.normal(size=(64, 6, 6, 4)).astype(np.float32)
    swish, relu = pre / (1 + np.exp(-pre)), np.maximum(pre, 0)
    errors = {}
    for name, values in (("swish", swish), ("relu", relu)):
        quantizer = kquant.quantizers.LSQPlusActivationQuantizer(4)
        variables = _built(quantizer, tf.TensorShape([None, 6, 6, 4]), keras.layers.ReLU)
        top = quantizer.initialize(variables, values)
        grid = quantizer.activation_grid(variables)
        assert top == pytest.approx(grid.high) and grid.levels == 16
        quantized = quantizer(tf.constant(values), False, variables).numpy()
        errors[name] = np.mean((quantized - values) ** 2)
        # LSQ's unsigned start on the same values: LSQ+'s MSE start is never worse.
        lsq = kquant.quantizers.LSQActivationQuantizer(4)
        lsq_variables = _built(lsq, tf.TensorShape([None, 6, 6, 4]), keras.layers.ReLU)
        lsq.initialize(lsq_variables, values)
        lsq_error = np.mean((lsq(tf.constant(np.maximum(values, 0)), False,
                                 lsq_variables).numpy() - values) ** 2)
        assert errors[name] <= lsq_error
        assert (grid.low < 0) == (name == "swish")


@pytest.mark.parametrize("bits,depth_steps", [(2, 1), (4, 0)])
def test_lsq_plus_model_trains_and_exports_exactly_at_any_offset(random_images, bits,
                                                                depth_steps):
    import tflite_export

    keras.utils.set_random_seed(bits)
    float_model = tiny_cnn()
    model = kquant.quantize_model(float_model, kquant.Recipe(
        bits, bits, weight_quantizer="lsq", activation_quantizer="lsq+", per_channel=True))
    kquant.calibrate_ranges(model, float_model, [random_images])
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(random_images, np.arange(16) % 10, batch_size=8, epochs=2, verbose=0)
    states = [s for s in quantizer_states(model) if "depth" in s.variables]
    assert [s.layer for s in states] == ["first_relu", "block_out", "depthwise_relu"]
    for state in states:  # grids after a conv, an Add and a depthwise conv
        step = float(state.variables["step"].numpy())
        state.variables["depth"].assign(depth_steps * step)
        assert state.quantizer.activation_grid(state.variables).low == \
            pytest.approx(-depth_steps * step)
    blob = assert_exports_exactly(model, random_images)
    summary = tflite_export.inspect(blob)
    # Each grid: the requantization, then an ADD and a SUB of one step (XNNPACK takes them all,
    # and the converter keeps them at a zero offset too).
    assert summary.ops.count("SUB") == 3 and summary.xnnpack_partitions == 1
