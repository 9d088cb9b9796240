import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras
from kquant.techniques import ProgressiveBitWidth, StochasticPrecision, TwoStageQuantization
from tests.conftest import tiny_cnn


class Recorder(keras.callbacks.Callback):
    """Reads every quantizer's bits and switch at the end of each epoch (or batch)."""

    def __init__(self, per_batch=False):
        super().__init__()
        self.per_batch, self.rows = per_batch, []

    def _read(self):
        self.rows.append({(s.layer, s.role): (int(s.bits.numpy()), bool(s.enabled.numpy() > 0.5))
                          for s in kquant.precision.quantizer_states(self.model)})

    def on_epoch_end(self, epoch, logs=None):
        if not self.per_batch:
            self._read()

    def on_train_batch_end(self, batch, logs=None):
        if self.per_batch:
            self._read()


def quantized_tiny(weight_bits=2, activation_bits=2):
    model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(weight_bits, activation_bits))
    kquant.compile_classifier(model, 0.01, 4, 5)
    return model


def test_progressive_bit_width_follows_equal_stages(digits):
    model, recorder = quantized_tiny(), Recorder()
    model.fit(digits.train.take(3), epochs=4, verbose=0,
              callbacks=[ProgressiveBitWidth([32, 8, 4, 2], {0: 8, 2: 2}), recorder])
    middle_weight = [row[("middle", "weight")] for row in recorder.rows]
    relu = [row[("block_out", "activation")] for row in recorder.rows]
    assert [on for _, on in middle_weight] == [False, True, True, True]
    assert [bits for bits, _ in middle_weight][1:] == [8, 4, 2]
    assert relu == [(8, True), (8, True), (2, True), (2, True)]
    assert all(row[("first", "weight")] == (8, True) for row in recorder.rows)  # 8-bit edge layer


