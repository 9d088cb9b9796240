"""Proof that an exported TFLite model computes what the Keras model computes."""
import dataclasses
from typing import Dict

import numpy as np

from kquant.backend import QuantizeLayer, tf
from kquant.quantizers import quantizer_states
from tflite_export.inspect import inspect, keras_layer_names
from tflite_export.runtime import make_interpreter


@dataclasses.dataclass
class VerificationReport:
    """How a TFLite model and its Keras model compare on data.

    Attributes:
        examples: number of examples compared.
        agreement: fraction of examples with the same top-1 class.
        max_logit_difference: largest |TFLite - Keras| over all outputs (TFLite dequantized).
        mean_logit_difference: mean |TFLite - Keras|; a rounding tie that flips one
            activation level moves the maximum, the mean shows whether the two really agree.
        output_step: the quantization step of the TFLite output, the unit of that difference
            (0 for a float output).
        keras_accuracy, tflite_accuracy: top-1 accuracy of each (None without labels).
        weight_levels: layer -> (largest distinct int8 values in one channel, levels its
            quantizer allows).
        weight_codes_match: layer -> whether the int8 weights equal the Keras integer codes
            (up to a per-channel sign that folding a negative batch-norm scale introduces).
        activation_levels: layer -> (distinct int8 values seen at its output, levels its
            quantizer allows).
        float_ops: TFLite ops that still compute in float (empty for a fully integer model).
    """

    examples: int
    agreement: float
    max_logit_difference: float
    mean_logit_difference: float
    output_step: float
    keras_accuracy: float
    tflite_accuracy: float
    weight_levels: Dict[str, tuple]
    weight_codes_match: Dict[str, bool]
    activation_levels: Dict[str, tuple]
    float_ops: list

    @property
    def levels_ok(self):
        """True when every low-bit weight and activation stays within its quantizer's levels."""
        return all(seen <= allowed for seen, allowed in
                   list(self.weight_levels.values()) + list(self.activation_levels.values()))

    def __str__(self):
        steps = (f" ({self.max_logit_difference / self.output_step:.1f} output steps)"
                 if self.output_step else "")
        return (f"TFLite vs Keras on {self.examples} examples: agreement {self.agreement:.4f}, "
                f"max logit difference {self.max_logit_difference:.4f}{steps}, accuracy Keras "
                f"{self.keras_accuracy:.4f} / TFLite {self.tflite_accuracy:.4f}; weight codes "
                f"match in {sum(self.weight_codes_match.values())}/{len(self.weight_codes_match)} "
                f"layers; levels within the quantizers' grids: {self.levels_ok}; float ops: "
                f"{self.float_ops or 'none'}")


def _codes_match(tflite_codes, keras_codes):
    """Equal per channel up to sign (a negative batch-norm scale flips a folded channel)."""
    if tflite_codes.shape != keras_codes.shape:
        return False
    flat_t = tflite_codes.reshape(-1, tflite_codes.shape[-1]).astype(np.int64)
    flat_k = np.rint(keras_codes.reshape(-1, keras_codes.shape[-1])).astype(np.int64)
    return bool(np.all((flat_t == flat_k).all(axis=0) | (flat_t == -flat_k).all(axis=0)))


def _activation_tensors(interpreter, grids):
    """{layer: index of the TFLite tensor holding its activation grid}.

    That tensor is the last op output that carries the layer's name and the grid's step as
    its scale (the requantized conv output may come first, then the clip to the grid's top).
    """
    tensors = interpreter.get_tensor_details()
    found = {}
    for op in interpreter._get_ops_details():  # pylint: disable=protected-access
        if op["op_name"] == "DELEGATE":
            continue
        output = tensors[op["outputs"][0]]
        scale = output["quantization"][0]
        for layer in keras_layer_names(output["name"]):
            if layer in grids and np.isclose(scale, grids[layer].step, rtol=1e-5):
                found[layer] = output["index"]
    return found


