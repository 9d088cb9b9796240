"""`integer_model`: a Keras model that computes what the exported int8 TFLite model computes.

Built from the kquant model alone (no .tflite file): `predict` and `evaluate` give the
deployed model's outputs and accuracy on the chosen runtime before anything is exported.
"""
import numpy as np

from kquant.backend import QuantizeLayer, keras, tf
from kquant.deploy import lowering, runtimes
from kquant.quiet import without_retracing_warnings


def int8_input(model, quant, images):
    """Float images as the int8 tensor the deployed model is fed.

    The Keras model's input quantizer puts the images on its grid first, and rounding half up
    takes them to int8: feeding TFLite exactly those integers compares the two on identical
    inputs (rounding the raw image again can flip a value lying near a half step).

    Args:
        model: the kquant model (or any TF-MOT model; without an input quantizer the images
            are rounded as they are).
        quant: the int8 input's `ops.Quantization`.
        images: float images.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    first = next((layer for layer in model.layers if isinstance(layer, QuantizeLayer)), None)
    # Called directly: its graph output may belong to the model TF-MOT cloned it from.
    on_grid = first(images, training=False) if first is not None else images
    q = tf.floor(on_grid / quant.scale + quant.zero_point + 0.5)
    return tf.cast(tf.clip_by_value(q, -128.0, 127.0), tf.int8)


class IntegerInference(keras.layers.Layer):
    """Runs a lowered program (`kquant.deploy.lowering.lower`) on float images.

    Args:
        model: the kquant model the program was lowered from (its input quantizer is reused).
        program: the `ops.Program`.
        runtime: a runtime from `kquant.deploy.runtimes`.
        dequantize: return float outputs, scale * (q - zero_point), instead of int8 values.
    """

    def __init__(self, model, program, runtime, dequantize=True, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self._model, self.program, self.runtime = model, program, runtime
        self.dequantize = dequantize

    def call(self, images):
        q = self.program.run(int8_input(self._model, self.program.input_quant, images),
                             self.runtime)
        if not self.dequantize:
            return tf.cast(q, tf.int8)
        quant = self.program.output_quant
        return (tf.cast(q, tf.float32) - quant.zero_point) * quant.scale


def integer_model(model, runtime="xnnpack", dequantize=True, weight_storage="int8"):
    """A Keras model computing, bit for bit, what `model`'s int8 TFLite export computes.

    Batch norm is folded into per-channel weight scales and an int32 bias, accumulation is
    exact, and every requantization rounds as the runtime's kernels round, with the scales
    and zero points the TFLite converter writes for this model.

    Args:
        model: a kquant model (from `kquant.quantize_model`), every quantizer switched on at
            its deployed bit-width (`kquant.precision.set_deployed`).
        runtime: where the model will run: "xnnpack" (LiteRT's default CPU path on phones and
            desktops), "builtin" (LiteRT's built-in kernels, no delegate) or "micro" (TFLite
            Micro, on microcontrollers).
        dequantize: output float values (scale * (q - zero point), what `evaluate`'s
            accuracy needs) or the int8 values themselves.
        weight_storage: the `weight_storage` the model is exported with
            (`tflite_export.convert`): "int8", "int4", "int2" or "auto".

    Returns:
        A Keras model taking the float images `model` takes; compile it to `evaluate`.

    Raises:
        ValueError: for an unknown runtime, a model that is not deployable as it stands, a
            layer without an integer-exact lowering (named), or weights that cannot be
            stored as asked.
    """
    chosen = runtimes.get(runtime)
    program = lowering.lower(model, weight_storage)
    inputs = keras.Input(model.input_shape[1:])
    outputs = IntegerInference(model, program, chosen, dequantize, name="integer_inference")(inputs)
    return keras.Model(inputs, outputs, name=f"{model.name}_integer_{runtime}")


def integer_outputs(model, images, runtime="xnnpack", batch_size=256, int8_images=False,
                    weight_storage="int8"):
    """The deployed model's int8 outputs, computed by kquant (see `integer_model`).

    Args:
        model: the kquant model.
        images: float images, or the int8 input itself with `int8_images`.
        runtime: "xnnpack", "builtin" or "micro".
        batch_size: images per batch.
        int8_images: `images` are already the int8 input (`int8_input`).
        weight_storage: as in `integer_model`, or {layer: storage} as a file holds them.

    Returns:
        An int8 numpy array.
    """
    chosen = runtimes.get(runtime)
    program = lowering.lower(model, weight_storage)

    def run(batch):
        return program.run(batch, chosen)

    if len(images) > batch_size:  # tracing pays off over several batches only
        run = tf.function(run)
    outputs = []
    with without_retracing_warnings():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            if not int8_images:
                batch = int8_input(model, program.input_quant, batch)
            outputs.append(run(tf.convert_to_tensor(batch)).numpy())
    return np.concatenate(outputs).astype(np.int8)
