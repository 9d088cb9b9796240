"""The data forms kquant's functions read: batches as `fit` takes a dataset, arrays as
`fit(x, y)` takes them, and one clear error for anything else."""
import numpy as np
import pytest

import kquant
import tflite_export
from kquant.backend import tf
from kquant.batches import first_examples, image_batches
from tests.conftest import tiny_cnn

SHAPE = (None, 8, 8, 1)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(40, 8, 8, 1)).astype(np.float32)


def test_an_array_is_cut_into_batches_and_a_pair_of_arrays_keeps_its_labels(images):
    labels = np.arange(40) % 10
    batches = list(image_batches(images, SHAPE, "f", batch_size=16))
    assert [len(x) for x, _ in batches] == [16, 16, 8] and all(y is None for _, y in batches)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images)
    pairs = list(image_batches((images, list(labels)), SHAPE, "f", batch_size=16))
    np.testing.assert_array_equal(np.concatenate([y for _, y in pairs]), labels)
    # A tuple of two image batches is two batches, not images and labels.
    assert [len(x) for x, _ in image_batches((images[:3], images[3:5]), SHAPE, "f")] == [3, 2]


def test_a_dataset_of_one_hot_labels_gives_class_indices(images):
    labels = np.arange(40) % 10
    one_hot = tf.data.Dataset.from_tensor_slices((images, np.eye(10)[labels])).batch(16)
    got, classes = first_examples(one_hot, SHAPE, 30, "f")
    np.testing.assert_array_equal(got, images[:30])
    np.testing.assert_array_equal(classes, labels[:30])


@pytest.mark.parametrize("data,found", [
    (np.zeros((4, 28, 28, 1)), r"data gave images shaped \(4, 28, 28, 1\)"),
    ([np.zeros((8, 8, 1))], r"data gave images shaped \(8, 8, 1\)"),
    ({"image": np.zeros((4, 8, 8, 1))}, "data of type dict"),
    ("train", "data of type str"),
    (3, "data of type int"),
    ([["a", "b"]], "data holds a str where"),
])
def test_what_is_not_images_the_model_takes_is_one_clear_error(data, found):
    with pytest.raises(ValueError, match=rf"^calibrate_ranges: {found}.*\(batch, 8, 8, 1\).*"
                                         "pass a tf.data.Dataset"):
        list(image_batches(data, SHAPE, "calibrate_ranges"))


def test_no_examples_is_an_error():
    with pytest.raises(ValueError, match="verify: data yielded no examples"):
        first_examples([np.zeros((0, 8, 8, 1))], SHAPE, 10, "verify")


def test_calibration_export_and_verify_take_arrays_as_fit_does(images):
    float_model = tiny_cnn()
    labels = np.arange(40) % 10
    by_batches = kquant.quantize_model(float_model, kquant.Recipe(4, 4))
    by_array = kquant.quantize_model(float_model, kquant.Recipe(4, 4))
    chosen = kquant.calibrate_ranges(by_batches, float_model, [images[:16], images[16:]])
    assert kquant.calibrate_ranges(by_array, float_model, images) == chosen
    with pytest.raises(ValueError, match=r"calibrate_ranges: data gave images shaped "
                                         r"\(40, 16, 16, 1\)"):
        kquant.calibrate_ranges(by_array, float_model, np.zeros((40, 16, 16, 1)))
    tflite = tflite_export.convert(by_array, images)
    assert tflite == tflite_export.convert(by_array, [(images, labels)])
    from_pair = tflite_export.verify(tflite, by_array, (images, labels), layer_examples=0)
    from_dataset = tflite_export.verify(
        tflite, by_array, tf.data.Dataset.from_tensor_slices((images, labels)).batch(8),
        layer_examples=0)
    assert from_pair.examples == 40 and from_pair.tflite_accuracy is not None
    assert from_pair.tflite_accuracy == from_dataset.tflite_accuracy
    assert from_pair.exact_agreement == 1.0
    with pytest.raises(ValueError, match=r"int8_converter: representative_data gave images "
                                         r"shaped \(4, 8, 8\)"):
        tflite_export.convert(by_array, images[:4, :, :, 0])
