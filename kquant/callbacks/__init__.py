"""Techniques that steer precision inside `fit`: progressive and stochastic precision."""
from kquant.callbacks.progressive import ProgressiveBitWidth, TwoStageQuantization
from kquant.callbacks.stochastic_precision import StochasticPrecision

__all__ = ["ProgressiveBitWidth", "StochasticPrecision", "TwoStageQuantization"]
