"""Packed INT4/INT2 weights: the file holds the trained levels, computes what the int8 form of
the same codes computes, and what kquant's integer-exact mode says, on every runtime."""
import numpy as np
import pytest
from ai_edge_litert.tools import flatbuffer_utils

import kquant
import tflite_export
from conftest import tiny_cnn
from kquant.backend import tf, tfmot
from kquant.deploy import integer_outputs, lowering, storage
from kquant.deploy.integer_model import int8_input
from kquant.quantizers import quantizer_states
from tflite_export.inspect import TENSOR_TYPES, channels_last, weight_tensors
from tflite_export.packing import pack_weights
from tflite_export.runtime import int8_outputs


@pytest.mark.parametrize("kind, bits", [("int4", 4), ("int2", 2)])
def test_pack_then_unpack_gives_back_every_value(kind, bits):
    low, high = storage.RANGES[kind]
    values = np.random.default_rng(bits).integers(low, high + 1, size=37)  # not a whole byte
    packed = storage.pack(values, kind)
    assert packed.dtype == np.uint8 and packed.size == -(-37 * bits // 8)
    np.testing.assert_array_equal(storage.unpack(packed, kind, 37), values)
    # The first value sits in the lowest bits, as LiteRT reads it.
    assert storage.pack([-1, 0], "int4")[0] == 0x0F and storage.pack([1, 0, 0, -2], "int2")[0] == 0x81


def test_bias_rescaled_rounds_half_away_from_zero():
    stored = storage.LayerStorage("int4", np.full(7, 42), np.full(7, 2))
    bias = np.array([85, -85, 63, -63, 62, 10, 0])  # times 2 / 42
    np.testing.assert_array_equal(stored.bias(bias), [4, -4, 3, -3, 3, 0, 0])


def test_common_factor_is_per_channel_or_per_tensor():
    codes = np.array([[42, 15], [-126, 30], [0, -45]])
    np.testing.assert_array_equal(storage.common_factors(codes, per_tensor=False), [42, 15])
    np.testing.assert_array_equal(storage.common_factors(codes, per_tensor=True), [3, 3])
    np.testing.assert_array_equal(storage.common_factors(np.zeros((3, 2)), False), [1, 1])


@pytest.mark.parametrize("int8_codes, kind, stored", [
    ([-126, -42, 42, 126], "int4", [-6, -2, 2, 6]),   # 2-bit DoReFa: 42 x odd codes, doubled
    ([-126, -63, 0, 63], "int4", [-8, -4, 0, 4]),     # 2-bit LSQ: 63 x [-2, 1], times 4
    ([-127, 0, 127], "int4", [-7, 0, 7]),             # ternary
    ([-127, 0, 127], "int2", [-1, 0, 1]),
    ([-120, -15, 105], "int4", [-8, -1, 7])])         # 4-bit LSQ fills INT4 already
def test_stored_codes_spread_over_the_storage_range(int8_codes, kind, stored):
    codes = np.array(int8_codes)[:, None]
    plan = storage.layer_storage("layer", None, 4, codes, {"layer": kind})
    np.testing.assert_array_equal(plan.codes(codes)[:, 0], stored)
    scale = np.float32(0.01)
    # The real weights are unchanged: code x scale, up to float32 rounding of the scale.
    np.testing.assert_allclose(plan.codes(codes)[:, 0] * plan.scales([scale])[0],
                               np.array(int8_codes) * scale, rtol=1e-6)


def _model(bits, weight_quantizer="lsq"):
    tf.random.set_seed(bits)
    model = kquant.quantize_model(tiny_cnn((8, 8, 3)), kquant.Recipe(
        bits, bits, weight_quantizer=weight_quantizer, first_last_bits=None))
    images = np.random.default_rng(bits).normal(size=(32, 8, 8, 3)).astype(np.float32)
    for _ in range(3):  # non-trivial batch-norm statistics and 8-bit ranges
        model(images, training=True)
    return model, images


def _stored_codes(blob):
    """{layer: (the filter's integers as stored, unpacked by kquant, channels last, its type)}."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
    types = {code: name for name, code in TENSOR_TYPES.items()}
    codes = {}
    for op, weight, _, layer in weight_tensors(model):
        data = np.asarray(model.buffers[weight.buffer].data, np.uint8)
        kind = types[weight.type]
        values = data.view(np.int8) if kind == "int8" else \
            storage.unpack(data, kind, int(np.prod(weight.shape)))
        codes[layer] = channels_last(values.reshape(weight.shape), op), kind
    return codes


@pytest.mark.parametrize("bits, weight_storage, packed", [
    (4, "int4", {"first": "int4", "middle": "int4", "depthwise": "int4", "logits": "int4"}),
    (2, "int2", {"first": "int4", "middle": "int4", "depthwise": "int4", "logits": "int2"})])
def test_packed_file_holds_the_trained_levels_and_computes_exactly(bits, weight_storage, packed):
    model, images = _model(bits)
    blob8 = tflite_export.convert(model, [images])
    blob = tflite_export.convert(model, [images], weight_storage=weight_storage)
    stored = _stored_codes(blob)
    assert {layer: kind for layer, (_, kind) in stored.items()} == packed
    plan = storage.plan(model, weight_storage)
    for state in quantizer_states(model):
        if state.role != "weight":
            continue
        keras_codes = state.quantizer.codes_and_step(state.quantizer.fold(state.kernel),
                                                     state.variables)[0].numpy()
        codes, kind = stored[state.layer]
        low, high = storage.RANGES[kind]
        assert low <= codes.min() and codes.max() <= high
        # Unpacked and times the channel's factor: the Keras codes (up to a folded sign).
        flat = codes.reshape(-1, codes.shape[-1])
        expected = plan[state.layer].codes(keras_codes).reshape(flat.shape)
        assert np.all((flat == expected).all(0) | (flat == -expected).all(0)), state.layer
    # The twin: the same coarse codes stored as int8. Packing changes no output there.
    twin = pack_weights(blob8, {layer: storage.LayerStorage("int8", s.divisors, s.multipliers)
                                for layer, s in plan.items()})
    x8 = int8_input(model, lowering.lower(model).input_quant, images).numpy()
    runtimes = ["xnnpack", "builtin"] + (["micro"] if weight_storage == "int4" else [])
    for runtime in runtimes:
        deployed = int8_outputs(blob, x8, runtime)
        exact = integer_outputs(model, x8, runtime, int8_images=True,
                                weight_storage=weight_storage)
        np.testing.assert_array_equal(deployed, exact, err_msg=runtime)
        if runtime != "xnnpack":  # XNNPACK hands INT4 convolutions to the built-in kernels
            np.testing.assert_array_equal(deployed, int8_outputs(twin, x8, runtime))
    assert np.unique(deployed).size > 3
    # Smaller by the bytes packing saves, up to each buffer's alignment (16 bytes at most).
    saved = sum(codes.size - -(-codes.size * storage.BITS[kind] // 8)
                for codes, kind in stored.values())
    assert abs(len(twin) - len(blob) - saved) <= 16 * len(stored)
    report = tflite_export.verify(blob, model, [(images, np.zeros(len(images)))])
    assert all(report.weight_codes_match.values()) and report.exact_agreement == 1.0


def test_auto_keeps_what_int4_cannot_hold_and_int4_says_why():
    model, images = _model(4, weight_quantizer="dorefa")  # 16 odd levels: -15..15 steps
    blob = tflite_export.convert(model, [images], weight_storage="auto")
    assert set(tflite_export.inspect(blob).weight_storage.values()) == {"int8"}
    with pytest.raises(ValueError, match=r"convert: weight_storage='int4': layer 'first' has "
                                         r"4-bit weights whose codes span -15\.\.15"):
        tflite_export.convert(model, [images], weight_storage="int4")
    with pytest.raises(ValueError, match=r"weight_storage must be one of \['int8', 'int4', "):
        tflite_export.convert(model, [images], weight_storage="int3")


def test_verify_reads_a_peer_model_whose_weights_kquant_did_not_quantize():
    model = tfmot.quantization.keras.quantize_model(tiny_cnn((8, 8, 3)))  # TF-MOT's 8-bit
    images = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)
    model(images, training=True)
    blob = tflite_export.int8_converter(model, [images]).convert()
    report = tflite_export.verify(blob, model, [(images, np.zeros(len(images)))])
    assert set(tflite_export.inspect(blob).weight_storage.values()) == {"int8"}
    assert report.weight_codes_match == {} and report.agreement > 0.5
