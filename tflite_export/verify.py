"""Proof that an exported TFLite model computes what the Keras model computes."""
import dataclasses
from typing import Dict, Optional

import numpy as np

from kquant.batches import first_examples
from kquant.deploy import integer_outputs, lowering, storage
from kquant.deploy.integer_model import int8_input
from kquant.deploy.ops import Quantization
from kquant.quantizers import quantizer_states
from tflite_export.inspect import inspect, keras_layer_names, weight_storage
from tflite_export.layerwise import layer_differences
from tflite_export.runtime import int8_outputs, make_interpreter, model_bytes


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
        weight_codes_match: layer -> whether the stored weights equal the Keras integer codes
            (divided by their common factor where packed, `kquant.deploy.storage`; up to a
            per-channel sign that folding a negative batch-norm scale introduces).
        activation_levels: layer -> (distinct int8 values seen at its output, levels its
            quantizer allows).
        float_ops: TFLite ops that still compute in float (empty for a fully integer model).
        runtime: the runtime the exact comparison ran on ("xnnpack", "builtin", "micro").
        exact_agreement: fraction of examples whose int8 outputs on that runtime are identical
            to kquant's integer-exact mode (`kquant.deploy.integer_model`); None if the model
            has no integer-exact lowering (`exact_error` says why).
        layer_differences: layer -> `layerwise.LayerDifference` of its integer-exact op fed
            TFLite's own inputs (on a sample; empty for TFLite Micro, which hides its tensors).
        exact_error: why there is no exact comparison, or None.
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
    runtime: str = "xnnpack"
    exact_agreement: Optional[float] = None
    layer_differences: Dict[str, object] = dataclasses.field(default_factory=dict)
    exact_error: Optional[str] = None

    @property
    def levels_ok(self):
        """True when every low-bit weight and activation stays within its quantizer's levels."""
        return all(seen <= allowed for seen, allowed in
                   list(self.weight_levels.values()) + list(self.activation_levels.values()))

    def __str__(self):
        steps = (f" ({self.max_logit_difference / self.output_step:.1f} output steps)"
                 if self.output_step else "")
        accuracy = ("" if self.keras_accuracy is None else f", accuracy Keras "
                    f"{self.keras_accuracy:.4f} / TFLite {self.tflite_accuracy:.4f}")
        return (f"TFLite vs Keras on {self.examples} examples: agreement {self.agreement:.4f}, "
                f"max logit difference {self.max_logit_difference:.4f}{steps}{accuracy}; weight codes "
                f"match in {sum(self.weight_codes_match.values())}/{len(self.weight_codes_match)} "
                f"layers; levels within the quantizers' grids: {self.levels_ok}; float ops: "
                f"{self.float_ops or 'none'}; {self._exact_summary()}")

    def _exact_summary(self):
        if self.exact_agreement is None:
            return f"integer-exact mode: not available ({self.exact_error})"
        worst = max(self.layer_differences.items(), key=lambda item: item[1].differing,
                    default=None)
        layers = (f", worst layer {worst[0]} ({worst[1].differing:.2%} of values, up to "
                  f"{worst[1].max_steps} steps)" if worst and worst[1].differing else "")
        return (f"int8 outputs identical to kquant's integer-exact mode on {self.runtime}: "
                f"{self.exact_agreement:.4f}{layers}")


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


