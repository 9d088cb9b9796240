import numpy as np
import pytest

import kquant
from kquant.quantizers import quantizer_states
from kquant.quantizers.model_states import quantized_models
from kquant.techniques import JointDistillation, clipped_teacher
from tests.conftest import tiny_cnn


def bits(model):
    return {(s.layer, s.role): (int(s.bits.numpy()), bool(s.enabled.numpy())) for s in
            quantizer_states(model)}


def test_bits_and_switches_are_set_by_role_and_layer():
    model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(4, 4))
    kquant.precision.set_bits(model, 2, role="activation", layers=["block_out"])
    kquant.precision.set_enabled(model, False, role="weight")
    state = bits(model)
    assert state[("block_out", "activation")] == (2, True)
    assert state[("first_relu", "activation")] == (4, True)
    assert state[("middle", "weight")] == (4, False) and state[("first", "weight")] == (8, False)
    # the deployed bit-width is the configuration, untouched by the variable
    assert {s.quantizer.deploy_bits for s in quantizer_states(model) if s.layer == "block_out"} == {4}
    with pytest.raises(ValueError, match=r"No kquant quantizer in layers \['nowhere'\]"):
        kquant.precision.set_bits(model, 2, layers=["nowhere"])
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
        kquant.precision.set_bits(model, 9)


def test_states_hold_each_kernel_and_the_walk_skips_float_networks():
    float_model = tiny_cnn()
    students = [kquant.quantize_model(float_model, kquant.Recipe(b, b)) for b in (2, 4)]
    trainer = JointDistillation(clipped_teacher(float_model), students, guidance="mse",
                                feature_layers=["block_out"])
    assert quantized_models(trainer) == students  # not the teacher, not the feature views
    states = quantizer_states(trainer)
    assert len(states) == 2 * len(quantizer_states(students[0]))
    middle = next(s for s in quantizer_states(students[0]) if s.layer == "middle")
    assert middle.role == "weight" and middle.kernel.shape == (3, 3, 8, 8)
    kquant.precision.set_bits(trainer, 3, role="activation")
    assert all(int(s.bits.numpy()) == 3 for s in states if s.role == "activation")
    assert np.all([s.kernel is None for s in states if s.role == "activation"])
