"""How one tensor is quantized: the protocol in `base`, one module per quantizer, low-bit
rounding in `rounding`, the TFLite int8 weight grid in `int8_grid`, and the walk over a
model's quantizers in `model_states`."""
from kquant.quantizers.base import (ActivationGrid, ActivationQuantizer, LowBitQuantizer,
                                    LowBitWeightQuantizer, export_mode)
from kquant.quantizers.channel_aware import ChannelAwareActivationQuantizer, fit_clip
from kquant.quantizers.clip import ClippedActivationQuantizer
from kquant.quantizers.direct_levels import DirectLevelsUpdate, DirectLevelsWeightQuantizer
from kquant.quantizers.dorefa import DoReFaWeightQuantizer
from kquant.quantizers.learned_range import LearnedRangeActivationQuantizer
from kquant.quantizers.lsq import LSQActivationQuantizer, LSQWeightQuantizer
from kquant.quantizers.lsq_plus import LSQPlusActivationQuantizer
from kquant.quantizers.model_states import QuantizerState, quantizer_states, training_callbacks
from kquant.quantizers.pact import PACTQuantizer
from kquant.quantizers.signed import SignActivationQuantizer
from kquant.quantizers.sparse import SparseActivationQuantizer
from kquant.quantizers.ternary import TernaryWeightQuantizer

__all__ = ["ActivationGrid", "ActivationQuantizer", "ChannelAwareActivationQuantizer",
           "ClippedActivationQuantizer", "DirectLevelsUpdate", "DirectLevelsWeightQuantizer",
           "DoReFaWeightQuantizer", "LSQActivationQuantizer", "LSQPlusActivationQuantizer",
           "LSQWeightQuantizer",
           "LearnedRangeActivationQuantizer", "LowBitQuantizer", "LowBitWeightQuantizer",
           "PACTQuantizer",
           "QuantizerState", "SignActivationQuantizer", "SparseActivationQuantizer",
           "TernaryWeightQuantizer", "export_mode", "fit_clip", "quantizer_states",
           "training_callbacks"]
