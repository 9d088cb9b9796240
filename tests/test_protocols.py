"""A new quantizer and a new technique, written against the two protocols alone (nothing in
kquant edited), train with `fit`, resume, serialize and export exactly."""
import numpy as np

import kquant
import tflite_export
from kquant.backend import keras, tf
from kquant.quantizers import LowBitWeightQuantizer
from kquant.serialization import serializable
from kquant.techniques import Technique, register


@serializable("test-ternary")
class PluggedInTernaryQuantizer(LowBitWeightQuantizer):
    """w_q = max|w| * sign(w) where |w| > 0.7 mean|w|, else 0: ternary codes {-127, 0, 127}."""

    def level_count(self, weights):
        return 3

    def codes_and_step(self, w, weights):
        w = self._channels_last(w)
        large = tf.cast(tf.abs(w) > 0.7 * tf.reduce_mean(tf.abs(w)), tf.float32)
        step = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(w)), 1e-12) / 127.0)
        x = w / step
        codes = x + tf.stop_gradient(127.0 * tf.sign(x) * large - x)  # straight-through
        return codes, tf.reshape(step, [1])

    def quantize(self, w, weights):
        codes, step = self.codes_and_step(w, weights)
        return self._int8_grid(codes * step, step, w.shape)


@register
class LateActivations(Technique, keras.callbacks.Callback):
    """Activations unquantized in the first `epochs_off` epochs."""

    name = "test-late-activations"

    def __init__(self, epochs_off=1):
        super().__init__()
        self.epochs_off = epochs_off

    def callbacks(self, model, context):
        return [self]

    def on_epoch_begin(self, epoch, logs=None):
        kquant.precision.set_enabled(self.model, epoch >= self.epochs_off, role="activation")


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


class Switches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(bool(kquant.precision.quantizer_states(self.model)[1].enabled.numpy()))


def test_new_quantizer_and_technique_train_resume_serialize_and_export(tmp_path):
    digits = kquant.load_dataset("digits", batch_size=32, seed=0)
    recipe = kquant.Recipe(2, 4, weight_quantizer="test-ternary", first_last_bits=None)

    def run(extra, epochs=4):
        keras.utils.set_random_seed(0)
        model = kquant.quantize_model(kquant.models.small_cnn((8, 8, 1), 10), recipe)
        context = kquant.techniques.Context(kquant.techniques.Schedule(epochs, 45, 0.05))
        training = kquant.techniques.prepare(model, "test-late-activations", context)
        switches = Switches()
        callbacks = [keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), *training.callbacks,
                     switches, *extra]
        try:
            training.model.fit(digits.train, epochs=epochs, verbose=0, callbacks=callbacks)
        except RuntimeError:
            pass
        return model, switches.seen

    _, first = run([Interrupt()])
    model, second = run([])
    assert first == [False, True] and second == [True, True]  # resumed at epoch 2
    assert model.evaluate(digits.test, verbose=0)[1] > 0.7  # chance is 0.1

    path = str(tmp_path / "ternary.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    images = next(iter(digits.test))[0]
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)

    tflite = tflite_export.convert(model, digits.train.take(2))
    report = tflite_export.verify(tflite, model, digits.test)
    assert all(report.weight_codes_match.values()) and len(report.weight_codes_match) == 4
    assert all(seen <= allowed == 3 for seen, allowed in report.weight_levels.values())
    assert report.levels_ok and report.agreement >= 0.98
