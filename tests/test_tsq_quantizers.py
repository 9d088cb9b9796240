"""TSQ's quantizers: sparse 2-bit activation codes and ternary weights, and their export."""
import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras, tf
from kquant.quantizers import SparseActivationQuantizer, TernaryWeightQuantizer
from kquant.quantizers.sparse import gaussian_step, gaussian_threshold
from tests.conftest import tiny_cnn
from tests.test_quantizers import build, weighted_gradient


def test_closed_forms_match_the_paper():
    assert gaussian_threshold(0.0) == 0.0
    assert gaussian_step(0.0, form="paper") == pytest.approx(0.5388, abs=2e-4)
    assert gaussian_step(0.32, form="paper") == pytest.approx(0.6487, abs=2e-4)  # released
    # where eps = D / 2 the deployed (shifted) form is the paper's
    step = gaussian_step(0.32, form="shifted")
    assert step == pytest.approx(0.6487, abs=3e-3)
    with pytest.raises(ValueError, match="sparsity must be in \\[0, 1\\)"):
        SparseActivationQuantizer(sparsity=1.0)


def test_sparse_codes_hold_four_values_with_the_expected_sparsity():
    x = tf.constant(np.random.default_rng(0).normal(size=200000).astype(np.float32))
    quantizer = SparseActivationQuantizer(2, sparsity=0.4)
    variables = build(quantizer, x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x, training=True, weights=variables)
    values = y.numpy()
    d, eps = quantizer.step, quantizer.threshold
    np.testing.assert_allclose(np.unique(values), [0, d, 2 * d, 3 * d], rtol=1e-5)
    assert np.mean(values == 0) == pytest.approx(0.5 + 0.4 / 2, abs=0.005)  # P(x < eps)
    expected = np.where(x.numpy() < eps, 0, d * np.minimum(np.floor((x.numpy() - eps) / d) + 1, 3))
    assert np.mean(np.abs(values - expected) < 1e-4) > 0.9999
    gradient = tape.gradient(y, x).numpy()
    np.testing.assert_array_equal(gradient, ((x.numpy() >= 0) & (x.numpy() <= 3 * d)).astype(np.float32))


def test_ternary_weights_hold_three_values_per_channel_and_keep_ternary_kernels():
    w = tf.Variable(np.random.default_rng(1).normal(size=(3, 3, 8, 5)).astype(np.float32))
    quantizer = TernaryWeightQuantizer(2, per_channel=True)
    w_q, gradient = weighted_gradient(quantizer, w)
    for c in range(5):
        assert len(np.unique(w_q[..., c])) == 3
    np.testing.assert_allclose(gradient, np.broadcast_to(np.arange(5, dtype=np.float32), w.shape))
    variables = build(quantizer, w)
    already = w_q  # alpha * t is its own ternarisation
    np.testing.assert_allclose(quantizer(tf.constant(already), training=False, weights=variables),
                               already, rtol=1e-6)
    with pytest.raises(ValueError, match="weight_bits must be 2"):
        kquant.Recipe(4, 2, weight_quantizer="ternary")


def test_ternary_weights_and_sparse_codes_export_exactly(digits):
    keras.utils.set_random_seed(0)
    recipe = kquant.Recipe(2, 2, weight_quantizer="ternary", activation_quantizer="sparse",
                           per_channel=True)
    model = kquant.quantize_model(tiny_cnn(), recipe)
    rows = {(r["layer"], r["role"]): r for r in kquant.describe(model, print_fn=None)}
    assert rows[("first", "weight")]["quantizer"] == "DoReFaWeightQuantizer"  # 8-bit edge
    kquant.compile_classifier(model, 0.05, 2, 20)
    model.fit(digits.train.take(20), epochs=2, verbose=0)
    tflite = tflite_export.convert(model, digits.train.take(2))
    report = tflite_export.verify(tflite, model, digits.test)
    assert report.weight_levels["middle"] == (3, 3) and report.weight_levels["depthwise"] == (3, 3)
    assert all(seen <= 4 == allowed for seen, allowed in report.activation_levels.values())
    assert report.agreement >= 0.98 and not tflite_export.inspect(tflite).float_ops
