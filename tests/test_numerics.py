"""Training stops at the first NaN or infinity and names the layer and quantizer holding it."""
import numpy as np

import kquant
from kquant.quantizers import quantizer_states
from tests.conftest import tiny_cnn


def _training(activation_quantizer="pact"):
    model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(
        4, 4, activation_quantizer=activation_quantizer))
    context = kquant.techniques.Context(kquant.techniques.Schedule(2, 4, 0.01))
    return model, kquant.techniques.prepare(model, "", context)


def _clip(model):
    return next(s for s in quantizer_states(model) if s.role == "activation"
                and "clip" in s.variables)


def _guard(training):
    return next(c for c in training.callbacks if isinstance(c, kquant.StopOnNonFinite))


def test_a_nan_clip_stops_training_naming_its_layer_and_quantizer(random_images):
    model, training = _training()
    guard = _guard(training)
    state = _clip(model)
    state.variables["clip"].assign(np.nan)
    history = training.model.fit(random_images, np.arange(len(random_images)) % 10, batch_size=8,
                                 epochs=2, callbacks=training.callbacks, verbose=0)
    assert len(history.history["loss"]) == 1  # stopped within the first epoch
    assert guard.message == (f"kquant: training stopped before it started: layer "
                             f"{state.layer!r}, activation quantizer PACTQuantizer: its 'clip' "
                             "holds NaN or infinity.")


def test_a_non_finite_loss_points_at_inputs_labels_and_learning_rate(random_images):
    # Fixed clips and DoReFa weights: no quantizer variable can go bad; the loss can.
    model, training = _training("clip")
    weights = np.ones(len(random_images), np.float32)
    weights[1] = np.inf
    history = training.model.fit(random_images, np.arange(len(random_images)) % 10,
                                 sample_weight=weights, batch_size=4, epochs=2, shuffle=False,
                                 callbacks=training.callbacks, verbose=0)
    assert len(history.history["loss"]) == 1
    assert _guard(training).message == (
        "kquant: training stopped at batch 0: the loss is inf while every quantizer variable was "
        "finite; look at this batch's inputs and labels, or lower the learning rate.")


def test_a_quantizer_step_going_bad_mid_epoch_stops_at_that_batch(random_images):
    from kquant.backend import keras

    model, training = _training("lsq")
    step = next(s for s in quantizer_states(model) if s.role == "activation")
    spoil = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batch == 1 and
                                           step.variables["step"].assign(np.inf))
    training.model.fit(random_images, np.arange(len(random_images)) % 10, batch_size=4,
                       epochs=2, callbacks=[spoil] + training.callbacks, verbose=0)
    assert _guard(training).message == (
        f"kquant: training stopped at batch 1: layer {step.layer!r}, activation quantizer "
        "LSQActivationQuantizer: its 'step' holds NaN or infinity.")