@pytest.mark.parametrize("kwargs,message", [
    (dict(weight_schedule=[8, 4, 2, 1, 1]), "5 stages but fit runs 4 epochs"),
    (dict(activation_schedule={1: 4}), "must start at epoch 0"),
])
def test_schedules_that_do_not_fit_the_epochs_are_errors(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantized_tiny().fit(digits.train.take(1), epochs=4, verbose=0,
                             callbacks=[ProgressiveBitWidth(**kwargs)])


def test_a_schedule_ending_at_bits_the_model_does_not_have_is_an_error(digits):
    with pytest.raises(ValueError, match="ends at 3 bits, but no weight quantizer"):
        quantized_tiny().fit(digits.train.take(1), epochs=2, verbose=0,
                             callbacks=[ProgressiveBitWidth(weight_schedule=[8, 3], activation_schedule=None)])


def test_rising_or_invalid_schedules_are_refused_unless_asked(digits):
    with pytest.raises(ValueError, match="goes up"):
        ProgressiveBitWidth(weight_schedule=[2, 4])
    with pytest.raises(ValueError, match="allowed are integers 1-8 and 32"):
        ProgressiveBitWidth(activation_schedule=[16, 8])
    model, recorder = quantized_tiny(4, 4), Recorder()
    model.fit(digits.train.take(1), epochs=2, verbose=0, callbacks=[recorder, ProgressiveBitWidth(
        weight_schedule=[2, 4], activation_schedule=None, allow_increase=True)])
    assert [row[("middle", "weight")][0] for row in recorder.rows] == [2, 4]


def test_the_default_schedule_decreases_and_gives_the_final_bits_half_the_epochs(digits):
    model, recorder = quantized_tiny(2, 2), Recorder()
    model.fit(digits.train.take(1), epochs=4, verbose=0, callbacks=[ProgressiveBitWidth(), recorder])
    assert [row[("middle", "weight")] for row in recorder.rows] == [
        (8, True), (4, True), (2, True), (2, True)]
    assert [row[("block_out", "activation")] for row in recorder.rows] == [
        (8, True), (4, True), (2, True), (2, True)]
    model, recorder = quantized_tiny(2, 2), Recorder()
    model.fit(digits.train.take(1), epochs=4, verbose=0, callbacks=[
        ProgressiveBitWidth(float_stage=True, final_share=None), recorder])
    assert [row[("middle", "weight")] for row in recorder.rows] == [
        (2, False), (8, True), (4, True), (2, True)]


def test_two_stage_quantizes_activations_from_the_boundary(digits):
    model, recorder = quantized_tiny(4, 4), Recorder(per_batch=True)
    model.fit(digits.train.take(3), epochs=2, verbose=0,
              callbacks=[TwoStageQuantization(boundary_step=4), recorder])
    activation_on = [row[("block_out", "activation")][1] for row in recorder.rows]
    weight_on = [row[("middle", "weight")][1] for row in recorder.rows]
    assert activation_on == [False] * 4 + [True] * 2 and all(weight_on)
    with pytest.raises(ValueError, match="at most one"):
        TwoStageQuantization(boundary_epoch=1, boundary_step=2)


def test_two_stage_gives_the_quantized_stage_three_quarters_of_the_epochs(digits):
    model, recorder = quantized_tiny(4, 4), Recorder()
    model.fit(digits.train.take(1), epochs=4, verbose=0, callbacks=[TwoStageQuantization(), recorder])
    assert [row[("block_out", "activation")][1] for row in recorder.rows] == [False, True, True, True]
    assert TwoStageQuantization(final_share=0.5).first_quantized_epoch(30) == 15


def test_the_learning_rate_restarts_at_every_stage(digits):
    from kquant import techniques

    model = quantized_tiny(2, 2)
    context = techniques.Context(techniques.Schedule(4, 10, 0.1))
    training = techniques.prepare(model, "two-stage+progressive-bits", context)
    steps = [0, 9, 10, 19, 20, 39]
    values = [float(training.model.optimizer._learning_rate(t)) for t in steps]  # pylint: disable=protected-access
    # two-stage starts its second stage at epoch 1; progressive [8, 4, 2] at epochs 1 and 2
    assert values[0] == values[2] == values[4] == pytest.approx(0.1)
    assert values[1] < 0.01 and values[3] < 0.01 and values[5] < 0.001
    plain = techniques.prepare(quantized_tiny(2, 2), techniques.parse(
        "two-stage", restart_learning_rate=False), context).model.optimizer
    assert float(plain._learning_rate(10)) < 0.1  # pylint: disable=protected-access


def test_clips_are_fit_again_to_the_first_batch_of_a_new_precision(digits):
    model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(4, 2, activation_quantizer="pact"))
    kquant.compile_classifier(model, 1e-6, 2, 3)  # a tiny rate: the clip moves by the refit only
    clips = []

    class ReadClip(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clips.append(float(model.get_layer("quant_block_out")._output_quantizer_vars["clip"]))  # pylint: disable=protected-access

    model.fit(digits.train.take(3), epochs=2, verbose=0,
              callbacks=[TwoStageQuantization(boundary_epoch=1), ReadClip()])
    assert clips[0] == pytest.approx(6.0, abs=1e-3) and clips[2] == pytest.approx(6.0, abs=1e-3)
    assert clips[3] < 5.0 and clips[3] == pytest.approx(clips[5], abs=1e-3)  # once, at the switch


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


def test_progressive_schedule_resumes_at_the_interrupted_epoch(digits, tmp_path):
    def run(extra):
        model, recorder = quantized_tiny(), Recorder()
        callbacks = [keras.callbacks.BackupAndRestore(str(tmp_path)),
                     ProgressiveBitWidth(activation_schedule=[8, 6, 4, 2]), recorder, *extra]
        try:
            model.fit(digits.train.take(2), epochs=4, verbose=0, callbacks=callbacks)
        except RuntimeError:
            pass
        return [row[("block_out", "activation")][0] for row in recorder.rows]

    assert run([Interrupt()]) == [8, 6]
    assert run([]) == [4, 2]  # resumed at epoch 2: the bits of epochs 2 and 3


def test_stochastic_precision_samples_units_with_probability_p(digits):
    model = quantized_tiny()
    callback = StochasticPrecision(units="residual", initial_probability=0.25, ramp_fraction=1.0,
                                   seed=3)
    recorder = Recorder(per_batch=True)
    model.fit(digits.train.repeat().take(200), epochs=1, steps_per_epoch=200, verbose=0,
              callbacks=[callback, recorder])
    units = callback.resolve_units(model)
    # tiny_cnn: the stem, one residual block (ending at the ReLU after its Add), the head
    assert [[(s.layer, s.role) for s in unit] for unit in units] == [
        [("first", "weight"), ("first_relu", "activation")],
        [("middle", "weight"), ("block_out", "activation")],
        [("depthwise", "weight"), ("depthwise_relu", "activation"), ("logits", "weight")]]
    draws = np.array([[row[(u[0].layer, u[0].role)][1] for u in units] for row in recorder.rows])
    # every quantizer of a unit switches together
    for row in recorder.rows:
        for unit in units:
            assert len({row[(s.layer, s.role)][1] for s in unit}) == 1
    p = np.array([callback.probability(step / 200) for step in range(200)])
    expected, spread = p.sum() * len(units), np.sqrt((p * (1 - p)).sum() * len(units))
    assert abs(draws.sum() - expected) < 4 * spread
    assert draws[:50].mean() < draws[-50:].mean()
    # evaluation and export see a fully quantized model
    model.evaluate(digits.test.take(1), verbose=0)
    assert all(s.enabled.numpy() == 1.0 for s in kquant.precision.quantizer_states(model))
    tflite = tflite_export.convert(model, digits.train.take(1))
    report = tflite_export.verify(tflite, model, digits.test)
    assert report.levels_ok and set(report.activation_levels) == {
        "first_relu", "block_out", "depthwise_relu"}


def test_stochastic_precision_is_repeatable_with_a_seed(digits):
    def states(seed):
        model, recorder = quantized_tiny(), Recorder(per_batch=True)
        model.fit(digits.train.take(10), epochs=1, verbose=0,
                  callbacks=[StochasticPrecision("layers", 0.5, seed=seed), recorder])
        return [tuple(v[1] for v in row.values()) for row in recorder.rows]

    assert states(1) == states(1) != states(2)


def test_stochastic_ramp_in_steps():
    callback = StochasticPrecision(initial_probability=0.25, ramp="steps", ramp_fraction=0.8)
    probabilities = [callback.probability(t) for t in (0.0, 0.25, 0.45, 0.65, 0.8, 0.95)]
    np.testing.assert_allclose(probabilities, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("make_callback", [
    lambda: TwoStageQuantization(boundary_epoch=2),
    lambda: ProgressiveBitWidth([32, 8, 4, 2], [8, 6, 4, 2]),
    lambda: StochasticPrecision("layers", 0.3, seed=5),
], ids=["two-stage", "progressive-bits", "stochastic-precision"])
def test_every_technique_resumes_where_it_was_interrupted(digits, tmp_path, make_callback):
    def run(backup, extra=()):
        keras.utils.set_random_seed(0)
        model, recorder = quantized_tiny(), Recorder(per_batch=True)
        callbacks = [make_callback(), recorder, *extra]
        if backup:
            callbacks.insert(0, keras.callbacks.BackupAndRestore(str(backup)))
        try:
            model.fit(digits.train.take(3), epochs=4, verbose=0, callbacks=callbacks)
        except RuntimeError:
            pass
        return recorder.rows

    uninterrupted = run(None)
    first_part = run(tmp_path, [Interrupt()])
    assert len(first_part) == 6
    assert first_part + run(tmp_path) == uninterrupted


def test_techniques_by_name_with_their_options():
    from kquant import techniques

    chosen = techniques.parse("two-stage+stochastic-precision", boundary_epoch=3, seed=7)
    assert [type(t) for t in chosen] == [TwoStageQuantization, StochasticPrecision]
    assert chosen[0].boundary_epoch == 3 and chosen[1].seed == 7
    assert techniques.parse("none") == []
    with pytest.raises(ValueError, match="Unknown technique.*progressive"):
        techniques.parse("progressive")
    with pytest.raises(ValueError, match="'temperature'.* belong to none of.*two-stage"):
        techniques.parse("two-stage", temperature=2.0)
    assert techniques.decreasing_schedule(2) == [32, 8, 4, 2]
    assert techniques.decreasing_schedule(4) == [32, 8, 4]


def test_prepare_assembles_the_callbacks_and_refuses_what_cannot_combine(digits):
    from kquant import techniques

    model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(2, 2, weight_quantizer="direct-levels"))
    context = techniques.Context(techniques.Schedule(4, 5, 0.01))
    training = techniques.prepare(model, "two-stage+progressive-bits", context)
    assert training.model is model and training.deployable == [model]
    assert [type(c).__name__ for c in training.callbacks] == [
        "TwoStageQuantization", "ProgressiveBitWidth", "DirectLevelsUpdate", "StopOnNonFinite",
        "SnapBiases"]
    with pytest.raises(ValueError, match="needs \\['float_model', 'quantize'\\]"):
        techniques.prepare(model, "joint-distillation", context)


class EvaluationRecorder(Recorder):
    """Reads every quantizer's bits and switch when evaluation inside `fit` runs."""

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_test_batch_begin(self, batch, logs=None):
        self._read()


def test_stochastic_precision_never_switches_on_what_a_schedule_switched_off(digits):
    model, recorder = quantized_tiny(), Recorder(per_batch=True)
    model.fit(digits.train.take(4), epochs=2, verbose=0, callbacks=[
        TwoStageQuantization(boundary_epoch=1), StochasticPrecision("layers", 0.9, seed=1), recorder])
    activations = [[on for (layer, role), (_, on) in row.items() if role == "activation"]
                   for row in recorder.rows]
    assert not any(any(row) for row in activations[:4])  # stage 1: activations stay float
    assert any(any(row) for row in activations[4:])  # stage 2: drawn units quantized

    model, recorder = quantized_tiny(), Recorder(per_batch=True)
    model.fit(digits.train.take(2), epochs=4, verbose=0, callbacks=[
        ProgressiveBitWidth([32, 8, 4, 2], [32, 8, 4, 2]),
        StochasticPrecision("layers", 0.25, ramp_fraction=1.0, seed=1), recorder])
    middle = [row[("middle", "weight")] for row in recorder.rows]
    assert not any(on for _, on in middle[:2])  # the "32-bit" stage stays float
    assert {bits for bits, _ in middle[2:4]} == {8} and {bits for bits, _ in middle[4:6]} == {4}
    assert any(on for _, on in middle[2:]) and not all(on for _, on in middle[2:])


def test_validation_inside_fit_and_export_see_the_deployed_precision(digits, tmp_path):
    model, during, validation = quantized_tiny(), Recorder(per_batch=True), EvaluationRecorder()
    checkpoint = str(tmp_path / "epoch{epoch}.h5")
    model.fit(digits.train.take(2), epochs=3, verbose=0, validation_data=digits.test.take(1),
              callbacks=[ProgressiveBitWidth([8, 4, 2], [8, 4, 2]), during, validation,
                         keras.callbacks.ModelCheckpoint(checkpoint)])
    assert all(row[("middle", "weight")] == (2, True) and row[("block_out", "activation")] == (2, True)
               for row in validation.rows)
    assert [row[("middle", "weight")][0] for row in during.rows] == [8, 8, 4, 4, 2, 2]  # resumed
    images = next(iter(digits.train))[0]
    middle_of_schedule = keras.models.load_model(str(tmp_path / "epoch1.h5"))  # saved at 8 bits
    with pytest.raises(ValueError, match="block_out \\(activation at 8 bits, deployed at 2\\)"):
        tflite_export.convert(middle_of_schedule, [images])
    kquant.precision.set_deployed(middle_of_schedule)
    assert tflite_export.inspect(tflite_export.convert(middle_of_schedule, [images])).float_ops == []


def test_stochastic_precision_needs_the_epoch_length(digits):
    unknown_length = digits.train.take(3).filter(lambda x, y: True)
    with pytest.raises(ValueError, match="does not know how many steps an epoch has"):
        quantized_tiny().fit(unknown_length, epochs=2, verbose=0, callbacks=[StochasticPrecision()])
    callback = StochasticPrecision("layers", 0.25, ramp_fraction=1.0, total_steps=6)
    quantized_tiny().fit(unknown_length, epochs=2, verbose=0, callbacks=[callback])
    assert callback._total_steps == 6  # pylint: disable=protected-access
