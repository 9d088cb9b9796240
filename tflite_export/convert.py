"""Keras (kquant) model -> fully integer TFLite flatbuffer."""
import numpy as np

from kquant.backend import tf
from kquant.batches import first_examples
from kquant.deploy import storage
from kquant.precision import check_deployable
from kquant.quiet import captured_stderr
from kquant.quantizers import export_mode
from tflite_export.packing import pack_weights


def representative_examples(model, data, limit=200, caller="representative_examples"):
    """`[example]` lists of single float32 examples, as the TFLite converter wants them.

    Args:
        model: the Keras model the examples are for.
        data: batches of images or (images, labels), an array of images or an (images, labels)
            pair of arrays (`kquant.batches.image_batches`).
        limit: how many examples at most.
        caller: the function asking, for errors.

    Raises:
        ValueError: for data with no images the model takes, or an example holding NaN or
            infinity (named by index).
    """
    images, _ = first_examples(data, model.input_shape, limit, caller, "representative_data")
    for index, image in enumerate(images):
        if not np.all(np.isfinite(image)):
            raise ValueError(f"{caller}: representative example {index} holds NaN or infinite "
                             "values; the converter would calibrate ranges from them.")
    return [[image[None]] for image in images]


def _concrete_function(model):
    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
    return tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)


def int8_converter(model, representative_data, max_examples=200):
    """A TFLite converter set up for int8 inputs, outputs, weights and activations.

    FakeQuant ops in the model fix their own scales; the representative data calibrates the
    rest. Any Keras model (TF-MOT's own QAT models too) converts with the same settings.

    Args:
        model: a Keras model with one image input.
        representative_data: a `tf.data.Dataset` (or iterable) of image batches or
            (images, labels) batches, an array of images or an (images, labels) pair of arrays.
        max_examples: how many examples to calibrate with.

    Returns:
        A `tf.lite.TFLiteConverter`; call `convert()` on it.

    Raises:
        ValueError: for representative data with no examples or with NaN or infinite values.
    """
    examples = representative_examples(model, representative_data, max_examples, "int8_converter")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_concrete_function(model)], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(examples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter


def convert(model, representative_data, max_examples=200, weight_storage="int8"):
    """Converts a kquant model to a TFLite model with int8 inputs, outputs, weights and activations.

    Every quantizer's own grid (FakeQuant ranges) decides the integer scales; the representative
    data only calibrates what has no grid of its own. Batch norm is folded into the conv weights.

    Low-bit weights may be stored packed (`kquant.deploy.storage`): two 4-bit or four 2-bit
    codes per byte, each output channel's codes divided by their common factor (which moves
    into the scale) and the bias rounded at that coarser scale. LiteRT's built-in kernels and
    TFLite Micro run INT4 convolutions; XNNPACK leaves them to the built-in kernels (its
    integer-exact mode follows) and takes INT4 and INT2 FULLY_CONNECTED itself.

    Args:
        model: a kquant model (from `kquant.quantize_model`), every quantizer switched on.
        representative_data: a `tf.data.Dataset` (or iterable) of image batches or
            (images, labels) batches, an array of images or an (images, labels) pair of arrays.
        max_examples: how many examples to calibrate with.
        weight_storage: "int8" (every filter int8), "int4" (filters of layers with at most
            4-bit weights packed as INT4), "int2" (as "int4", and dense layers with at most
            2-bit weights as INT2, which only LiteRT runs, not TFLite Micro) or "auto" (INT4
            wherever a layer's grid fits, int8 elsewhere).

    Returns:
        The TFLite flatbuffer as bytes.

    Raises:
        ValueError: if a quantizer is switched off or at another bit-width than it deploys at
            (the model would not be the one trained to be deployed), the model has no kquant
            quantizers, the representative data is empty or not finite, `weight_storage` is
            unknown, or a layer's grid does not fit the storage asked for (named).
    """
    check_deployable(model, "convert")
    storages = storage.plan(model, weight_storage, "convert")
    with export_mode():
        converter = int8_converter(model, representative_data, max_examples)
        with captured_stderr():  # the converter's status lines; replayed if it fails
            blob = converter.convert()
    return pack_weights(blob, storages) if weight_storage != "int8" else blob


def convert_float(model):
    """Converts a float Keras model to a float32 TFLite model (the size and speed reference)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_concrete_function(model)], model)
    with captured_stderr():
        return converter.convert()
