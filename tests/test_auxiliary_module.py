"""The full-precision auxiliary module: attachment, gradients, the dropped path, resume, errors."""
import numpy as np
import pytest

import kquant
import tflite_export
from kquant import techniques
from kquant.backend import keras, tf
from kquant.techniques import AuxiliaryModule, auxiliary_trainer
from tests.conftest import tiny_cnn
from tests.test_ctmq import fixed_batches


def quantized(recipe=None):
    return kquant.quantize_model(tiny_cnn(), recipe or kquant.Recipe(2, 2, activation_quantizer="pact"))


def prepare(model, spec="auxiliary-module", epochs=2):
    return techniques.prepare(model, spec, techniques.Context(techniques.Schedule(epochs, 3, 0.05)))


def test_attaches_to_all_nine_residual_blocks_of_resnet20():
    model = kquant.quantize_model(kquant.models.build_model("resnet20", (32, 32, 3), 10),
                                  kquant.Recipe(2, 2))
    trainer = auxiliary_trainer(model)
    names = [layer.name for layer in trainer.layers]
    assert sum(n.startswith("aux_adaptor") and n.endswith("_conv") for n in names) == 9
    # 16 -> 32 -> 64 channels, 32 -> 16 -> 8 pixels: a strided 1x1 conv at two blocks
    assert sorted(n for n in names if n.startswith("aux_down") and n.endswith("_conv")) == \
        ["aux_down3_conv", "aux_down6_conv"]
    assert trainer.get_layer("aux_down3_conv").strides == (2, 2)
    assert "aux_stem_conv" in names and trainer.output_shape["auxiliary"] == (None, 10)


def test_the_auxiliary_loss_reaches_the_backbone_and_the_low_precision_loss_not_the_adaptors(
        random_images):
    model = quantized()
    trainer = auxiliary_trainer(model)
    labels = tf.constant(np.arange(16) % 10)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    backbone = next(s.kernel for s in kquant.quantizers.quantizer_states(model) if s.layer == "middle")
    adaptor = trainer.get_layer("aux_adaptor0_conv").kernel
    with tf.GradientTape(persistent=True) as tape:
        outputs = trainer(random_images, training=True)
        auxiliary = cross_entropy(labels, outputs["auxiliary"])
        low_precision = cross_entropy(labels, outputs["low_precision"])
    assert np.abs(tape.gradient(auxiliary, backbone).numpy()).sum() > 0
    assert tape.gradient(low_precision, adaptor) is None
    np.testing.assert_allclose(trainer(random_images)["low_precision"], model(random_images),
                               rtol=1e-6)  # the same network


def test_trains_with_fit_and_exports_exactly_like_a_plain_model(digits):
    keras.utils.set_random_seed(0)
    recipe = kquant.Recipe(2, 2, weight_quantizer="direct-levels",
                           activation_quantizer="channel-aware", per_channel=True)
    model = quantized(recipe)
    plain = quantized(recipe)
    training = prepare(model, "auxiliary-module+two-stage", epochs=2)
    assert training.deployable == [model]
    history = training.model.fit(digits.train.take(3), epochs=2, verbose=0,
                                 callbacks=training.callbacks)
    assert {"low_precision_accuracy", "auxiliary_accuracy"} <= set(history.history)
    scores = training.model.evaluate(digits.test.take(2), verbose=0, return_dict=True)
    assert {"low_precision_accuracy", "auxiliary_accuracy"} <= set(scores)
    assert not any(w.name.startswith("aux_") for w in model.weights)
    kquant.compile_classifier(plain, 0.05, 2, 3)  # trained too: trained constants differ in size
    plain.fit(digits.train.take(3), epochs=2, verbose=0,
              callbacks=kquant.quantizers.training_callbacks(plain))
    trained, untouched = (tflite_export.inspect(tflite_export.convert(m, digits.train.take(2)))
                          for m in (model, plain))
    assert trained.ops == untouched.ops
    assert abs(trained.size_bytes - untouched.size_bytes) < 512


def test_an_interrupted_run_resumes_both_paths_and_the_optimizer(digits, tmp_path):
    batches = fixed_batches(digits)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    def run(extra=(), backup=None):
        keras.utils.set_random_seed(0)
        training = prepare(quantized(), epochs=3)
        callbacks = [keras.callbacks.BackupAndRestore(str(backup))] if backup else []
        try:
            training.model.fit(batches, epochs=3, verbose=0,
                               callbacks=[*callbacks, *extra, *training.callbacks])
        except RuntimeError:
            return None
        return training.model.get_weights() + [v.numpy() for v in training.model.optimizer.variables()]

    uninterrupted = run()
    assert run([Interrupt()], tmp_path) is None
    for a, b in zip(uninterrupted, run(backup=tmp_path)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def conv_chain():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


@pytest.mark.parametrize("build, options, message", [
    (conv_chain, {}, "has no residual Add layers to attach to; give the layer names"),
    (tiny_cnn, dict(attach_to=["add", "nowhere"]), r"has no layers \['nowhere'\]"),
    (tiny_cnn, dict(attach_to=["add", "pool"]), "layer 'pool' .* has output shape"),
    (tiny_cnn, dict(attach_to=["add"], stem="nothing"), r"has no layers \['nothing'\]"),
])
def test_bad_attachment_points_are_named(build, options, message):
    model = kquant.quantize_model(build(), kquant.Recipe(2, 2))
    with pytest.raises(ValueError, match=message):
        prepare(model, [AuxiliaryModule(**options)])


def test_maps_that_do_not_shrink_by_an_integer_factor_are_refused():
    inputs = keras.Input((9, 9, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    y = keras.layers.Conv2D(4, 3, padding="same", name="b")(x)
    x = keras.layers.Add(name="add1")([x, y])
    x = keras.layers.Conv2D(4, 3, strides=2, name="c")(x)  # 9 -> 4 pixels
    y = keras.layers.Conv2D(4, 3, padding="same", name="d")(x)
    x = keras.layers.Add(name="add2")([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    with pytest.raises(ValueError, match="layer 'add2' outputs \\(4, 4\\) maps"):
        auxiliary_trainer(model, stem=None)
