"""Export kquant models to fully integer TFLite, inspect them, and verify them against Keras."""
import kquant.backend  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from tflite_export.convert import convert, convert_float, int8_converter, representative_examples
from tflite_export.inspect import TFLiteSummary, inspect
from tflite_export.runtime import interpreter_class, make_interpreter
from tflite_export.verify import VerificationReport, exact_agreement, verify

__all__ = ["TFLiteSummary", "VerificationReport", "convert", "convert_float", "exact_agreement",
           "inspect", "int8_converter", "interpreter_class", "make_interpreter",
           "representative_examples", "verify"]
