"""The TFLite interpreters: LiteRT (with XNNPACK or its built-in kernels) and TFLite Micro.

LiteRT first, then the old tflite_runtime wheel, then TensorFlow's; TFLite Micro from the
`tflite-micro` package (pip install "kquant[micro]").
"""
import os
import warnings

import numpy as np

from kquant.quiet import captured_stderr

RUNTIMES = ("xnnpack", "builtin", "micro")
MICRO_ARENA_BYTES = 4 << 20


def model_bytes(model, caller):
    """The flatbuffer of a TFLite model given as bytes or as the path of a .tflite file.

    Args:
        model: bytes (e.g. from `tflite_export.convert`), or a str or path-like to read.
        caller: the public function asking, for the error messages.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for anything that is not a TFLite flatbuffer (its identifier, bytes 4 to
            8, must be "TFL3").
    """
    if isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            raise FileNotFoundError(f"{caller}: no TFLite file at {os.fspath(model)!r}.")
        with open(model, "rb") as f:
            model = f.read()
    if not isinstance(model, (bytes, bytearray)) or bytes(model[4:8]) != b"TFL3":
        shown = (f"{len(model)} bytes starting {bytes(model[:8])!r}"
                 if isinstance(model, (bytes, bytearray)) else f"a {type(model).__name__}")
        raise ValueError(f"{caller}: the model must be a TFLite flatbuffer (bytes from "
                         f"tflite_export.convert, or the path of a .tflite file); got {shown}, "
                         "without TFLite's 'TFL3' identifier.")
    return bytes(model)


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


def make_interpreter(tflite_bytes, num_threads=1, keep_all_tensors=False, runtime="xnnpack"):
    """Returns an allocated LiteRT interpreter for a TFLite flatbuffer.

    Args:
        tflite_bytes: the model.
        num_threads: CPU threads.
        keep_all_tensors: keep intermediate tensors readable after `invoke` (for inspection;
            XNNPACK then runs each op as a partition of its own, with the same arithmetic).
        runtime: "xnnpack" (the default delegate) or "builtin" (LiteRT's built-in kernels).
    """
    options = {}
    if runtime == "builtin":
        from ai_edge_litert.interpreter import OpResolverType

        options["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    # LiteRT warns that kept tensors are "for debugging" and prints a line per delegate.
    with warnings.catch_warnings(), captured_stderr():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        interpreter = interpreter_class()(model_content=tflite_bytes, num_threads=num_threads,
                                          experimental_preserve_all_tensors=keep_all_tensors,
                                          **options)
        interpreter.allocate_tensors()
    return interpreter


def _litert(tflite_bytes, runtime):
    interpreter = make_interpreter(tflite_bytes, runtime=runtime)
    index_in = interpreter.get_input_details()[0]["index"]
    index_out = interpreter.get_output_details()[0]["index"]

    def run(image):
        interpreter.set_tensor(index_in, image)
        interpreter.invoke()
        return interpreter.get_tensor(index_out)

    return run


def _micro(tflite_bytes, arena_bytes):
    try:
        from tflite_micro.python.tflite_micro import runtime as micro_runtime
    except ImportError as error:
        raise ImportError('runtime "micro" needs the tflite-micro package (pip install '
                          '"kquant[micro]" or pip install tflite-micro).') from error
    try:
        with captured_stderr(replay_on_error=False):  # the ValueError below says it all
            interpreter = micro_runtime.Interpreter.from_bytes(tflite_bytes,
                                                               arena_size=arena_bytes)
    except RuntimeError as error:
        raise ValueError(f"TFLite Micro could not set the model up in a {arena_bytes}-byte "
                         "arena; tflite_export.runtime.micro_arena_bytes(tflite_bytes) gives the "
                         "size it needs.") from error

    def run(image):
        interpreter.set_input(image, 0)
        interpreter.invoke()
        return interpreter.get_output(0)

    return run


def int8_outputs(tflite_bytes, int8_images, runtime="xnnpack", micro_arena_bytes=MICRO_ARENA_BYTES):
    """Runs an int8-input TFLite model on each image and returns its int8 outputs.

    Args:
        tflite_bytes: the model (bytes, or the path of a .tflite file).
        int8_images: int8 array [examples, ...] (e.g. `kquant.deploy.integer_model.int8_input`).
        runtime: "xnnpack" (LiteRT with its default XNNPACK delegate), "builtin" (LiteRT's
            built-in kernels, no delegate) or "micro" (TFLite Micro's interpreter).
        micro_arena_bytes: the tensor arena TFLite Micro may use.

    Returns:
        The outputs, stacked, as int8.

    Raises:
        ValueError: for an unknown runtime.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"int8_outputs: runtime must be one of {list(RUNTIMES)}, got {runtime!r}.")
    tflite_bytes = model_bytes(tflite_bytes, "int8_outputs")
    run = (_micro(tflite_bytes, micro_arena_bytes) if runtime == "micro"
           else _litert(tflite_bytes, runtime))
    return np.stack([np.array(run(image[None]))[0] for image in np.asarray(int8_images, np.int8)])


def micro_arena_bytes(tflite_bytes, largest=MICRO_ARENA_BYTES * 16):
    """The smallest tensor arena TFLite Micro can run the model in, to 16 bytes (its
    alignment): the RAM a microcontroller must set aside for activations and scratch.

    Raises:
        ValueError: if even `largest` bytes are not enough, or for bytes that are not a
            TFLite model.
    """
    from tflite_micro.python.tflite_micro import runtime as micro_runtime

    tflite_bytes = model_bytes(tflite_bytes, "micro_arena_bytes")

    def fits(size):
        with captured_stderr():  # TFLM prints each failed allocation
            try:
                micro_runtime.Interpreter.from_bytes(tflite_bytes, arena_size=size)
            except RuntimeError:
                return False
        return True

    if not fits(largest):
        raise ValueError(f"micro_arena_bytes: the model does not fit in {largest} bytes.")
    low, high = 0, largest  # low does not fit, high fits
    while high - low > 16:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high
