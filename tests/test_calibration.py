import numpy as np

import kquant
from kquant.backend import keras
from tests.conftest import tiny_cnn


def float_output(model, name, images):
    return keras.Model(model.inputs, model.get_layer(name).output)(images).numpy()


def test_ranges_start_from_the_float_model(random_images):
    float_model = tiny_cnn()
    pact = lambda bits: kquant.quantizers.PACTQuantizer(bits, calibration_percentile=99.0)  # noqa: E731
    model = kquant.quantize_model(float_model, kquant.Recipe(4, 4, activation_quantizer=pact))
    chosen = kquant.calibrate_ranges(model, float_model, [random_images])
    for name in ("first_relu", "block_out", "depthwise_relu"):  # PACT clips
        expected = np.percentile(float_output(float_model, name, random_images), 99.0)
        assert np.isclose(chosen[name], expected, rtol=1e-5)
        assert np.isclose(model.get_layer(f"quant_{name}")._output_quantizer_vars["clip"].numpy(),
                          expected, rtol=1e-5)
    for name in ("middle_bn", "pool", "logits"):  # 8-bit ranges
        values = float_output(float_model, name, random_images)
        assert np.allclose(chosen[name], (min(values.min(), 0), max(values.max(), 0)), rtol=1e-5)
    assert np.allclose(chosen["input"], (random_images.min(), random_images.max()))


def test_calibrated_model_starts_where_the_float_model_is(digits):
    keras.utils.set_random_seed(0)
    float_model = kquant.models.small_cnn((8, 8, 1), 10)
    kquant.compile_classifier(float_model, 0.05, 3, 45)
    float_model.fit(digits.train, epochs=3, verbose=0)
    float_top1 = float_model.evaluate(digits.test, verbose=0)[1]

    def top1(calibrate):
        model = kquant.quantize_model(float_model, kquant.Recipe(8, 8, activation_quantizer="pact"))
        if calibrate:
            kquant.calibrate_ranges(model, float_model, digits.train)
        return kquant.compile_classifier(model).evaluate(digits.test, verbose=0)[1]

    # before any training step, TF-MOT's ranges are not yet set: the model is near chance
    assert top1(False) < 0.3 < float_top1 - 0.05 <= top1(True)


def test_folded_layers_start_from_their_batch_norms_output(random_images):
    float_model = tiny_cnn()
    float_model.get_layer("middle_bn").set_weights(
        [np.full(8, 3.0), np.full(8, 1.0), np.zeros(8), np.full(8, 0.5)])
    model = kquant.quantize_model(float_model, kquant.Recipe(4, 4, per_channel=True,
                                                             fold_batch_norm=True))
    chosen = kquant.calibrate_ranges(model, float_model, [random_images])
    values = float_output(float_model, "middle_bn", random_images)  # not the conv's output
    assert np.allclose(chosen["middle"], (min(values.min(), 0), max(values.max(), 0)), rtol=1e-5)
    assert "middle_bn" not in chosen
