import numpy as np
import pytest

from kquant.backend import keras, tf
from kquant.quantizers import (ClippedActivationQuantizer, DoReFaWeightQuantizer, PACTQuantizer,
                               export_mode)


def build(quantizer, tensor, layer=None):
    host = layer or keras.layers.Layer()
    return quantizer.build(tensor.shape, "q", host)


def weighted_gradient(quantizer, w):
    """(w_q, d sum(w_q * channel index) / dw): the gradient of a loss weighting each output
    channel by its index, which an identity estimator passes straight to w."""
    variables = build(quantizer, w)
    with tf.GradientTape() as tape:
        w_q = quantizer(w, training=True, weights=variables)
        loss = tf.reduce_sum(w_q * np.arange(w_q.shape[-1], dtype=np.float32))
    return w_q.numpy(), tape.gradient(loss, w).numpy()


def dorefa(weights, bits, per_channel=False):
    w = tf.constant(weights)
    quantizer = DoReFaWeightQuantizer(bits, per_channel=per_channel)
    variables = build(quantizer, w)
    return quantizer, variables, quantizer(w, training=True, weights=variables).numpy()


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_dorefa_weights_have_two_to_the_bits_levels_within_the_float_range(bits):
    w = np.random.default_rng(bits).normal(size=(3, 3, 16, 32)).astype(np.float32)
    _, _, w_q = dorefa(w, bits)
    if bits == 1:  # a scale per output channel: two values in each
        assert all(len(np.unique(w_q[..., c])) == 2 for c in range(w.shape[-1]))
    else:
        assert len(np.unique(w_q)) == (255 if bits == 8 else 2 ** bits)
    assert np.abs(w_q).max() <= np.abs(w).max() * (1 + 1e-6)


def test_dorefa_levels_are_evenly_spaced_odd_multiples_of_the_step():
    w = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    _, _, w_q = dorefa(w, 3)
    codes = w_q / (np.abs(w).max() / 7)
    np.testing.assert_allclose(np.unique(codes), np.arange(-7, 8, 2), atol=1e-4)


@pytest.mark.parametrize("per_channel", [False, True])
def test_one_bit_weights_are_sign_times_mean_absolute_value_per_channel(per_channel):
    w = np.random.default_rng(1).normal(size=(3, 3, 4, 6)).astype(np.float32)
    w[0, 0, 0, 0] = 0.0  # sign(0) is +1: still two values
    _, _, w_q = dorefa(w, 1, per_channel=per_channel)
    expected = np.where(w >= 0, 1.0, -1.0) * np.abs(w).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(w_q, expected, rtol=1e-5)


def test_one_bit_scale_can_follow_per_channel_and_its_gradient_is_the_identity():
    w = tf.Variable(np.random.default_rng(4).normal(size=(3, 3, 4, 6)).astype(np.float32))
    w_q, gradient = weighted_gradient(DoReFaWeightQuantizer(1, binary_per_channel=False), w)
    np.testing.assert_allclose(np.unique(np.abs(w_q)), [np.abs(w.numpy()).mean()], rtol=1e-5)
    # DoReFa's (and BinaryConnect's) k = 1 estimator: dw_q/dw = 1
    expected = np.broadcast_to(np.arange(6, dtype=np.float32), w.shape)
    np.testing.assert_allclose(gradient, expected, rtol=1e-5)


def test_per_channel_weights_have_their_own_scale():
    rng = np.random.default_rng(2)
    w = (rng.normal(size=(3, 3, 4, 2)) * np.array([0.05, 1.0])).astype(np.float32)
    _, _, w_q = dorefa(w, 2, per_channel=True)
    for c in range(2):
        assert len(np.unique(w_q[..., c])) == 4
        assert np.isclose(np.abs(w_q[..., c]).max(), np.abs(w[..., c]).max(), rtol=1e-5)


def test_dorefa_gradient_is_straight_through_tanh():
    w = tf.Variable(np.random.default_rng(3).normal(size=(32, 4)).astype(np.float32))
    quantizer = DoReFaWeightQuantizer(4)
    variables = build(quantizer, w)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(quantizer(w, training=True, weights=variables))
    gradient = tape.gradient(loss, w).numpy()
    t = np.tanh(w.numpy())
    # d/dw [max|w| * (2 * n * w_n - n) / n] with w_n = t / (2 max|t|) + 0.5, rounding as identity
    expected = np.abs(w.numpy()).max() * (1 - t ** 2) / np.abs(t).max()
    np.testing.assert_allclose(gradient, expected, rtol=1e-4)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_clipped_activation_lies_on_the_grid_of_zero_to_one(bits):
    x = tf.constant(np.linspace(-2, 3, 2001, dtype=np.float32))
    quantizer = ClippedActivationQuantizer(bits)
    y = quantizer(x, training=True, weights=build(quantizer, x)).numpy()
    n = 2 ** bits - 1
    assert y.min() == 0.0 and np.isclose(y.max(), 1.0)
    np.testing.assert_allclose(y * n, np.round(y * n), atol=1e-4)
    assert len(np.unique(np.round(y * n))) == n + 1


