import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras, tf
from kquant.techniques import JointDistillation
from tests.conftest import tiny_cnn


def networks(bits=(2, 4), build=tiny_cnn):
    keras.utils.set_random_seed(0)
    float_model = build()
    teacher = kquant.techniques.clipped_teacher(float_model)
    students = [kquant.quantize_model(float_model, kquant.Recipe(b, b)) for b in bits]
    return teacher, students


def compiled(teacher, students, **kwargs):
    model = JointDistillation(teacher, students, **kwargs)
    model.compile(keras.optimizers.SGD(0.05), [keras.optimizers.SGD(0.05) for _ in students])
    return model


def test_students_learn_and_every_network_is_reported(digits):
    teacher, students = networks(build=lambda: kquant.models.small_cnn((8, 8, 1), 10))
    model = compiled(teacher, students)
    history = model.fit(digits.train, epochs=4, validation_data=digits.test, verbose=0)
    results = model.evaluate(digits.test, verbose=0, return_dict=True)
    for name in ("teacher", "student_0", "student_1"):
        assert results[f"{name}_accuracy"] > 0.8, results  # chance is 0.1
        assert f"val_{name}_loss" in history.history
    # a student is an ordinary kquant model afterwards
    tflite = tflite_export.convert(students[0], digits.train.take(2))
    assert tflite_export.verify(tflite, students[0], digits.test).agreement >= 0.97


def test_teacher_does_not_move_when_its_loss_weights_are_zero(digits):
    teacher, students = networks(bits=(2,))
    before = [w.numpy().copy() for w in teacher.trainable_weights]
    student_before = [w.numpy().copy() for w in students[0].trainable_weights]
    compiled(teacher, students, teacher_weight=0.0, teacher_distillation_weight=0.0).fit(
        digits.train.take(3), verbose=0)
    for old, new in zip(before, teacher.trainable_weights):
        np.testing.assert_array_equal(old, new.numpy())
    assert any(not np.array_equal(o, n.numpy()) for o, n in zip(student_before, students[0].trainable_weights))


@pytest.mark.parametrize("guidance,feature_layers", [("kl", None), ("mse", None), ("mse", ["block_out"])])
def test_each_loss_reaches_only_its_own_network(digits, guidance, feature_layers):
    teacher, students = networks()
    model = compiled(teacher, students, guidance=guidance, feature_layers=feature_layers)
    x, y = next(iter(digits.train))
    with tf.GradientTape(persistent=True) as tape:
        (teacher_loss, *student_losses), _ = model.compute_losses(x, y)
    assert all(g is None for g in tape.gradient(teacher_loss, students[0].trainable_variables))
    assert all(g is None for g in tape.gradient(student_losses[1], teacher.trainable_variables))
    assert all(g is None for g in tape.gradient(student_losses[1], students[0].trainable_variables))
    assert any(g is not None for g in tape.gradient(student_losses[0], students[0].trainable_variables))
    assert np.isfinite(float(teacher_loss)) and all(np.isfinite(float(l)) for l in student_losses)


def test_clipped_teacher_is_float_with_activations_on_zero_to_one():
    model = kquant.models.small_cnn((8, 8, 1), 10)
    teacher = kquant.techniques.clipped_teacher(model)
    probe = keras.Model(teacher.input, teacher.get_layer("block1_relu").output)
    values = probe.predict(np.random.default_rng(0).normal(size=(4, 8, 8, 1)) * 5, verbose=0)
    assert values.min() == 0.0 and values.max() == 1.0 and len(np.unique(values)) > 100
    assert not kquant.precision.quantizer_states(teacher)


@pytest.mark.parametrize("activation_quantizer,clip,clipped", [
    ("clip", False, False), ("clip", True, True), ("pact", True, False)])
