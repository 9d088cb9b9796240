import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras
from tests.conftest import tiny_cnn


def calibrated(model, images):
    """A few training steps so the 8-bit ranges and batch norm statistics are realistic."""
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    labels = np.arange(len(images)) % 10
    model.fit(images, labels, batch_size=8, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype(np.float32)


@pytest.mark.parametrize("weight_bits,activation_bits", [(1, 1), (2, 2), (4, 4), (3, 8)])
def test_export_is_fully_integer_with_exact_levels(images, weight_bits, activation_bits):
    recipe = kquant.Recipe(weight_bits, activation_bits, per_channel=True)
    model = calibrated(kquant.quantize_model(tiny_cnn(), recipe), images)
    tflite = tflite_export.convert(model, [images])
    summary = tflite_export.inspect(tflite)
    assert summary.float_ops == [] and summary.input_dtype == "int8"
    # per_channel: the dense head is a 1x1 CONV_2D (kquant.pointwise_dense)
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD"} <= set(summary.ops)
    assert "MUL" not in summary.ops  # batch norm folded into the convs
    report = tflite_export.verify(tflite, model, [(images, np.zeros(len(images)))])
    low_bit = {"middle", "depthwise"}
    assert all(report.weight_codes_match.values()) and low_bit <= set(report.weight_codes_match)
    for layer in low_bit:
        seen, allowed = report.weight_levels[layer]
        assert allowed == 2 ** weight_bits and 1 < seen <= allowed
    for layer, (seen, allowed) in report.activation_levels.items():
        assert allowed == 2 ** activation_bits and seen <= allowed, layer
    assert set(report.activation_levels) == {"first_relu", "block_out", "depthwise_relu"}
    # Random inputs and labels give near-tied logits, so compare values, not top-1 here
    # (top-1 agreement on real data is tested end to end); a tie flipping one activation
    # level may move single logits by a few steps, so the mean is held to one step.
    assert report.mean_logit_difference <= report.output_step


def test_export_refuses_switched_off_quantizers(images):
    model = kquant.quantize_model(tiny_cnn())
    kquant.precision.set_enabled(model, False, layers=["middle"])
    with pytest.raises(ValueError, match="middle.*switched off"):
        tflite_export.convert(model, [images])


def test_export_refuses_float_models(images):
    with pytest.raises(ValueError, match="no kquant quantizers"):
        tflite_export.convert(tiny_cnn(), [images])


def test_export_refuses_empty_or_non_finite_representative_data(images):
    model = calibrated(kquant.quantize_model(tiny_cnn()), images)
    with pytest.raises(ValueError, match="representative_data yielded no examples"):
        tflite_export.convert(model, [images[:0]])
    poisoned = images[:4].copy()
    poisoned[2, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="representative example 2 holds NaN"):
        tflite_export.convert(model, [poisoned])


def test_export_refuses_a_model_no_data_has_passed_through(images):
    unset = r"8-bit ranges of layers \['quantize_layer(_\d+)?'\] are still \[0, 0\]"
    with pytest.raises(ValueError, match=unset):
        tflite_export.convert(kquant.quantize_model(tiny_cnn()), [images])


def test_verify_and_inspect_take_a_path_and_refuse_what_is_not_tflite(images, tmp_path):
    model = calibrated(kquant.quantize_model(tiny_cnn()), images)
    tflite = tflite_export.convert(model, [images])
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite)
    assert tflite_export.inspect(str(path)).ops == tflite_export.inspect(tflite).ops
    assert tflite_export.verify(path, model, [images[:4]]).examples == 4
    for wrong in (b"not a flatbuffer at all", tflite[:4] + b"XXXX" + tflite[8:]):
        with pytest.raises(ValueError, match="verify: the model must be a TFLite flatbuffer"):
            tflite_export.verify(wrong, model, [images[:4]])
    with pytest.raises(ValueError, match="inspect: .* got a Sequential|inspect: .* got a Functional"):
        tflite_export.inspect(model)
    with pytest.raises(FileNotFoundError, match="inspect: no TFLite file at"):
        tflite_export.inspect(str(tmp_path / "missing.tflite"))


def test_integer_model_is_about_four_times_smaller_than_the_float_one(images):
    model = kquant.models.small_cnn((8, 8, 1), 10)  # 57k parameters: weights dominate the file
    quantized = calibrated(kquant.quantize_model(model), images)
    ratio = len(tflite_export.convert_float(model)) / len(tflite_export.convert(quantized, [images]))
    assert ratio > 3.3


def test_runtime_prefers_litert():
    assert tflite_export.interpreter_class().__module__.startswith("ai_edge_litert")
