"""Where weights are packed into 4- and 2-bit storage: which layers a TFLite file stores as
INT4 or INT2, and the integers it then holds.

kquant's int8 weight codes spread a b-bit grid over the int8 range (DoReFa's 2 bits:
42 x {-3, -1, 1, 3}) so that the int32 bias, rounded at input scale x weight scale, is fine.
Packed, a layer stores its codes divided by their common factor per output channel (the
factor moves into the weight scale) and its bias at the coarser scale, rounded again: a
packed model computes what an int8 model of those coarse codes computes, bit for bit, and
differs from the default int8 file only by that bias rounding.

LiteRT's built-in CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED kernels and TFLite Micro's
take INT4 filters; only LiteRT's FULLY_CONNECTED takes INT2; XNNPACK takes INT4 dense filters
only (measured with ai-edge-litert 2.3.0 and tflite-micro: tests/test_packing.py, and
`kquant.deploy.runtimes.XNNPACK.weight_kernels`).
"""
import dataclasses
from typing import Dict, Mapping

import numpy as np

from kquant.backend import keras
from kquant.quantizers.base import LowBitWeightQuantizer
from kquant.quantizers.model_states import quantize_wrappers

WEIGHT_STORAGES = ("int8", "int4", "int2", "auto")
RANGES = {"int4": (-8, 7), "int2": (-2, 1)}  # signed, zero point 0, as TFLite reads them
BITS = {"int8": 8, "int4": 4, "int2": 2}