def verify(tflite_bytes, model, data, max_examples=10_000, runtime="xnnpack", layer_examples=32):
    """Runs the TFLite model and the Keras model on the same data and compares them.

    Two comparisons: with the Keras model as trained (float arithmetic on the grids: how far
    `model.evaluate` is from the device), and with kquant's integer-exact mode for `runtime`
    (which must agree exactly), also layer by layer.

    Args:
        tflite_bytes: the exported model (`tflite_export.convert`), or the path of its file.
        model: the kquant Keras model it was exported from.
        data: batches of images or (images, labels), e.g. the test `tf.data.Dataset`, an
            array of images or an (images, labels) pair of arrays.
        max_examples: compare at most this many examples.
        runtime: where the model will run, for the exact comparison: "xnnpack", "builtin"
            or "micro" (see `tflite_export.runtime.int8_outputs`).
        layer_examples: examples for the layer-by-layer comparison.

    Returns:
        A `VerificationReport`.

    Raises:
        ValueError: for a model that is not a TFLite flatbuffer, or `data` with no images the
            model takes.
        FileNotFoundError: for a path that does not exist.
    """
    tflite_bytes = model_bytes(tflite_bytes, "verify")
    images, labels = first_examples(data, model.input_shape, max_examples, "verify")
    keras_logits = model.predict(images, batch_size=256, verbose=0)
    interpreter = make_interpreter(tflite_bytes, keep_all_tensors=True)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    in_scale, in_zero = input_detail["quantization"]
    out_scale, out_zero = output_detail["quantization"]
    int8 = input_detail["dtype"] == np.int8
    if int8:
        images = int8_input(model, Quantization(np.float32(in_scale), int(in_zero)),
                            images).numpy()
    states = quantizer_states(model)
    grids = {s.layer: s.quantizer.activation_grid(s.variables)
             for s in states if s.role == "activation"}
    activation_outputs = _activation_tensors(interpreter, grids)
    seen = {layer: set() for layer in activation_outputs}
    tflite_logits = np.empty_like(keras_logits)
    for i, image in enumerate(images):
        interpreter.set_tensor(input_detail["index"], image[None])
        interpreter.invoke()
        output = interpreter.get_tensor(output_detail["index"])[0].astype(np.float32)
        tflite_logits[i] = (output - out_zero) * out_scale if out_scale else output
        for layer, index in activation_outputs.items():
            if len(seen[layer]) <= 256:
                seen[layer].update(np.unique(interpreter.get_tensor(index)).tolist())
    summary = inspect(tflite_bytes)
    weights = {s.layer: s for s in states if s.role == "weight"}
    stored = storage.plan(model, summary.weight_storage, "verify")
    keras_codes = {layer: stored[layer].codes(s.quantizer.codes_and_step(
        s.quantizer.fold(s.kernel), s.variables)[0].numpy()) for layer, s in weights.items()}
    agree = np.argmax(keras_logits, 1) == np.argmax(tflite_logits, 1)
    exact = _exact_comparison(tflite_bytes, model, images, runtime, layer_examples,
                              summary.weight_storage) if int8 else \
        {"exact_error": "the TFLite model's input is not int8"}
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
        float_ops=summary.float_ops, runtime=runtime, **exact)


def exact_agreement(tflite_bytes, model, data, runtime, max_examples=10_000):
    """The fraction of examples whose int8 outputs on `runtime` are identical to kquant's
    integer-exact mode (`verify` reports it for one runtime, with the rest).

    Raises:
        ValueError: for a model without an integer-exact lowering (named), or a TFLite model
            that is not a flatbuffer.
    """
    tflite_bytes = model_bytes(tflite_bytes, "exact_agreement")
    images, _ = first_examples(data, model.input_shape, max_examples, "exact_agreement")
    stored = weight_storage(tflite_bytes)
    quant = lowering.lower(model, stored).input_quant
    int8_images = int8_input(model, quant, images).numpy()
    return _exact_comparison(tflite_bytes, model, int8_images, runtime, 0,
                             stored)["exact_agreement"]


def _exact_comparison(tflite_bytes, model, int8_images, runtime, layer_examples, stored):
    """The `VerificationReport` fields of the comparison with the integer-exact mode, for
    weights stored as `stored` ({layer: "int8" | "int4" | "int2"})."""
    try:
        program = lowering.lower(model, stored)
    except ValueError as error:
        return {"exact_error": str(error)}
    deployed = int8_outputs(tflite_bytes, int8_images, runtime)
    exact = integer_outputs(model, int8_images, runtime, int8_images=True, weight_storage=stored)
    layers = ({} if runtime == "micro" or not layer_examples else
              layer_differences(tflite_bytes, program, int8_images[:layer_examples], runtime))
    return {"exact_agreement": float(np.mean(np.all(
        deployed.reshape(len(deployed), -1) == exact.reshape(len(exact), -1), axis=1))),
            "layer_differences": layers}
