"""Rewrites a TFLite flatbuffer so weight tensors are stored as packed INT4 or INT2.

The TFLite converter writes int8 filters only; LiteRT's own flatbuffer tools (the schema's
object API) read the file, and `kquant.deploy.storage` says which layers to pack and with
which integers.
"""
import numpy as np
from ai_edge_litert.tools import flatbuffer_utils

from kquant.deploy import storage
from tflite_export.inspect import TENSOR_TYPES, weight_tensors


def pack_weights(tflite_bytes, storages):
    """Stores each planned layer's filter packed, with its scales and bias rescaled.

    Args:
        tflite_bytes: an int8 flatbuffer from the TFLite converter.
        storages: {Keras layer name: `kquant.deploy.storage.LayerStorage`}.

    Returns:
        The rewritten flatbuffer as bytes.

    Raises:
        ValueError: if a filter's int8 codes are not multiples of the planned divisors (the
            file was not exported from this model).
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    for _, weight, bias, layer in weight_tensors(model):
        planned = storages.get(layer)
        if planned is None or planned is storage.UNPACKED:
            continue
        buffer = model.buffers[weight.buffer]
        codes = np.frombuffer(bytes(buffer.data), np.int8).reshape(weight.shape).astype(np.int64)
        axis = weight.quantization.quantizedDimension
        divisors = planned.divisors if len(weight.quantization.scale) > 1 else planned.divisors[:1]
        shape = [1] * codes.ndim
        shape[axis] = -1
        if np.any(codes % divisors.reshape(shape)):
            raise ValueError(f"pack_weights: the int8 filter of layer {layer!r} is not a "
                             "multiple of the planned divisors; was it exported from this model?")
        stored = planned.codes(codes, axis)
        if planned.storage == "int8":  # the stored codes unpacked (the packed form's twin)
            buffer.data = stored.astype(np.int8).reshape(-1).view(np.uint8)
        else:
            buffer.data = storage.pack(stored, planned.storage)
            weight.type = TENSOR_TYPES[planned.storage]
        weight.quantization.scale = planned.scales(weight.quantization.scale).tolist()
        if bias is not None:
            bias_buffer = model.buffers[bias.buffer]
            values = np.frombuffer(bytes(bias_buffer.data), np.int32)
            bias_buffer.data = planned.bias(values).astype(np.int32).view(np.uint8)
            bias.quantization.scale = planned.scales(bias.quantization.scale).tolist()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
