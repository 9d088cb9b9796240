"""Channel-aware activation quantizer: the fit, its variants, the moving average, export."""
import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import keras, tf
from kquant.quantizers import ChannelAwareActivationQuantizer, fit_clip
from kquant.quantizers.channel_aware import channel_errors, pooled_error


@pytest.fixture(scope="module")
def skewed():
    """16 channels of |N(0, 1)| activations, two of them with 25 times the scale."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(4096, 16))).astype(np.float32)
    x[:, :2] *= 25.0
    return x


@pytest.mark.parametrize("bits", [2, 4])
def test_channel_aware_fit_beats_pooled_fit_on_its_own_criterion_and_vice_versa(skewed, bits):
    aware = float(fit_clip(skewed, bits, "mean", max_rows=4096))
    pooled = float(fit_clip(skewed, bits, "pooled", max_rows=4096))
    assert aware < pooled  # the pooled fit stretches the range for the two wide channels
    mean_error = lambda clip: float(tf.reduce_mean(channel_errors(skewed, clip, bits)))  # noqa: E731
    assert mean_error(aware) < mean_error(pooled)
    assert float(pooled_error(skewed, pooled, bits)) < float(pooled_error(skewed, aware, bits))
    for statistic in ("median", "trimmed_mean"):  # robust variants side with the majority too
        robust = float(fit_clip(skewed, bits, statistic, max_rows=4096))
        assert mean_error(robust) < mean_error(pooled), statistic


def test_dead_channels_do_not_count(skewed):
    with_dead = np.concatenate([skewed, np.zeros((len(skewed), 16), np.float32)], axis=1)
    for statistic in ("mean", "median", "trimmed_mean"):
        assert float(fit_clip(with_dead, 2, statistic, max_rows=4096)) == pytest.approx(
            float(fit_clip(skewed, 2, statistic, max_rows=4096))), statistic
    assert float(fit_clip(np.zeros((8, 4), np.float32), 2)) == 0.0


def test_clip_follows_an_exponential_average_of_batch_fits_in_training_only(skewed):
    layer = keras.layers.ReLU()
    quantizer = ChannelAwareActivationQuantizer(2, momentum=0.75)
    variables = quantizer.build(tf.TensorShape([None, 16]), "output", layer)
    first, second = skewed[:1024], skewed[1024:2048] * 0.5  # 1024 rows: the fit takes them all
    out = quantizer(tf.constant(first), True, variables)
    fit_first = float(fit_clip(first, 2))
    assert float(variables["clip"]) == pytest.approx(fit_first)  # the first batch sets it
    levels = np.unique(out.numpy())
    assert len(levels) <= 4 and levels.max() == pytest.approx(fit_first, rel=1e-5)
    quantizer(tf.constant(second), True, variables)
    expected = 0.75 * fit_first + 0.25 * float(fit_clip(second, 2))
    assert float(variables["clip"]) == pytest.approx(expected, rel=1e-5)
    quantizer(tf.constant(second), False, variables)
    assert float(variables["clip"]) == pytest.approx(expected, rel=1e-5)
    with tf.GradientTape() as tape:
        x = tf.constant(second)
        tape.watch(x)
        y = quantizer(x, False, variables)
    gradient = tape.gradient(y, x).numpy()
    clear = np.abs(second - expected) > expected / 3 / 2  # within half a step of the clip the
    inside = ((second >= 0) & (second <= expected)).astype(np.float32)  # FakeQuant rounds to it
    np.testing.assert_array_equal(gradient[clear], inside[clear])


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="statistic must be one of"):
        ChannelAwareActivationQuantizer(2, statistic="max")
    with pytest.raises(ValueError, match="momentum must be in"):
        ChannelAwareActivationQuantizer(2, momentum=1.0)


def test_calibration_starts_clips_at_the_fit_and_model_exports_exactly(tmp_path):
    keras.utils.set_random_seed(0)
    # A fresh data set: the shared fixture's shuffle order depends on the tests run before.
    digits = kquant.load_dataset("digits", batch_size=32, seed=0)
    float_model = kquant.models.small_cnn((8, 8, 1), 10)
    kquant.compile_classifier(float_model)
    float_model.fit(digits.train, epochs=8, verbose=0)
    recipe = kquant.Recipe(4, 2, activation_quantizer="channel-aware")
    model = kquant.quantize_model(float_model, recipe)
    batches = [(x.numpy(), y.numpy()) for x, y in digits.train.take(2)]  # training data reshuffles
    chosen = kquant.calibrate_ranges(model, float_model, batches)
    images = np.concatenate([x for x, _ in batches])
    relu = keras.Model(float_model.inputs, float_model.get_layer("block1_relu").output)
    expected = float(fit_clip(relu(images, training=False), 2, max_rows=4096))  # all 4096 rows
    assert chosen["block1_relu"] == pytest.approx(expected, rel=1e-5)
    kquant.compile_classifier(model)
    model.fit(digits.train, epochs=4, verbose=0)
    assert model.evaluate(digits.test, verbose=0)[1] > 0.4  # ten classes: chance is 0.1
    path = str(tmp_path / "aware.h5")
    model.save(path)
    with kquant.quantize_scope():
        loaded = keras.models.load_model(path, compile=False)
    batch = images[:32]
    np.testing.assert_allclose(loaded(batch, training=False), model(batch, training=False),
                               rtol=1e-5, atol=1e-5)
    report = tflite_export.verify(tflite_export.convert(model, digits.train.take(4)), model,
                                  digits.test)
    assert report.agreement >= 0.99, report
    for layer, (seen, allowed) in report.activation_levels.items():
        assert allowed == 4 and seen <= 4, layer


def test_the_fit_samples_rows_from_every_position_of_the_map():
    from kquant.quantizers.channel_aware import _rows, _sample_rows

    # batch 128 of 32x32 maps, one channel whose value is the column index
    columns = np.broadcast_to(np.arange(32, dtype=np.float32)[None, None, :, None], (128, 32, 32, 1))
    rows = _sample_rows(_rows(tf.constant(columns)), 1024).numpy()
    assert rows.shape == (1024, 1)
    seen = np.bincount(rows[:, 0].astype(int), minlength=32)
    assert (seen > 0).all() and seen.max() < 4 * seen.mean()  # every column, none dominating
    small = np.ones((2, 4, 4, 3), np.float32)
    assert _sample_rows(_rows(tf.constant(small)), 1024).shape == (32, 3)  # all rows
