"""kquant.deploy: the integer-exact Keras model equals the int8 TFLite model on every runtime."""
import numpy as np
import pytest

import kquant
import tflite_export
import tflite_export.layerwise
from kquant.backend import keras, tf
from kquant.deploy import fixed_point, integer_model, integer_outputs, lowering
from kquant.deploy.integer_model import int8_input
from tests.conftest import tiny_cnn
from tflite_export.runtime import RUNTIMES, int8_outputs, micro_arena_bytes


def _conv_bn(x, filters, name, kernel=3, strides=1, relu="relu", depthwise=False):
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides, padding="same", use_bias=False,
                                         name=name)(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False,
                                name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu == "relu":
        return keras.layers.ReLU(name=f"{name}_relu")(x)
    if relu == "relu6":
        return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)
    return x


def _head(x, flatten=False):
    x = keras.layers.Flatten(name="flatten")(x) if flatten else \
        keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dense(5, name="logits")(x)


def conv_model(inputs):
    # A linear conv-BN with its own 8-bit output: negative accumulators round too.
    x = _conv_bn(inputs, 8, "first")
    return _head(_conv_bn(x, 6, "second", strides=2, relu=None), flatten=True)


def depthwise_model(inputs):
    x = _conv_bn(inputs, 8, "first")
    x = _conv_bn(x, 8, "dw_relu6", relu="relu6", depthwise=True)
    return _head(_conv_bn(x, 8, "dw_linear", strides=2, relu=None, depthwise=True))


def dense_model(inputs):
    x = keras.layers.Flatten(name="flatten")(_conv_bn(inputs, 4, "first"))
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    return keras.layers.Dense(5, name="logits")(x)


def add_model(inputs):
    x = _conv_bn(inputs, 8, "first")
    y = _conv_bn(x, 8, "branch", relu=None)
    x = keras.layers.ReLU(name="block_out")(keras.layers.Add(name="add")([x, y]))
    z = _conv_bn(x, 8, "linear_branch", relu=None)
    return _head(keras.layers.Add(name="add_linear")([x, z]))  # an Add with an 8-bit output


def average_pool_model(inputs):
    x = _conv_bn(inputs, 8, "first")
    return _head(keras.layers.AveragePooling2D(2, name="average")(x), flatten=True)


def concatenation_model(inputs):
    a = _conv_bn(inputs, 4, "wide", kernel=3)
    b = _conv_bn(inputs, 6, "narrow", kernel=1)
    return _head(keras.layers.Concatenate(name="concat")([a, b]))


def pad_and_max_pool_model(inputs):
    x = keras.layers.ZeroPadding2D(1, name="pad")(_conv_bn(inputs, 8, "first"))
    x = keras.layers.MaxPooling2D(2, name="max_pool")(x)
    x = keras.layers.GlobalMaxPooling2D(name="global_max")(_conv_bn(x, 8, "second"))
    return keras.layers.Dense(5, name="logits")(x)


MODELS = {f.__name__.replace("_model", ""): f for f in
          (conv_model, depthwise_model, dense_model, add_model, average_pool_model,
           concatenation_model, pad_and_max_pool_model)}