@dataclasses.dataclass(frozen=True)
class LayerStorage:
    """How one layer's weights are stored: per output channel, the file holds the int8 codes
    divided by `divisors` and spread again by `multipliers` over the storage's range, with
    the weight scale and the bias changed by the same ratio (all 1 for int8).

    Attributes:
        storage: "int8", "int4" or "int2".
        divisors: per output channel, the common factor of its int8 codes.
        multipliers: per output channel, the largest integer the divided codes can be
            multiplied by and stay in the storage's range: a finer accumulator scale, so the
            bias rounds finer (2-bit DoReFa's {-3, -1, 1, 3} is stored as {-6, -2, 2, 6}).
    """

    storage: str
    divisors: np.ndarray
    multipliers: np.ndarray

    def _along(self, values, axis):
        shape = [1] * np.ndim(values)
        shape[axis] = -1
        count = np.shape(values)[axis]
        return (self.divisors[:count].reshape(shape), self.multipliers[:count].reshape(shape))

    def codes(self, int8_codes, axis=-1):
        """The integers the file stores for `int8_codes` (output channels along `axis`)."""
        divisors, multipliers = self._along(int8_codes, axis)
        return np.rint(int8_codes).astype(np.int64) // divisors * multipliers

    def scales(self, int8_scales):
        """The float32 weight scales of the stored codes: scale * divisor / multiplier, each
        step in float32 (one scale for a per-tensor layer)."""
        divisors, multipliers = self._along(np.asarray(int8_scales), 0)
        return ((np.asarray(int8_scales, np.float32) * divisors.astype(np.float32))
                / multipliers.astype(np.float32)).astype(np.float32)

    def bias(self, int8_bias):
        """The int32 bias at the stored codes' scale: bias * multiplier / divisor, rounded
        half away from zero (one value per output channel)."""
        divisors, multipliers = self._along(np.asarray(int8_bias), 0)
        scaled = 2 * np.abs(np.asarray(int8_bias, np.int64)) * multipliers
        return np.sign(int8_bias) * ((scaled + divisors) // (2 * divisors))


UNPACKED = LayerStorage("int8", np.ones(1, np.int64), np.ones(1, np.int64))  # any channels


def common_factors(codes, per_tensor):
    """The largest integer dividing every code of each output channel (last axis); one for
    the whole tensor when `per_tensor` (FULLY_CONNECTED has one weight scale). At least 1."""
    flat = np.abs(np.rint(codes)).astype(np.int64).reshape(-1, codes.shape[-1])
    factors = np.maximum(np.gcd.reduce(flat, axis=0), 1)
    if per_tensor:
        factors = np.full_like(factors, max(int(np.gcd.reduce(factors)), 1))
    return factors


def _multipliers(divided, storage, per_tensor):
    """Per channel, the largest integer m with m * `divided` (channels last) in the range."""
    low, high = RANGES[storage]
    flat = divided.reshape(-1, divided.shape[-1])
    top, bottom = np.maximum(flat.max(0), 1), np.maximum(-flat.min(0), 1)
    multipliers = np.maximum(np.minimum(high // top, -low // bottom), 1)
    return np.full_like(multipliers, multipliers.min()) if per_tensor else multipliers


def _fits(stored, storage):
    low, high = RANGES[storage]
    return low <= stored.min() and stored.max() <= high


def _choose(layer, dense, bits, stored, weight_storage, caller):
    """The storage of one layer with `bits`-bit weights and coarse codes `stored`."""
    if not isinstance(weight_storage, str):  # as a file stores it
        return weight_storage.get(layer, "int8")
    candidates = [s for s in ("int2", "int4") if _fits(stored, s) and (s == "int4" or dense)]
    if weight_storage == "auto":
        return "int4" if "int4" in candidates else "int8"
    wanted = [s for s in ("int2", "int4")
              if bits <= BITS[s] and BITS[s] >= BITS[weight_storage] and (s == "int4" or dense)]
    if not wanted:
        return "int8"
    if wanted[0] not in candidates:
        low, high = RANGES[wanted[0]]
        raise ValueError(
            f"{caller}: weight_storage={weight_storage!r}: layer {layer!r} has {bits}-bit weights whose "
            f"codes span {int(stored.min())}..{int(stored.max())} steps, which "
            f"{wanted[0].upper()} ([{low}, {high}], no offset) cannot hold; use "
            "weight_storage='auto' (keeps such layers int8) or a weight quantizer with at "
            "most 2^(bits-1) levels on each side and a zero level (e.g. 'lsq').")
    return wanted[0]


def layer_storage(layer, kernel_layer, bits, codes, weight_storage, caller="convert"):
    """The `LayerStorage` of one weight layer.

    Args:
        layer: its name (for errors and per-layer mappings).
        kernel_layer: the Keras layer (a Dense layer is FULLY_CONNECTED: one scale, INT2 too).
        bits: its weight quantizer's deployed bits.
        codes: its int8 codes, output channel last.
        weight_storage: "int8", "int4" (every layer of at most 4 bits), "int2" (also dense
            layers of at most 2 bits as INT2; LiteRT only) or "auto" (INT4 wherever the grid
            fits, else int8); or {layer: storage} as a file holds them.
        caller: the public function named in errors.
    """
    dense = isinstance(kernel_layer, keras.layers.Dense)
    divisors = common_factors(codes, per_tensor=dense)
    divided = np.rint(codes).astype(np.int64) // divisors
    storage = _choose(layer, dense, bits, divided, weight_storage, caller)
    if storage == "int8":
        return UNPACKED
    return LayerStorage(storage, divisors, _multipliers(divided, storage, dense))


def _check_weight_storage(weight_storage, caller):
    """Raises ValueError in kquant's words unless `weight_storage` is a known name or a
    mapping of layer names to "int8", "int4" or "int2"."""
    if isinstance(weight_storage, str) and weight_storage in WEIGHT_STORAGES:
        return
    if isinstance(weight_storage, Mapping) and set(weight_storage.values()) <= set(BITS):
        return
    raise ValueError(f"{caller}: weight_storage must be one of {list(WEIGHT_STORAGES)}, got "
                     f"{weight_storage!r}.")


def plan(model, weight_storage, caller="convert") -> Dict[str, LayerStorage]:
    """{layer name: `LayerStorage`} for every kquant-quantized weight layer (`caller`, the
    public function named in errors, checks `weight_storage` first).

    Raises:
        ValueError: for an unknown `weight_storage`, or a layer whose grid cannot be stored
            as asked (named, with what would).
    """
    _check_weight_storage(weight_storage, caller)
    storages = {}
    for wrapper in quantize_wrappers(model):
        for kernel, quantizer, variables in wrapper._weight_vars:  # pylint: disable=protected-access
            if not isinstance(quantizer, LowBitWeightQuantizer):  # a peer's model: int8 as is
                continue
            if weight_storage == "int8":  # nothing to divide: the codes need not be computed
                storages[wrapper.layer.name] = UNPACKED
                continue
            codes, _ = quantizer.codes_and_step(quantizer.fold(kernel), variables)
            storages[wrapper.layer.name] = layer_storage(
                wrapper.layer.name, wrapper.layer, quantizer.deploy_bits, codes.numpy(),
                weight_storage, caller)
    return storages


def pack(codes, storage):
    """Stored codes (any shape, row-major) as TFLite's packed bytes: 2 (INT4) or 4 (INT2)
    values per byte, the first in the lowest bits; the last byte padded with zeros."""
    bits = BITS[storage]
    per_byte = 8 // bits
    flat = np.asarray(codes, np.int64).reshape(-1) & ((1 << bits) - 1)
    flat = np.concatenate([flat, np.zeros(-len(flat) % per_byte, np.int64)])
    groups = flat.reshape(-1, per_byte)
    return sum(groups[:, i] << (bits * i) for i in range(per_byte)).astype(np.uint8)


def unpack(data, storage, count):
    """`pack`'s inverse: the first `count` signed values of packed bytes, as int8."""
    bits = BITS[storage]
    values = np.asarray(data, np.uint8).astype(np.int64)
    fields = np.stack([(values >> (bits * i)) & ((1 << bits) - 1)
                       for i in range(8 // bits)], axis=1).reshape(-1)[:count]
    return np.where(fields >= 1 << (bits - 1), fields - (1 << bits), fields).astype(np.int8)

