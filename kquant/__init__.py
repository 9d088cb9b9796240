"""kquant: low-bitwidth quantization-aware training for Keras, exported as integer TFLite."""
from kquant import backend  # noqa: F401  (selects Keras 2 first)
from kquant import models
from kquant.compile import compile_classifier
from kquant.data import load_dataset

__version__ = "0.1.0"
