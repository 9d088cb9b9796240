"""CTMQ: the chain of bit-widths, the cycles with the full-precision twin, resume, bad input."""
import numpy as np
import pytest

import kquant
from kquant import techniques
from kquant.backend import keras, tf
from kquant.techniques import CyclicMultiStep, MultiStepChain
from tests.conftest import tiny_cnn


def quantized(weight_bits=1, activation_bits=2, weight_quantizer="dorefa"):
    return kquant.quantize_model(tiny_cnn(), kquant.Recipe(
        weight_bits, activation_bits, weight_quantizer=weight_quantizer,
        activation_quantizer="pact"))


class PhaseRecorder(keras.callbacks.Callback):
    """Reads the precision variables and a kernel at the start and end of every epoch."""

    def __init__(self):
        super().__init__()
        self.precision, self.kernels_begin, self.kernels_end = [], [], []

    def _kernel(self):
        states = kquant.precision.quantizer_states(self.model)
        return next(s.kernel for s in states if s.layer == "middle").numpy().copy()

    def on_epoch_begin(self, epoch, logs=None):
        self.kernels_begin.append(self._kernel())

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:  # after every callback's on_epoch_begin
            states = kquant.precision.quantizer_states(self.model)
            self.precision.append({(s.layer, s.role): (int(s.bits.numpy()), bool(s.enabled.numpy()))
                                   for s in states})

    def on_epoch_end(self, epoch, logs=None):
        self.kernels_end.append(self._kernel())


def fixed_batches(data, count=3):
    """The same `count` batches in the same order every epoch (and after a resume)."""
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in data.train.take(count)])
    return tf.data.Dataset.from_tensor_slices(
        (np.concatenate(images), np.concatenate(labels))).batch(len(images[0]))


def fit(model, technique, epochs, batches, extra=()):
    context = techniques.Context(techniques.Schedule(epochs, 3, 0.02))
    training = techniques.prepare(model, [technique], context)
    recorder = PhaseRecorder()
    history = training.model.fit(batches, epochs=epochs, verbose=0,
                                 callbacks=[*extra, technique, *training.callbacks[1:], recorder])
    return recorder, history.history


def test_the_chain_and_cycles_visit_the_planned_precisions_from_the_previous_weights(digits):
    keras.utils.set_random_seed(0)
    model = quantized(weight_bits=1, activation_bits=2)
    recorder, history = fit(model, CyclicMultiStep(first_bits=3, cycles=1), 6, digits.train.take(3))
    low_bit = [("middle", "weight"), ("block_out", "activation")]
    seen = [tuple(row[key] for key in low_bit) for row in recorder.precision]
    # W3A3, W2A2, W1A2, then A (everything off), then Q at W1A2 for the two remaining epochs
    assert seen == [((3, True), (3, True)), ((2, True), (2, True)), ((1, True), (2, True)),
                    ((1, False), (2, False)), ((1, True), (2, True)), ((1, True), (2, True))]
    accurate = recorder.precision[3]
    assert not any(enabled for _, enabled in accurate.values())  # every quantizer off in A
    assert all(enabled for row in recorder.precision[:3] + recorder.precision[4:]
               for _, enabled in row.values())  # every quantizer on in Q
    assert recorder.precision[0][("first", "weight")] == (8, True)  # the 8-bit edge stays
    for before, after in zip(recorder.kernels_end[:-1], recorder.kernels_begin[1:]):
        np.testing.assert_array_equal(before, after)  # each phase starts where the last ended
    assert not np.allclose(recorder.kernels_begin[0], recorder.kernels_end[-1])
    assert history["ctmq_phase"] == [0, 1, 2, 3, 4, 4]
    assert history["ctmq_cycle"] == [0, 0, 0, 1, 1, 1]
    assert history["ctmq_weight_bits"] == [3, 2, 1, 32, 1, 1]
    assert history["ctmq_activation_bits"] == [3, 2, 2, 32, 2, 2]