def test_the_teacher_is_unclipped_unless_asked_and_the_students_share_a_clip(
        activation_quantizer, clip, clipped):
    model = kquant.models.small_cnn((8, 8, 1), 10)
    student = kquant.quantize_model(model, kquant.Recipe(2, 2, activation_quantizer=activation_quantizer))
    teacher = kquant.techniques.teacher_for(student, model, clip=clip)
    images = np.random.default_rng(0).normal(size=(4, 8, 8, 1)) * 5
    largest = keras.Model(teacher.input, teacher.get_layer("block1_relu").output).predict(
        images, verbose=0).max()
    assert (largest == 1.0) if clipped else (largest > 1.0)
    np.testing.assert_allclose(teacher.get_weights()[0], model.get_weights()[0])


def test_precision_callbacks_steer_only_the_students(digits):
    teacher, students = networks()
    model = compiled(teacher, students)
    states = kquant.precision.quantizer_states(model)
    assert {id(s.bits) for s in states} == {id(s.bits) for st in students
                                            for s in kquant.precision.quantizer_states(st)}
    model.fit(digits.train.take(4), epochs=2, verbose=0, callbacks=[
        kquant.techniques.StochasticPrecision(initial_probability=0.5),
        kquant.techniques.ProgressiveBitWidth(weight_schedule=None, activation_schedule=[8, 4])])
    assert [int(s.bits.numpy()) for s in kquant.precision.quantizer_states(students[1])
            if s.role == "activation"] == [4, 4, 4]


def test_kl_term_matches_its_formula():

    p, q = np.array([[1.0, 2.0, 0.5]]), np.array([[0.3, 0.1, 2.0]])
    temperature = 2.0
    soft_p = np.exp(p / temperature) / np.exp(p / temperature).sum()
    soft_q = np.exp(q / temperature) / np.exp(q / temperature).sum()
    expected = temperature ** 2 * (soft_p * np.log(soft_p / soft_q)).sum()
    assert np.isclose(float(kquant.losses.distillation_kl(tf.constant(p), tf.constant(q), temperature)), expected)


def test_bad_arguments_are_named():
    teacher, students = networks(bits=(2,))
    with pytest.raises(ValueError, match="no layer 'missing'"):
        JointDistillation(teacher, students, guidance="mse", feature_layers=["missing"])
    with pytest.raises(ValueError, match="guidance must be"):
        JointDistillation(teacher, students, guidance="l1")
    with pytest.raises(ValueError, match="1 students need as many optimizers"):
        JointDistillation(teacher, students).compile(keras.optimizers.SGD(), [])


def test_progressive_schedule_reaches_only_the_student_at_its_target_bits(digits):
    teacher, students = networks(bits=(4, 2))
    model = compiled(teacher, students)
    model.fit(digits.train.take(2), epochs=2, verbose=0,
              callbacks=[kquant.techniques.ProgressiveBitWidth(weight_schedule=None, activation_schedule=[8, 4])])
    bits = [[int(s.bits.numpy()) for s in kquant.precision.quantizer_states(st)
             if s.role == "activation"] for st in students]
    assert bits == [[4, 4, 4], [2, 2, 2]]


@pytest.mark.parametrize("guidance,student_weight,student_distillation_weight", [
    ("kl", 0.7, 0.7), ("mse", 0.3, 0.1)])
def test_the_technique_uses_the_released_weights_and_a_slower_teacher(
        guidance, student_weight, student_distillation_weight):
    float_model = tiny_cnn()
    model = kquant.quantize_model(float_model, kquant.Recipe(4, 4))
    context = kquant.techniques.Context(
        kquant.techniques.Schedule(2, 10, 0.05), float_model=float_model,
        quantize=lambda bits: kquant.quantize_model(float_model, kquant.Recipe(bits, bits)))
    technique = kquant.techniques.parse("joint-distillation", guidance=guidance)[0]
    training = kquant.techniques.prepare(model, [technique], context)
    trainer = training.model
    assert training.deployable[0] is model and len(training.deployable) == 2
    assert [kquant.describe(s, print_fn=None)[1]["bits"] for s in training.deployable] == [4, 2]
    assert trainer.loss_weights_["student"] == student_weight
    assert trainer.loss_weights_["student_distillation"] == student_distillation_weight
    rates = [float(o.learning_rate) for o in trainer.network_optimizers]  # at step 0
    np.testing.assert_allclose(rates, [0.01, 0.05, 0.05])
