"""What a TFLite model holds: its ops, tensor types, size, and the integer levels of its weights."""
import dataclasses
import re
from typing import Dict, List

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from tflite_export.runtime import make_interpreter, model_bytes

WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}
_LAYER_NAME = re.compile(r"quant_([^/;]+)/")
_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}
TENSOR_TYPES = {"int8": schema.TensorType.INT8, "int4": schema.TensorType.INT4,
                "int2": schema.TensorType.INT2}


def keras_layer_names(tensor_name):
    """The kquant (TF-MOT `quant_` prefixed) Keras layers a TFLite tensor came from, in the
    order its name lists them (fused ops name several)."""
    return _LAYER_NAME.findall(tensor_name)


def weight_tensors(model):
    """Yields (op name, filter tensor, bias tensor or None, Keras layer name) per weight op of a
    flatbuffer object model (`flatbuffer_utils.convert_bytearray_to_object`)."""
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            if name not in WEIGHT_OPS:
                continue
            weight = subgraph.tensors[op.inputs[WEIGHT_OPS[name]]]
            bias = subgraph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 \
                else None
            layers = keras_layer_names(weight.name.decode())
            if layers:
                yield name, weight, bias, layers[0]


def weight_storage(tflite_bytes):
    """{Keras layer: "int8", "int4" or "int2"}: how the file stores each layer's filter."""
    names = {code: name for name, code in TENSOR_TYPES.items()}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    return {layer: names.get(weight.type, "int8") for _, weight, _, layer in weight_tensors(model)}


@dataclasses.dataclass
class TFLiteSummary:
    """Facts about one TFLite model.

    Attributes:
        size_bytes: size of the flatbuffer.
        ops: op names in execution order.
        float_ops: ops with a float32 input or output (empty for a fully integer model).
        input_dtype, output_dtype: numpy type names of the model's input and output.
        weight_codes: Keras layer name -> the weights' integers with the output channel last
            (packed ones unpacked).
        weight_storage: Keras layer name -> "int8", or "int4" / "int2" for packed filters.
        weight_levels: Keras layer name -> largest number of distinct int8 values in one
            output channel.
        xnnpack_partitions: subgraphs XNNPACK takes over (1: the whole model; each op it
            cannot take splits the graph).
    """

    size_bytes: int
    ops: List[str]
    float_ops: List[str]
    input_dtype: str
    output_dtype: str
    weight_codes: Dict[str, np.ndarray]
    weight_levels: Dict[str, int]
    xnnpack_partitions: int
    weight_storage: Dict[str, str]


def channels_last(values, op_name):
    """TFLite weight layouts -> kquant's channels-last view of the Keras kernel."""
    if op_name == "CONV_2D":  # (out, h, w, in) -> (h, w, in, out)
        return np.transpose(values, (1, 2, 3, 0))
    if op_name == "DEPTHWISE_CONV_2D":  # (1, h, w, channels) -> (h, w, 1, channels)
        return np.transpose(values, (1, 2, 0, 3))
    return values.T  # FULLY_CONNECTED (out, in) -> (in, out)


def inspect(tflite_bytes):
    """Summarises a TFLite model.

    Args:
        tflite_bytes: the flatbuffer, or the path of a .tflite file.

    Returns:
        A `TFLiteSummary`.

    Raises:
        ValueError: for bytes that are not a TFLite flatbuffer.
        FileNotFoundError: for a path that does not exist.
    """
    tflite_bytes = model_bytes(tflite_bytes, "inspect")
    interpreter = make_interpreter(tflite_bytes)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops, float_ops, codes, partitions = [], [], {}, 0
    for op in interpreter._get_ops_details():  # pylint: disable=protected-access
        name = op["op_name"]
        if name == "DELEGATE":
            partitions += 1
            continue
        ops.append(name)
        indices = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(tensors[i]["dtype"] == np.float32 for i in indices):
            float_ops.append(name)
        if name in WEIGHT_OPS:
            weight = tensors[op["inputs"][WEIGHT_OPS[name]]]
            layers = keras_layer_names(weight["name"])
            if layers and weight["dtype"] == np.int8:
                codes[layers[0]] = channels_last(interpreter.get_tensor(weight["index"]), name)
    levels = {layer: max(len(np.unique(c[..., k])) for k in range(c.shape[-1]))
              for layer, c in codes.items()}
    return TFLiteSummary(len(tflite_bytes), ops, float_ops,
                         interpreter.get_input_details()[0]["dtype"].__name__,
                         interpreter.get_output_details()[0]["dtype"].__name__, codes, levels,
                         partitions, weight_storage(tflite_bytes))
