"""The TFLite interpreter: LiteRT first, then the old tflite_runtime wheel, then TensorFlow's."""
import warnings


def interpreter_class():
    """Returns the best available TFLite `Interpreter` class.

    ai-edge-litert (LiteRT) is the on-device runtime; `tflite_runtime` stops at TF 2.14 and
    numpy<2; `tf.lite.Interpreter` is always there but deprecated.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            from kquant.backend import tf

            Interpreter = tf.lite.Interpreter
    return Interpreter


def make_interpreter(tflite_bytes, num_threads=1, keep_all_tensors=False):
    """Returns an allocated interpreter for a TFLite flatbuffer.

    Args:
        tflite_bytes: the model.
        num_threads: CPU threads.
        keep_all_tensors: keep intermediate tensors readable after `invoke` (for inspection).
    """
    with warnings.catch_warnings():  # LiteRT warns that kept tensors are "for debugging"
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        interpreter = interpreter_class()(model_content=tflite_bytes, num_threads=num_threads,
                                          experimental_preserve_all_tensors=keep_all_tensors)
    interpreter.allocate_tensors()
    return interpreter
