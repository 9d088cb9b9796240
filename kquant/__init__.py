"""kquant: low-bitwidth quantization-aware training for Keras, exported as integer TFLite."""
from kquant import backend  # noqa: F401  (selects Keras 2 first)
from kquant import deploy, losses, models, precision, quantizers, techniques
from kquant.calibration import calibrate_ranges
from kquant.compile import compile_classifier, cosine_sgd
from kquant.data import load_dataset
from kquant.describe import describe, describe_layers
from kquant.numerics import StopOnNonFinite
from kquant.quantize import initialize_weight_quantizers, quantize_model
from kquant.recipe import Recipe
from kquant.serialization import custom_objects, load_model, quantize_scope
from kquant.summary import plot_grids, summary

__version__ = "0.1.0"

__all__ = ["Recipe", "StopOnNonFinite", "calibrate_ranges", "compile_classifier", "cosine_sgd",
           "custom_objects", "deploy", "describe", "describe_layers", "initialize_weight_quantizers",
           "load_dataset", "load_model", "losses", "models", "plot_grids", "precision",
           "quantize_model", "quantize_scope", "quantizers", "summary", "techniques"]
