"""How one tensor is quantized: one module per quantizer family, STE primitives in `ste`."""
from kquant.quantizers.base import LowBitQuantizer, LowBitWeightQuantizer, export_mode
from kquant.quantizers.channel_aware import ChannelAwareActivationQuantizer, fit_clip
from kquant.quantizers.direct_levels import DirectLevelsWeightQuantizer
from kquant.quantizers.dorefa import ClippedActivationQuantizer, DoReFaWeightQuantizer
from kquant.quantizers.pact import PACTQuantizer

__all__ = ["ChannelAwareActivationQuantizer", "ClippedActivationQuantizer",
           "DirectLevelsWeightQuantizer", "DoReFaWeightQuantizer", "LowBitQuantizer",
           "LowBitWeightQuantizer", "PACTQuantizer", "export_mode", "fit_clip"]