def _keras_input_grid(model, images):
    """The images as the Keras model's input quantizer rounded them, when it has one.

    Feeding TFLite exactly these values compares the two models on identical inputs: rounding
    the raw image again can flip a value lying near a half step (common when the data has about
    as many grey levels as int8), and a low-bit network amplifies that one-step change.
    """
    first = model.layers[1] if len(model.layers) > 1 else None
    if not isinstance(first, QuantizeLayer):
        return images
    # Called directly: its graph output may belong to the model TF-MOT cloned it from.
    return np.concatenate([first(tf.constant(images[i:i + 256]), training=False).numpy()
                           for i in range(0, len(images), 256)])


def _examples(data, max_examples):
    images, labels = [], []
    for batch in data:
        x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        images.append(np.asarray(x, np.float32))
        if y is not None:
            labels.append(np.asarray(y).reshape(-1))
        if sum(len(i) for i in images) >= max_examples:
            break
    images = np.concatenate(images)[:max_examples]
    labels = np.concatenate(labels)[:max_examples] if labels else None
    return images, labels


def verify(tflite_bytes, model, data, max_examples=10_000):
    """Runs the TFLite model and the Keras model on the same data and compares them.

    Args:
        tflite_bytes: the exported model (`tflite_export.convert`).
        model: the kquant Keras model it was exported from.
        data: batches of images or (images, labels), e.g. the test `tf.data.Dataset`.
        max_examples: compare at most this many examples.

    Returns:
        A `VerificationReport`.
    """
    images, labels = _examples(data, max_examples)
    keras_logits = model.predict(images, batch_size=256, verbose=0)
    images = _keras_input_grid(model, images)
    interpreter = make_interpreter(tflite_bytes, keep_all_tensors=True)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    in_scale, in_zero = input_detail["quantization"]
    out_scale, out_zero = output_detail["quantization"]
    states = quantizer_states(model)
    grids = {s.layer: s.quantizer.activation_grid(s.variables)
             for s in states if s.role == "activation"}
    activation_outputs = _activation_tensors(interpreter, grids)
    seen = {layer: set() for layer in activation_outputs}
    tflite_logits = np.empty_like(keras_logits)
    for i, image in enumerate(images):
        if input_detail["dtype"] == np.int8:
            # Round half up, as the Keras input FakeQuant does (the values are on its grid).
            image = np.clip(np.floor(image / in_scale + in_zero + 0.5), -128, 127).astype(np.int8)
        interpreter.set_tensor(input_detail["index"], image[None])
        interpreter.invoke()
        output = interpreter.get_tensor(output_detail["index"])[0].astype(np.float32)
        tflite_logits[i] = (output - out_zero) * out_scale if out_scale else output
        for layer, index in activation_outputs.items():
            if len(seen[layer]) <= 256:
                seen[layer].update(np.unique(interpreter.get_tensor(index)).tolist())
    summary = inspect(tflite_bytes)
    weights = {s.layer: s for s in states if s.role == "weight"}
    keras_codes = {layer: s.quantizer.codes_and_step(s.kernel, s.variables)[0].numpy()
                   for layer, s in weights.items()}
    agree = np.argmax(keras_logits, 1) == np.argmax(tflite_logits, 1)
    return VerificationReport(
        examples=len(images),
        agreement=float(agree.mean()),
        max_logit_difference=float(np.max(np.abs(keras_logits - tflite_logits))),
        mean_logit_difference=float(np.mean(np.abs(keras_logits - tflite_logits))),
        output_step=float(out_scale),
        keras_accuracy=float((np.argmax(keras_logits, 1) == labels).mean()) if labels is not None else None,
        tflite_accuracy=float((np.argmax(tflite_logits, 1) == labels).mean()) if labels is not None else None,
        weight_levels={layer: (summary.weight_levels[layer],
                               weights[layer].quantizer.level_count(weights[layer].variables))
                       for layer in keras_codes if layer in summary.weight_levels},
        weight_codes_match={layer: _codes_match(summary.weight_codes[layer], codes)
                            for layer, codes in keras_codes.items() if layer in summary.weight_codes},
        activation_levels={layer: (len(values), grids[layer].levels)
                           for layer, values in seen.items()},
        float_ops=summary.float_ops)
