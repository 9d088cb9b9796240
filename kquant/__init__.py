"""kquant: low-bitwidth quantization-aware training for Keras, exported as integer TFLite."""
from kquant import backend  # noqa: F401  (selects Keras 2 first)
from kquant import callbacks, models, precision, quantizers, techniques, training
from kquant.calibration import calibrate_ranges
from kquant.compile import compile_classifier, cosine_sgd
from kquant.data import load_dataset
from kquant.describe import describe
from kquant.quantize import custom_objects, quantize_model, quantize_scope
from kquant.recipe import Recipe

__version__ = "0.1.0"

__all__ = ["Recipe", "calibrate_ranges", "callbacks", "compile_classifier", "cosine_sgd", "custom_objects", "describe", "load_dataset", "models",
           "precision", "quantize_model", "quantize_scope", "quantizers", "techniques", "training"]
