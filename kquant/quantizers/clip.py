"""DoReFa's activation quantizer: a fixed clip to [0, 1] (Recipe name "clip")."""
from kquant.quantizers.base import ActivationQuantizer
from kquant.serialization import serializable


@serializable("clip")
class ClippedActivationQuantizer(ActivationQuantizer):
    """Activations clipped to [0, 1] and rounded to 2^k levels, replacing ReLU.

    Forward: a_q = round(n * clip(a, 0, 1)) / n with n = 2^k - 1.
    Backward: 1 for a in [0, 1], 0 outside (straight-through).
    Switched off: clip(a, 0, 1), full precision on the same range.

    Paper: Zhou, Wu, Ni, Zhou, Wen, Zou, "DoReFa-Net: Training Low Bitwidth Convolutional
    Neural Networks with Low Bitwidth Gradients", arXiv 1606.06160. kquant's choice: the
    rounding is an 8-bit FakeQuant whose step is 1/n, so the TFLite model holds the levels.

    Args:
        bits: bit-width k, 1 to 8.
    """

    fixed_clip = 1.0