def test_clipped_activation_gradient_is_one_inside_the_range_only():
    x = tf.constant([-0.5, 0.2, 0.7, 1.5])
    quantizer = ClippedActivationQuantizer(2)
    variables = build(quantizer, x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x, training=True, weights=variables)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 0])


def test_pact_clip_learns_from_inputs_above_it():
    x = tf.constant([-1.0, 0.5, 1.9, 2.5, 7.0])
    quantizer = PACTQuantizer(2, initial_clip=2.0)
    variables = build(quantizer, x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = quantizer(x, training=True, weights=variables)
    assert tape.gradient(y, variables["clip"]).numpy() == 2.0  # two inputs above alpha
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 0, 0])
    np.testing.assert_allclose(y.numpy(), [0, 2 / 3, 2, 2, 2], rtol=1e-5)


def test_bits_and_switch_are_variables_read_at_every_call():
    x = tf.constant(np.linspace(-1, 2, 1001, dtype=np.float32))
    quantizer = ClippedActivationQuantizer(4)
    variables = build(quantizer, x)
    call = tf.function(lambda: quantizer(x, training=True, weights=variables))
    assert len(np.unique(call().numpy())) == 16
    variables["bits"].assign(2.0)
    assert len(np.unique(call().numpy())) == 4
    variables["enabled"].assign(0.0)
    np.testing.assert_allclose(call().numpy(), np.clip(x.numpy(), 0, 1))
    assert call.experimental_get_tracing_count() == 1


def test_export_mode_traces_only_the_quantized_path():
    x = tf.constant([0.3, 2.0])
    quantizer = ClippedActivationQuantizer(1)
    variables = build(quantizer, x)
    with export_mode():
        graph = tf.function(lambda: quantizer(x, training=False, weights=variables)) \
            .get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    assert "If" not in op_types and "StatelessIf" not in op_types
    assert "FakeQuantWithMinMaxVars" in op_types


@pytest.mark.parametrize("bad", [0, 9, 2.5, "4", True])
def test_bits_out_of_range_are_rejected_with_the_allowed_values(bad):
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
        DoReFaWeightQuantizer(bad)


@pytest.mark.parametrize("quantizer", [DoReFaWeightQuantizer(3, per_channel=True),
                                       ClippedActivationQuantizer(2), PACTQuantizer(4, 3.0)])
def test_quantizers_serialize_and_deserialize(quantizer):
    config = keras.utils.serialize_keras_object(quantizer)
    restored = keras.utils.deserialize_keras_object(config)  # registered: no custom objects
    assert restored == quantizer and restored is not quantizer


def test_the_protocol_states_each_quantizers_grid_and_levels():
    from kquant.quantizers import ChannelAwareActivationQuantizer

    x = tf.constant(np.linspace(-1, 4, 101, dtype=np.float32))
    pact = PACTQuantizer(2, initial_clip=3.0)
    variables = build(pact, x)
    grid = pact.activation_grid(variables)
    assert (grid.step, grid.low, grid.high, grid.levels) == (1.0, 0.0, 3.0, 4)
    np.testing.assert_allclose(np.unique(pact(x, True, variables).numpy()),
                               np.arange(4) * grid.step, atol=1e-6)
    variables["bits"].assign(3.0)  # the grid follows the variable, not the constructor
    assert pact.activation_grid(variables).levels == 8 and pact.deploy_bits == 2
    clipped = ClippedActivationQuantizer(1)
    assert clipped.activation_grid(build(clipped, x)).high == 1.0 and clipped.fixed_clip == 1.0
    assert PACTQuantizer.fixed_clip is None and ChannelAwareActivationQuantizer.fixed_clip is None
    weights = DoReFaWeightQuantizer(8)
    assert weights.level_count(build(weights, tf.zeros((3, 3, 2, 2)))) == 255  # narrow int8


def test_initialize_starts_learned_clips_from_float_activations():
    from kquant.quantizers import ChannelAwareActivationQuantizer, fit_clip

    values = np.abs(np.random.default_rng(0).normal(size=(64, 8))).astype(np.float32)
    pact = PACTQuantizer(2, calibration_percentile=90.0)
    variables = build(pact, tf.constant(values))
    assert pact.initialize(variables, values) == pytest.approx(np.percentile(values, 90.0))
    assert float(variables["clip"]) == pytest.approx(np.percentile(values, 90.0))
    aware = ChannelAwareActivationQuantizer(2)
    variables = build(aware, tf.constant(values))
    assert aware.initialize(variables, values) == pytest.approx(float(fit_clip(values, 2)))
    assert float(variables["fitted"]) == 1.0
    clipped = ClippedActivationQuantizer(2)
    assert clipped.initialize(build(clipped, tf.constant(values)), values) is None
