"""Which quantizer, at which bits, for weights and activations; first/last and per-layer overrides."""
import dataclasses
import numbers
from typing import Callable, Dict, Mapping, Optional, Union

from kquant import quantizers  # noqa: F401  (registers every quantizer by its Recipe name)
from kquant.quantizers.base import ActivationQuantizer, LowBitWeightQuantizer, check_bits
from kquant.serialization import recipe_names


def weight_quantizers() -> Dict[str, Callable]:
    """{Recipe name: class} of every registered weight quantizer."""
    return recipe_names(LowBitWeightQuantizer)


def activation_quantizers() -> Dict[str, Callable]:
    """{Recipe name: class} of every registered activation quantizer."""
    return recipe_names(ActivationQuantizer)


_OVERRIDE_KEYS = ("weight_bits", "activation_bits")


@dataclasses.dataclass
class Recipe:
    """What to quantize, how, and at which bit-widths.

    Args:
        weight_bits: bits of conv, depthwise and dense kernels, 1 to 8.
        activation_bits: bits of the activations that replace ReLU/ReLU6, 1 to 8.
        weight_quantizer: a name from `weight_quantizers()` ("dorefa"; "direct-levels" for
            learnable levels; "lsq" for a learned step), or a callable `bits -> Quantizer`.
        activation_quantizer: a name from `activation_quantizers()` ("clip" for DoReFa's fixed
            [0, 1] range, "pact" for a learnable clip, "channel-aware" for a clip fit to the
            mean per-channel error, "lsq" for a learned step, "lsq+" for a learned step and
            an offset below zero in place of the ReLU), or a callable `bits -> Quantizer`.
        per_channel: weight statistics (or levels) per output channel instead of per layer.
        first_last_bits: weight bits of the first conv and the last dense (or conv) layer, as
            the low-bit papers keep them; None quantizes them like the rest. A weight
            quantizer of one fixed bit-width (ternary) leaves these layers to DoReFa's grid.
        fold_batch_norm: fold each batch norm into the conv before it while training
            (`kquant.folding`), so the weight quantizer sees the kernel TFLite deploys.
        freeze_batch_norm_after: with `fold_batch_norm`, the training steps after which the
            folded layers use their moving statistics instead of the batch's; None never
            freezes them.
        overrides: per-layer settings, keyed by layer name or layer class, each a dict with
            "weight_bits" and/or "activation_bits". Names win over classes, and both win over
            `first_last_bits`.

    Raises:
        ValueError: for bits outside 1 to 8, unknown quantizer names or override keys.
    """

    weight_bits: int = 4
    activation_bits: int = 4
    weight_quantizer: Union[str, Callable] = "dorefa"
    activation_quantizer: Union[str, Callable] = "clip"
    per_channel: bool = False
    first_last_bits: Optional[int] = 8
    fold_batch_norm: bool = False
    freeze_batch_norm_after: Optional[int] = None
    overrides: Mapping[Union[str, type], Mapping[str, int]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.weight_bits = check_bits(self.weight_bits, "Recipe", "weight_bits")
        self.activation_bits = check_bits(self.activation_bits, "Recipe", "activation_bits")
        if self.first_last_bits is not None:
            self.first_last_bits = check_bits(self.first_last_bits, "Recipe", "first_last_bits")
        for kind, value, known in (("weight_quantizer", self.weight_quantizer, weight_quantizers()),
                                   ("activation_quantizer", self.activation_quantizer,
                                    activation_quantizers())):
            if isinstance(value, str) and value not in known:
                raise ValueError(f"Recipe: {kind} must be one of {sorted(known)} or a callable "
                                 f"bits -> Quantizer, got {value!r}.")
        fixed = getattr(weight_quantizers().get(self.weight_quantizer), "fixed_bits", None)
        if fixed is not None and self.weight_bits != fixed:
            raise ValueError(f"Recipe: weight_quantizer {self.weight_quantizer!r} has {fixed} "
                             f"bits only; weight_bits must be {fixed}, got {self.weight_bits}.")
        if self.freeze_batch_norm_after is not None and (
                not isinstance(self.freeze_batch_norm_after, numbers.Integral) or
                isinstance(self.freeze_batch_norm_after, bool) or
                self.freeze_batch_norm_after < 0 or not self.fold_batch_norm):
            raise ValueError("Recipe: freeze_batch_norm_after must be None or an integer >= 0 "
                             "(training steps), and needs fold_batch_norm=True; got "
                             f"{self.freeze_batch_norm_after!r} with fold_batch_norm="
                             f"{self.fold_batch_norm!r}.")
        for key, settings in self.overrides.items():
            unknown = set(settings) - set(_OVERRIDE_KEYS)
            if unknown:
                raise ValueError(f"Recipe: override for {key!r} has unknown keys {sorted(unknown)}; "
                                 f"allowed: {list(_OVERRIDE_KEYS)}.")
            for name, bits in settings.items():
                check_bits(bits, f"Recipe override for {key!r}", name)

    def bits_for(self, layer, kind, first_or_last=False):
        """Returns the `kind` ("weight_bits" or "activation_bits") of a layer."""
        bits = getattr(self, kind)
        if first_or_last and kind == "weight_bits" and self.first_last_bits is not None:
            bits = self.first_last_bits
        for key in (type(layer), layer.name):
            bits = self.overrides.get(key, {}).get(kind, bits)
        return bits

    def weight_quantizer_for(self, layer, first_or_last=False):
        """Returns a new weight quantizer for a layer."""
        bits = self.bits_for(layer, "weight_bits", first_or_last)
        if isinstance(self.weight_quantizer, str):
            chosen = weight_quantizers()[self.weight_quantizer]
            if first_or_last and chosen.fixed_bits not in (None, bits):
                chosen = weight_quantizers()["dorefa"]
            return chosen(bits, per_channel=self.per_channel)
        return self.weight_quantizer(bits)

    def activation_quantizer_for(self, layer):
        """Returns a new activation quantizer for an activation layer."""
        bits = self.bits_for(layer, "activation_bits")
        factory = self.activation_quantizer
        return (activation_quantizers()[factory] if isinstance(factory, str) else factory)(bits)