def test_the_learning_rate_restarts_at_every_phase(digits):
    model = quantized(2, 2)
    technique = MultiStepChain(first_bits=4, bits_per_step=1)
    schedule = techniques.Schedule(4, 5, 0.1)
    training = techniques.prepare(model, [technique], techniques.Context(schedule))
    rate = training.model.optimizer._learning_rate  # pylint: disable=protected-access
    # phases W4A4, W3A3, W2A2 (2 epochs): the cosine starts again at steps 5 and 10
    assert [float(rate(step)) for step in (0, 5, 10)] == pytest.approx([0.1, 0.1, 0.1])
    assert float(rate(4)) < 0.02 and float(rate(14)) < float(rate(12)) < 0.1


def test_default_chain_starts_one_step_above_the_target():
    model = quantized(1, 1)
    assert MultiStepChain().chain(model) == [2, 1]
    assert MultiStepChain(first_bits=8, bits_per_step=3).chain(model) == [8, 5, 2, 1]
    assert CyclicMultiStep(cycles=2).minimum_epochs(model) == 6
    assert [p.epochs for p in CyclicMultiStep(cycle_epochs=2).plan(model, 8)] == [1, 1, 2, 4]


def test_an_interrupted_chain_resumes_in_its_phase_with_the_same_variables(digits, tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("interrupted")

    batches = fixed_batches(digits)

    def run(extra=(), backup=None):
        keras.utils.set_random_seed(0)
        model = quantized(1, 2)
        callbacks = [keras.callbacks.BackupAndRestore(str(backup))] if backup else []
        try:
            recorder, history = fit(model, CyclicMultiStep(first_bits=3), 5, batches,
                                    [*callbacks, *extra])
        except RuntimeError:
            return None, None, None
        return model.get_weights(), recorder, history

    weights, recorder, history = run()
    assert run([Interrupt()], tmp_path)[0] is None
    resumed_weights, resumed, resumed_history = run(backup=tmp_path)
    assert resumed.precision == recorder.precision[3:]  # A phase, then the final Q phase
    assert {k: v for k, v in resumed_history.items() if k.startswith("ctmq")} == \
        {k: v[3:] for k, v in history.items() if k.startswith("ctmq")}
    for a, b in zip(weights, resumed_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: CyclicMultiStep(bits_per_step=-1), "bits_per_step must be an integer >= 1"),
    (lambda: CyclicMultiStep(cycles=0, cycle_epochs=2), "cycle_epochs=2 given with cycles=0"),
    (lambda: CyclicMultiStep(first_bits=9), "first_bits must be None or an integer from 2 to 8"),
    (lambda: CyclicMultiStep(step_epochs=0), "step_epochs must be an integer >= 1"),
])
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("recipe, technique, epochs, message", [
    ((4, 4), MultiStepChain(first_bits=3), 4, "first_bits 3 must be above the target 4"),
    ((1, 1), CyclicMultiStep(first_bits=4, cycles=2), 6, "needs 8 epochs .* but fit runs 6"),
    ((2, 2, "direct-levels"), MultiStepChain(), 4, r"layers \['depthwise', 'middle'\] .* fixed"),
])
def test_plans_that_cannot_run_are_refused_before_training(digits, recipe, technique, epochs,
                                                           message):
    model = quantized(*recipe)
    with pytest.raises(ValueError, match=message):
        techniques.prepare(model, [technique], techniques.Context(techniques.Schedule(epochs, 3, 0.1)))


def test_ctmq_is_reached_by_name_with_its_options():
    chain, = techniques.parse("ctmq-chain", first_bits=3, step_epochs=2)
    cyclic, = techniques.parse("ctmq-cyclic", cycles=2)
    assert isinstance(chain, MultiStepChain) and (chain.first_bits, chain.step_epochs) == (3, 2)
    assert chain.cycles == 0 and cyclic.cycles == 2
    with pytest.raises(ValueError, match="cycles"):
        techniques.parse("ctmq-chain", cycles=2)
