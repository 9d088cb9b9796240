"""Callbacks that steer quantization inside `fit`: precision schedules and direct level updates."""
from kquant.callbacks.direct_levels import DirectLevelsUpdate, initialize_levels
from kquant.callbacks.progressive import ProgressiveBitWidth, TwoStageQuantization
from kquant.callbacks.stochastic_precision import StochasticPrecision

__all__ = ["DirectLevelsUpdate", "ProgressiveBitWidth", "StochasticPrecision",
           "TwoStageQuantization", "initialize_levels"]
