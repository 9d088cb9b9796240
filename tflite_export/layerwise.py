"""Layer by layer: each integer op of kquant's lowering, fed TFLite's own input tensors,
against the tensor TFLite computed, so a difference is pinned to the op that made it."""
import dataclasses
from typing import Dict

import numpy as np

from kquant.backend import tf
from kquant.deploy import runtimes
from tflite_export.runtime import make_interpreter

# Ops that change no value between a kquant op and the TFLite op consuming its output.
_TRANSPARENT = ("MINIMUM",)


@dataclasses.dataclass(frozen=True)
class LayerDifference:
    """How one op's int8 output differs from TFLite's.

    Attributes:
        values: int8 values compared.
        differing: fraction of them that differ.
        max_steps: largest difference, in int8 steps.
    """

    values: int
    differing: float
    max_steps: int


def _tflite_ops(interpreter):
    return [op for op in interpreter._get_ops_details()  # pylint: disable=protected-access
            if op["op_name"] != "DELEGATE"]


def _reachable(tensor, ops):
    """`tensor` and the outputs of the value-preserving ops that consume it."""
    found = [tensor]
    for op in ops:
        if op["op_name"] in _TRANSPARENT and op["inputs"][0] in found:
            found.append(op["outputs"][0])
    return found


def _match(program, ops, input_index, sizes):
    """{op name: (TFLite input tensor per source, TFLite output tensor)} for each op of the
    program that a TFLite op of its type computes from the same tensors (and, for a weight
    op, with a filter of its size: a residual block's conv and shortcut read one tensor)."""
    tensor_of = {program.input_name: input_index}
    matched, taken = {}, set()
    for op in program.ops:
        sources = list(getattr(op, "sources", None) or [op.source])
        if not all(s in tensor_of for s in sources):
            continue
        options = [_reachable(tensor_of[s], ops) for s in sources]
        codes = getattr(op, "codes", None)
        for candidate in ops:
            if candidate["op_name"] != op.tflite_op or candidate["index"] in taken:
                continue
            if codes is not None and codes.size not in [sizes[t] for t in candidate["inputs"]
                                                        if t >= 0]:  # -1: no bias
                continue
            inputs = [next((t for t in option if t in candidate["inputs"]), None)
                      for option in options]
            if None not in inputs:
                tensor_of[op.name] = candidate["outputs"][0]
                taken.add(candidate["index"])
                matched[op.name] = (inputs, candidate["outputs"][0])
                break
    return matched


def layer_differences(tflite_bytes, program, int8_images, runtime="xnnpack"
                      ) -> Dict[str, LayerDifference]:
    """Runs TFLite on `int8_images` and each of `program`'s ops on TFLite's own inputs.

    Args:
        tflite_bytes: the exported model.
        program: its lowering (`kquant.deploy.lowering.lower`).
        int8_images: int8 input images (a few dozen suffice).
        runtime: "xnnpack" or "builtin" (TFLite Micro does not expose its tensors).

    Returns:
        {Keras layer name: LayerDifference} for every op matched to a TFLite op.
    """
    interpreter = make_interpreter(tflite_bytes, keep_all_tensors=True, runtime=runtime)
    ops = _tflite_ops(interpreter)
    input_index = interpreter.get_input_details()[0]["index"]
    sizes = {t["index"]: int(np.prod(t["shape"])) for t in interpreter.get_tensor_details()}
    matched = _match(program, ops, input_index, sizes)
    seen = {name: ([[] for _ in inputs], []) for name, (inputs, _) in matched.items()}
    for image in np.asarray(int8_images, np.int8):
        interpreter.set_tensor(input_index, image[None])
        interpreter.invoke()
        for name, (inputs, output) in matched.items():
            for store, index in zip(seen[name][0], inputs):
                store.append(interpreter.get_tensor(index))
            seen[name][1].append(interpreter.get_tensor(output))
    chosen = runtimes.get(runtime)
    report = {}
    for op in program.ops:
        if op.name not in matched:
            continue
        sources = list(getattr(op, "sources", None) or [op.source])
        inputs, outputs = seen[op.name]
        values = {s: tf.constant(np.concatenate(v).astype(np.int64)) for s, v in zip(sources, inputs)}
        mine = op.run(values, chosen).numpy()
        difference = np.abs(mine - np.concatenate(outputs).astype(np.int64))
        report[op.name.removeprefix("quant_")] = LayerDifference(
            int(difference.size), float((difference > 0).mean()), int(difference.max()))
    return report
