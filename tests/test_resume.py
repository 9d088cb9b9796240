"""Every technique, interrupted mid-epoch and resumed with BackupAndRestore, continues from the
state an uninterrupted run has at that step (weights, quantizer variables, optimizer) and with
the same schedule (every quantizer's bits and switch, the learning rate) at every later step.

tf_keras resumes a mid-epoch backup at the right step but feeds that epoch's batches from the
start of the dataset, so every step here trains on the same batch: then an interrupted run must
end exactly where an uninterrupted one does.
"""
import numpy as np
import pytest

import kquant
from kquant import techniques
from kquant.backend import keras
from tests.conftest import tiny_cnn
from tests.test_ctmq import fixed_batches
from tests.test_tsq import residual_cnn

EPOCHS, STEPS = 4, 3
TSQ = {"weight_quantizer": "ternary", "activation_quantizer": "sparse", "per_channel": True}
# Each technique by name with the options that fit 4 epochs of a tiny model, and its recipe.
SETUPS = {
    "two-stage": ({}, {}),
    "progressive-bits": ({}, {}),
    "stochastic-precision": ({"seed": 3}, {}),
    "joint-distillation": ({"student_bits": [2]}, {}),
    "ctmq-chain": ({}, {}),
    "ctmq-cyclic": ({"step_epochs": 1, "cycle_epochs": 1}, {}),
    "auxiliary-module": ({}, {}),
    "tsq": ({"images": 8, "positions": 64}, TSQ),
    "tsq-finetune": ({"images": 8, "positions": 64}, TSQ),
}


def test_every_registered_technique_is_tried():
    assert set(SETUPS) == {n for n in techniques.names() if not n.startswith("test-")}


class Interrupt(keras.callbacks.Callback):
    """Stops the process (as a kill would) in the middle of the second epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            raise RuntimeError("interrupted")


RESUME_STEP = STEPS + 2  # the first step after the interruption, in the second epoch


class Record(keras.callbacks.Callback):
    """At every step's start: the step, learning rate and every quantizer's bits and switch; at
    the end, every variable of the model and its optimizer."""

    def __init__(self):
        super().__init__()
        self.schedule, self.state = [], None

    def on_train_end(self, logs=None):
        optimizer = self.model.optimizer
        self.state = {v.name: v.numpy() for v in self.model.weights}
        # Slots restored from a backup are created outside the optimizer's name scope.
        self.state.update({"optimizer: " + v.name.removeprefix(optimizer.name + "/"): v.numpy()
                           for v in optimizer.variables()})

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        step = int(optimizer.iterations.numpy())
        rate = optimizer.learning_rate
        rate = float(rate(optimizer.iterations) if callable(rate) else rate)
        precision = tuple((s.layer, s.role, float(s.bits.numpy()), float(s.enabled.numpy()))
                          for s in kquant.precision.quantizer_states(self.model))
        self.schedule.append((step, round(rate, 7), precision))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETUPS))
def test_a_run_interrupted_mid_epoch_resumes_where_it_stopped(digits, tmp_path, name):
    options, recipe = SETUPS[name]
    batches = fixed_batches(digits, 1).repeat(STEPS)

    def run(backup=None, interrupt=False):
        keras.backend.clear_session()  # the same variable names in every run
        keras.utils.set_random_seed(0)
        float_model = residual_cnn() if recipe is TSQ else tiny_cnn()
        quantize = lambda bits: kquant.quantize_model(  # noqa: E731
            float_model, kquant.Recipe(bits, bits, **{"activation_quantizer": "pact", **recipe}))
        context = techniques.Context(techniques.Schedule(EPOCHS, STEPS, 0.02), float_model,
                                     batches, quantize)
        training = techniques.prepare(quantize(2), techniques.parse(name, **options), context)
        record = Record()
        callbacks = [keras.callbacks.BackupAndRestore(str(backup), save_freq=1)] if backup else []
        try:
            training.model.fit(batches, epochs=EPOCHS, verbose=0, callbacks=[
                *callbacks, *training.callbacks, record, *([Interrupt()] if interrupt else [])])
        except RuntimeError:
            pass
        return record

    uninterrupted = run()
    first_part = run(tmp_path, interrupt=True)
    resumed = run(tmp_path)
    assert [s[0] for s in first_part.schedule] == list(range(RESUME_STEP))
    assert first_part.schedule + resumed.schedule == uninterrupted.schedule
    assert resumed.schedule[0][0] == RESUME_STEP
    assert set(resumed.state) == set(uninterrupted.state)
    for name, value in uninterrupted.state.items():
        np.testing.assert_allclose(resumed.state[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
