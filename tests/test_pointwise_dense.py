"""Per-channel Dense: a Dense layer as a 1x1 convolution keeps a weight step per output unit
in Keras and in the TFLite file, and exports exactly."""
import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras
from kquant.pointwise_dense import PointwiseDense, pointwise_dense
from tests.conftest import assert_exports_exactly, tiny_cnn
from tests.test_export import calibrated


def test_pointwise_form_computes_the_dense_layer():
    model = tiny_cnn()
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    converted = pointwise_dense(model)
    assert isinstance(converted.get_layer("logits"), PointwiseDense)
    np.testing.assert_allclose(converted.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bits", [2, 4])
def test_per_channel_dense_exports_one_step_per_output_unit(bits, random_images):
    recipe = kquant.Recipe(bits, bits, per_channel=True, first_last_bits=None)
    model = calibrated(kquant.quantize_model(tiny_cnn(), recipe), random_images)
    state, = [s for s in kquant.quantizers.quantizer_states(model)
              if s.layer == "logits" and s.role == "weight"]
    codes, step = state.quantizer.codes_and_step(state.kernel, state.variables)
    step = np.reshape(step.numpy(), -1)
    assert step.shape == (10,) and len(np.unique(step)) == 10  # a step per output unit
    for unit in range(10):  # each unit's weights on its own 2^b-level grid
        assert len(np.unique(np.rint(codes.numpy()[..., unit]))) <= 2 ** bits
    tflite = assert_exports_exactly(model, random_images)
    summary = tflite_export.inspect(tflite)
    assert "FULLY_CONNECTED" not in summary.ops
    assert summary.weight_codes["logits"].shape[-1] == 10
    # The integer-exact outputs come in the model's shape, not the 1x1 conv's [1, 1, units].
    assert kquant.deploy.integer_outputs(model, random_images).shape == (len(random_images), 10)
