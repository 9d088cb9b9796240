"""Binary networks: sign activations, 1-bit weights, and a W1A1 ResNet-20 exported as integers."""
import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras, tf
from kquant.quantizers import SignActivationQuantizer
from tests.test_quantizers import build


def sign(bits, x, clip=1.0):
    quantizer = SignActivationQuantizer(bits, clip=clip)
    variables = build(quantizer, x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x, training=True, weights=variables)
        loss = tf.reduce_sum(y * tf.range(x.shape[0], dtype=tf.float32))
    return quantizer, variables, y.numpy(), tape.gradient(loss, x).numpy()


def test_one_bit_sign_activation_is_plus_or_minus_c_with_the_clipped_estimator():
    x = tf.constant([-2.0, -0.7, -1e-4, 0.0, 1e-4, 0.3, 0.7, 0.71, 3.0])
    quantizer, variables, y, gradient = sign(1, x, clip=0.7)
    np.testing.assert_allclose(y, 0.7 * np.where(x.numpy() >= 0, 1, -1), rtol=1e-6)
    # gradient 1 for |x| <= c, 0 outside
    np.testing.assert_array_equal(gradient, np.arange(9) * (np.abs(x.numpy()) <= 0.7))
    grid = quantizer.activation_grid(variables)
    assert (grid.low, grid.high, grid.levels) == (-0.7, 0.7, 2)
    assert np.isclose(grid.step, 0.7)  # the int8 scale: codes -1 and +1


def test_two_bit_signed_activation_has_four_levels_spread_over_minus_c_to_c():
    x = tf.constant(np.linspace(-3, 3, 601, dtype=np.float32))
    _, _, y, _ = sign(2, x, clip=1.5)
    np.testing.assert_allclose(np.unique(y), [-1.5, -0.5, 0.5, 1.5], atol=1e-5)


@pytest.mark.parametrize("bad", [dict(bits=8), dict(bits=1, clip=0.0)])
def test_signed_activations_refuse_what_int8_cannot_hold(bad):
    with pytest.raises(ValueError, match="SignActivationQuantizer: (bits|clip)"):
        SignActivationQuantizer(**bad)


def conv_chain():
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for i in range(2):
        x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_sign_activations_replace_the_relu_and_export_two_values_per_tensor(digits):
    keras.utils.set_random_seed(0)
    model = kquant.quantize_model(conv_chain(), kquant.Recipe(1, 1, activation_quantizer="sign"))
    kquant.compile_classifier(model, 0.05, 2, 20)
    model.fit(digits.train.take(20), epochs=2, verbose=0)
    images = next(iter(digits.test))[0]
    features = keras.Model(model.inputs, model.get_layer("quant_relu0").output)(images).numpy()
    assert set(np.unique(features)) == {-1.0, 1.0}  # no ReLU left in front of the sign
    tflite = tflite_export.convert(model, digits.train.take(2))
    report = tflite_export.verify(tflite, model, digits.test)
    assert report.activation_levels == {"relu0": (2, 2), "relu1": (2, 2)}
    assert report.weight_levels["conv1"] == (2, 2) and report.levels_ok
    assert report.agreement >= 0.99 and not tflite_export.inspect(tflite).float_ops


def test_w1a1_resnet20_exports_two_weights_per_channel_and_two_activation_values(digits):
    keras.utils.set_random_seed(0)
    float_model = kquant.models.build_model("resnet20", digits.input_shape, digits.num_classes)
    model = kquant.quantize_model(float_model, kquant.Recipe(1, 1, activation_quantizer="pact"))
    kquant.compile_classifier(model, 0.05, 1, 4)
    model.fit(digits.train.take(4), epochs=1, verbose=0)
    states = [s for s in kquant.quantizers.quantizer_states(model)
              if s.role == "weight" and s.quantizer.deploy_bits == 1]
    assert len(states) == 20  # the 18 block convs and 2 shortcut convs; the stem stays 8-bit
    for state in states:
        w_q = state.quantizer(state.kernel, training=False, weights=state.variables).numpy()
        assert all(len(np.unique(w_q[..., c])) == 2 for c in range(w_q.shape[-1])), state.layer
    tflite = tflite_export.convert(model, digits.train.take(2))
    report = tflite_export.verify(tflite, model, digits.test)
    assert all(report.weight_levels[s.layer] == (2, 2) for s in states)
    assert len(report.activation_levels) == 19
    assert all(seen <= 2 == allowed for seen, allowed in report.activation_levels.values())
    assert report.agreement >= 0.99 and all(report.weight_codes_match.values())
