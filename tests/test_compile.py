import numpy as np
import pytest

import kquant
from kquant.backend import keras, tf
from tests.conftest import tiny_cnn


def test_weight_decay_shrinks_each_variable_by_rate_times_decay_outside_the_momentum():
    optimizer = kquant.cosine_sgd(0.1, epochs=1, steps_per_epoch=100, weight_decay=0.05)
    variable = tf.Variable([2.0, -4.0])
    optimizer.apply_gradients([(tf.constant([1.0, 1.0]), variable)])
    # v - lr * wd * v, then the momentum step -lr * g (the first step of the cosine: lr = 0.1)
    np.testing.assert_allclose(variable.numpy(), [2.0 * (1 - 0.005) - 0.1,
                                                  -4.0 * (1 - 0.005) - 0.1], rtol=1e-6)


def test_schedule_weight_decay_reaches_every_trainer_and_shrinks_the_weights(digits):
    from kquant import techniques

    def trained_norm(weight_decay, technique):
        keras.utils.set_random_seed(0)
        model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(weight_bits=4, activation_bits=4))
        schedule = techniques.Schedule(2, digits.steps_per_epoch, 0.05, weight_decay=weight_decay)
        training = techniques.prepare(model, technique, techniques.Context(schedule))
        training.model.fit(digits.train, epochs=2, verbose=0)
        return float(tf.linalg.global_norm([w for w in model.trainable_weights
                                            if "kernel" in w.name]))

    for technique in ("none", "auxiliary-module"):
        assert trained_norm(0.2, technique) < 0.85 * trained_norm(0.0, technique), technique


@pytest.mark.parametrize("make_optimizer", [
    lambda model: kquant.techniques.Schedule(1, 10, 0.1, weight_decay=0.5).optimizer(model),
    lambda model: kquant.compile_classifier(model, 0.1, 1, 10, weight_decay=0.5).optimizer,
], ids=["schedule", "compile_classifier"])
def test_weight_decay_leaves_the_quantizers_alone(make_optimizer):
    from kquant.quantizers.model_states import quantizer_variables

    model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(
        weight_bits=2, activation_bits=2, weight_quantizer="lsq", activation_quantizer="pact"))
    optimizer = make_optimizer(model)
    quantizers = quantizer_variables(model)
    names = {v.name.split("/")[-1] for v in quantizers}
    assert {"output_clip:0", "kernel_step:0"} <= names, names
    before = [v.numpy() for v in model.trainable_weights]
    optimizer.apply_gradients((tf.zeros_like(v), v) for v in model.trainable_weights)
    for variable, old in zip(model.trainable_weights, before):
        if any(variable is q for q in quantizers):
            np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.name)
        else:  # zero gradient: only the decay moves it, by lr * wd = 0.05 of itself
            np.testing.assert_allclose(variable.numpy(), 0.95 * old, rtol=1e-6,
                                       err_msg=variable.name)


def test_the_cosine_schedule_compiles_once_for_xla_whatever_the_step():
    schedule = kquant.compile.RestartingCosineDecay(0.1, 100, [40])
    rate = tf.function(schedule, jit_compile=True)
    # The step must not become a compile-time constant (a jit-compiled train step would
    # recompile at every step): the program is the same for any step.
    programs = {rate.experimental_get_compiler_ir(tf.constant(step))(stage="hlo")
                for step in (5, 50)}
    assert len(programs) == 1
    for step in (0, 39, 40, 70, 100):
        assert float(rate(tf.constant(step))) == pytest.approx(float(schedule(step)), rel=1e-6)
    assert float(rate(tf.constant(40))) == pytest.approx(0.1)


def test_negative_weight_decay_is_refused():
    with pytest.raises(ValueError, match="weight_decay >= 0"):
        kquant.cosine_sgd(0.1, weight_decay=-1e-4)