def _deployable(build, bits, seed=0, **recipe):
    """A quantized tiny model with non-trivial batch norms (some negative scales), dense
    biases and 8-bit ranges set by training-mode passes, and images for it."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)  # the same kernels whichever tests ran before
    inputs = keras.Input((8, 8, 3))
    float_model = keras.Model(inputs, build(inputs))
    for layer in float_model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.choice([-1, 1], c) * rng.uniform(0.5, 2, c),
                               rng.normal(0, 0.5, c), rng.normal(0, 0.3, c),
                               rng.uniform(0.5, 2, c)])
        elif isinstance(layer, keras.layers.Dense):
            layer.bias.assign(rng.normal(0, 0.3, layer.bias.shape))
    model = kquant.quantize_model(float_model, kquant.Recipe(bits, bits, **recipe))
    images = rng.normal(size=(48, 8, 8, 3)).astype(np.float32)
    for _ in range(3):
        model(images, training=True)
    return model, images


def _assert_equal_on_every_runtime(model, images):
    blob = tflite_export.convert(model, [images])
    program = lowering.lower(model)
    int8_images = int8_input(model, program.input_quant, images).numpy()
    for runtime in RUNTIMES:
        expected = int8_outputs(blob, int8_images, runtime)
        exact = integer_outputs(model, images, runtime)
        differ = np.abs(expected.astype(int) - exact.astype(int))
        assert differ.max() == 0, (runtime, float((differ > 0).mean()), int(differ.max()))
    assert np.unique(expected).size > 3


# 1 and 8 bits run in CI (slow); 2 and 4 locally too.
@pytest.mark.parametrize("bits", [pytest.param(1, marks=pytest.mark.slow), 2, 4,
                                  pytest.param(8, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_integer_model_equals_tflite_on_every_runtime(name, bits):
    _assert_equal_on_every_runtime(*_deployable(MODELS[name], bits))


@pytest.mark.parametrize("quantizer, bits", [("sign", 1), ("sign", 2), ("sparse", 2)])
@pytest.mark.parametrize("name", ["conv", "add"])
def test_shifted_and_signed_grids_equal_tflite(name, quantizer, bits):
    # The shift folds into the conv bias, or becomes an ADD after a residual sum; the sign
    # grid is relabelled by a SUB.
    _assert_equal_on_every_runtime(*_deployable(MODELS[name], bits,
                                                activation_quantizer=quantizer))


def test_export_has_no_minimum_and_one_xnnpack_partition():
    model, images = _deployable(depthwise_model, 2)
    blob = tflite_export.convert(model, [images])
    interpreter = tflite_export.runtime.make_interpreter(blob)
    names = [op["op_name"] for op in interpreter._get_ops_details()]  # pylint: disable=protected-access
    assert "MINIMUM" not in names and "RELU" not in names
    assert names.count("DELEGATE") == tflite_export.inspect(blob).xnnpack_partitions == 1


def test_lowering_writes_the_converters_scales_and_biases():
    model, images = _deployable(add_model, 4)
    blob = tflite_export.convert(model, [images])
    interpreter = tflite_export.runtime.make_interpreter(blob)
    stored = {}
    for tensor in interpreter.get_tensor_details():
        parameters = tensor["quantization_parameters"]
        if tensor["dtype"] == np.int32 and tensor["shape"].size == 1 and tensor["shape"][0] > 1:
            stored.setdefault("biases", []).append(interpreter.get_tensor(tensor["index"]))
        elif tensor["dtype"] == np.int8 and parameters["scales"].size > 1:
            stored.setdefault("weight_scales", []).append(parameters["scales"])
    program = lowering.lower(model)
    weight_ops = [op for op in program.ops if hasattr(op, "weight_scales")]
    assert len(weight_ops) == len(stored["weight_scales"]) == 4
    for op in weight_ops:
        # Bit for bit: the same float32 scales, the same int32 biases.
        assert any(np.array_equal(op.weight_scales, s) for s in stored["weight_scales"]), op.name
        assert any(np.array_equal(op.bias, b) for b in stored["biases"]), op.name


def test_negative_batch_norm_scale_flips_the_codes_of_its_channels():
    model, _ = _deployable(conv_model, 4)
    program = lowering.lower(model)
    first = program.ops[0]
    bn = model.get_layer("quant_first_bn").layer
    negative = bn.gamma.numpy() < 0
    assert negative.any() and (~negative).any()
    state = next(s for s in kquant.quantizers.quantizer_states(model) if s.layer == "first")
    codes = np.rint(state.quantizer.codes_and_step(state.kernel, state.variables)[0].numpy())
    np.testing.assert_array_equal(first.codes[..., negative], -codes[..., negative])
    np.testing.assert_array_equal(first.codes[..., ~negative], codes[..., ~negative])


def test_integer_model_evaluates_like_a_keras_model():
    model, images = _deployable(conv_model, 4)
    labels = np.arange(len(images)) % 5
    assert kquant.deploy.integer_model is integer_model  # reachable after `import kquant`
    exact = integer_model(model, "xnnpack")
    exact.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    _, accuracy = exact.evaluate(images, labels, verbose=0)
    logits = exact.predict(images, verbose=0)
    assert accuracy == pytest.approx(np.mean(np.argmax(logits, 1) == labels))
    codes = integer_outputs(model, images, "xnnpack").astype(np.float32)
    quant = lowering.lower(model).output_quant
    np.testing.assert_allclose(logits, (codes - quant.zero_point) * quant.scale, rtol=1e-6)


def test_quantize_multiplier_matches_tflite():
    # Values worked by hand from TFLite's QuantizeMultiplier (frexp, Q31, round half away).
    assert fixed_point.quantize_multiplier(0.5) == (1 << 30, 0)
    assert fixed_point.quantize_multiplier(0.25) == (1 << 30, -1)
    assert fixed_point.quantize_multiplier(1.0) == (1 << 30, 1)
    assert fixed_point.quantize_multiplier(0.0) == (0, 0)
    assert fixed_point.quantize_multiplier(2.0 ** -40) == (0, 0)
    mantissa, shift = fixed_point.quantize_multiplier(0.0065)
    assert mantissa * 2.0 ** (shift - 31) == pytest.approx(0.0065, rel=1e-9)


@pytest.mark.parametrize("rounding, expected", [
    # 0.25 * x at x = -6, -2, 2, 6 (the ties -1.5, -0.5, 0.5, 1.5 reach the final shift): away
    # from zero (gemmlowp) or up (ruy).
    (fixed_point.multiply_by_quantized_multiplier, [-2, -1, 1, 2]),
    (fixed_point.ruy_multiply_by_quantized_multiplier, [-1, 0, 1, 2]),
])
def test_fixed_point_rounds_ties_as_the_kernels_do(rounding, expected):
    mantissa, shift = fixed_point.quantize_multiplier(0.25)
    x = tf.constant([-6, -2, 2, 6], tf.int64)
    assert rounding(x, mantissa, shift).numpy().tolist() == expected


def test_fake_quant_zero_point_nudges_like_the_converter():
    # [-0.75, 1.75]: the zero point 76.5 of [0, 255] rounds to 77, i.e. -51 in int8.
    quant = lowering.fake_quant_quantization(-0.75, 1.75)
    assert quant.zero_point == -51
    assert quant.scale == np.float32(2.5 / 255)
    assert lowering.fake_quant_quantization(0.0, 2.0).zero_point == -128


def test_unknown_runtime_is_refused():
    model, _ = _deployable(conv_model, 4)
    with pytest.raises(ValueError, match="runtime must be one of"):
        integer_model(model, "gpu")
    with pytest.raises(ValueError, match="int8_outputs: runtime"):
        int8_outputs(b"", np.zeros((1, 8, 8, 3), np.int8), "gpu")


def test_switched_off_quantizers_are_refused():
    model, _ = _deployable(conv_model, 4)
    kquant.precision.set_enabled(model, False, role="activation")
    with pytest.raises(ValueError, match="integer_model: quantizers of layers"):
        integer_model(model)
    with pytest.raises(ValueError, match="snap_biases: quantizers of layers"):
        kquant.deploy.snap_biases(model)


def test_verify_reports_exact_agreement_layer_by_layer():
    model, images = _deployable(add_model, 2)
    blob = tflite_export.convert(model, [images])
    report = tflite_export.verify(blob, model, [images], runtime="builtin")
    assert report.exact_agreement == 1.0
    assert {"first_relu", "branch_bn", "block_out", "linear_branch_bn", "add_linear", "pool",
            "logits"} <= set(report.layer_differences)
    assert all(d.differing == 0 and d.values > 0 for d in report.layer_differences.values())
    assert "integer-exact mode on builtin: 1.0000" in str(report)


def test_layer_differences_pin_a_difference_to_its_layer():
    model, images = _deployable(add_model, 4)
    blob = tflite_export.convert(model, [images])
    program = lowering.lower(model)
    branch = next(op for op in program.ops if op.name == "quant_branch_bn")
    branch.bias = branch.bias + 40  # a wrong bias in one layer only
    int8_images = int8_input(model, program.input_quant, images).numpy()
    layers = tflite_export.layerwise.layer_differences(blob, program, int8_images[:8])
    assert layers["branch_bn"].differing > 0.05
    assert all(d.differing == 0 for name, d in layers.items() if name != "branch_bn")


def test_verify_says_why_a_model_has_no_exact_mode():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="input_bn")(inputs)  # BN without a conv before it
    x = _conv_bn(x, 4, "first")
    model = kquant.quantize_model(keras.Model(inputs, _head(x)), kquant.Recipe(4, 4))
    images = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)
    model(images, training=True)
    report = tflite_export.verify(tflite_export.convert(model, [images]), model, [images])
    assert report.exact_agreement is None
    assert "input_bn" in report.exact_error and "not available" in str(report)


def test_micro_arena_is_the_smallest_that_runs_the_model():
    model, images = _deployable(conv_model, 4)
    blob = tflite_export.convert(model, [images])
    int8_images = int8_input(model, lowering.lower(model).input_quant, images).numpy()[:4]
    size = micro_arena_bytes(blob)
    np.testing.assert_array_equal(int8_outputs(blob, int8_images, "micro", size),
                                  int8_outputs(blob, int8_images, "micro"))
    with pytest.raises(ValueError, match="micro_arena_bytes"):
        int8_outputs(blob, int8_images, "micro", size - 16)


def _keras_equals_integer(model, images):
    """The share of output values on which Keras' float path equals the integer-exact mode on
    XNNPACK, which requantizes in float32 (a near-tie rounds as in Keras; the built-in kernels'
    two roundings move some by a step)."""
    quant = lowering.lower(model).output_quant
    exact = (integer_outputs(model, images, "xnnpack").astype(np.float32) - quant.zero_point) * \
        quant.scale
    return float(np.mean(np.isclose(model.predict(images, verbose=0), exact, rtol=0,
                                    atol=quant.scale / 4)))


@pytest.mark.parametrize("name, recipe, storage", [
    ("conv", {}, "int8"), ("add", {}, "int8"), ("dense", {}, "int8"),
    ("depthwise", dict(per_channel=True, fold_batch_norm=True), "int8"),
    ("add", dict(weight_quantizer="lsq"), "int4")])
def test_snapped_biases_make_keras_compute_the_deployed_model(name, recipe, storage):
    model, images = _deployable(MODELS[name], 2, **recipe)
    before = lowering.lower(model, storage)
    agreement_before = _keras_equals_integer(model, images)
    assert agreement_before < 1.0  # half a bias step already flips 2-bit activations here
    moved = kquant.deploy.snap_biases(model, storage)
    assert moved and max(moved.values()) <= 0.5 + 1e-4
    # On the grid up to float32 rounding of the bias (the int32 step can be 1e-5 of it).
    assert all(abs(o.steps).max() < 0.05 for o in lowering.bias_offsets(model, storage))
    # The deployed integers do not change; Keras now computes them.
    after = lowering.lower(model, storage)
    for old, new in zip(before.ops, after.ops):
        if hasattr(old, "bias"):
            np.testing.assert_array_equal(old.bias, new.bias)
    np.testing.assert_array_equal(integer_outputs(model, images, "builtin", weight_storage=storage),
                                  before.run(int8_input(model, before.input_quant, images),
                                             kquant.deploy.runtimes.get("builtin")))
    assert _keras_equals_integer(model, images) == 1.0


def test_snapped_biases_hold_a_quantizers_input_shift():
    # The converter folds the sign grid's shift into the conv bias: Keras' bias moves to the
    # deployed bias less the shift.
    model, images = _deployable(conv_model, 2, activation_quantizer="sign")
    assert any(getattr(s.quantizer, "input_shift", 0) for s in kquant.quantizers.quantizer_states(model))
    kquant.deploy.snap_biases(model)
    assert all(abs(o.steps).max() < 0.05 for o in lowering.bias_offsets(model))
    assert _keras_equals_integer(model, images) == 1.0


def test_training_ends_with_snapped_biases_and_skips_float_models(digits, capsys):
    model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(2, 2))
    schedule = kquant.techniques.Schedule(1, 5, 0.05)
    training = kquant.techniques.prepare(model, (), kquant.techniques.Context(schedule))
    training.model.fit(digits.train.take(5), epochs=1, callbacks=training.callbacks, verbose=0)
    assert all(abs(o.steps).max() < 0.05 for o in lowering.bias_offsets(model)
               if o.variable is not None)
    training = kquant.techniques.prepare(tiny_cnn(), (), kquant.techniques.Context(schedule))
    training.model.fit(digits.train.take(5), epochs=1, callbacks=training.callbacks, verbose=0)
    assert "biases" not in capsys.readouterr().out  # nothing to snap, nothing to say


def test_repeated_integer_outputs_do_not_warn_of_retracing(caplog):
    model, images = _deployable(conv_model, 2)
    images = np.concatenate([images] * 6)  # several batches: each call traces its own program
    for _ in range(6):
        integer_outputs(model, images, "xnnpack", batch_size=64)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
