"""The data arguments kquant reads examples from, in the forms Keras's `fit` takes.

`calibrate_ranges`, TSQ's solver and `tflite_export`'s `convert` and `verify` each read a few
examples of a user's data; they all read it through `image_batches`, so they accept the same
forms and refuse anything else with one error that names the function and argument.
"""
import numpy as np

from kquant.backend import tf

_FORMS = ("a tf.data.Dataset or other iterable of image batches or (images, labels) batches, an "
         "array of images, or an (images, labels) pair of arrays")


def _is_array(value):
    return isinstance(value, (np.ndarray, tf.Tensor))


def _pair_of_arrays(data):
    """True for (images, labels) as `fit(x, y)` takes them, not a tuple of two image batches."""
    return (isinstance(data, tuple) and len(data) == 2 and _is_array(data[0])
            and np.ndim(data[1]) < np.ndim(data[0]) and len(data[0]) == len(data[1]))


def _as_batches(data, batch_size):
    if _is_array(data):
        return ((data[start:start + batch_size], None) for start in range(0, len(data), batch_size))
    if _pair_of_arrays(data):
        images, labels = data
        return ((images[start:start + batch_size], labels[start:start + batch_size])
                for start in range(0, len(images), batch_size))
    return ((batch[0], batch[1] if len(batch) > 1 else None)
            if isinstance(batch, (tuple, list)) else (batch, None) for batch in data)


def image_batches(data, input_shape, caller, argument="data", batch_size=256):
    """Yields (images, labels) numpy batches of `data`: float32 images, labels as class indices
    (None where the data has none).

    Args:
        data: a `tf.data.Dataset` or other iterable of image batches or (images, labels)
            batches, as `fit` takes a dataset; or an array of images, or an (images, labels)
            pair of arrays, as `fit(x, y)` takes them (cut into batches of `batch_size`).
        input_shape: the model's input shape, (None, height, width, channels); a None
            dimension matches any size.
        caller: the function reading the data, for the error.
        argument: the argument `data` came from, for the error.
        batch_size: examples per batch cut from arrays.

    Raises:
        ValueError: for data that is not iterable, or images that are not numbers shaped
            (batch, *input_shape[1:]) (the shape found is named).
    """
    expected = tuple(input_shape[1:])
    wanted = f"(batch, {', '.join(str(d) for d in expected)})"
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
        raise ValueError(f"{caller}: {argument} of type {type(data).__name__} holds no images "
                         f"shaped {wanted}; pass {_FORMS}.")
    for images, labels in _as_batches(data, batch_size):
        try:
            images = np.asarray(images, np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{caller}: {argument} holds a {type(images).__name__} where images "
                             f"shaped {wanted} belong; pass {_FORMS}.") from None
        if images.ndim != len(expected) + 1 or any(
                want is not None and want != got for want, got in zip(expected, images.shape[1:])):
            raise ValueError(f"{caller}: {argument} gave images shaped {images.shape}, but the "
                             f"model takes {wanted}; pass {_FORMS}.")
        yield images, None if labels is None else _class_indices(np.asarray(labels))


def _class_indices(labels):
    """Labels as class indices, one-hot rows (as categorical cross-entropy takes them) too."""
    return labels.argmax(-1) if labels.ndim == 2 and labels.shape[1] > 1 else labels.reshape(-1)


def first_examples(data, input_shape, count, caller, argument="data"):
    """The first `count` examples of `data` (forms as `image_batches`), as (images, labels)
    numpy arrays, labels None for data without them.

    Raises:
        ValueError: as `image_batches`, or for data with no examples.
    """
    images, labels = [], []
    for batch_images, batch_labels in image_batches(data, input_shape, caller, argument):
        images.append(batch_images)
        if batch_labels is not None:
            labels.append(batch_labels)
        if sum(map(len, images)) >= count:
            break
    if not sum(map(len, images)):
        raise ValueError(f"{caller}: {argument} yielded no examples; pass {_FORMS}.")
    return (np.concatenate(images)[:count],
            np.concatenate(labels)[:count] if len(labels) == len(images) else None)
