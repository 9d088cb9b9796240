"""How one tensor is quantized: one module per quantizer family, STE primitives in `ste`."""
from kquant.quantizers.base import LowBitQuantizer, export_mode
from kquant.quantizers.dorefa import ClippedActivationQuantizer, DoReFaWeightQuantizer
from kquant.quantizers.pact import PACTQuantizer

__all__ = ["ClippedActivationQuantizer", "DoReFaWeightQuantizer", "LowBitQuantizer",
           "PACTQuantizer", "export_mode"]
