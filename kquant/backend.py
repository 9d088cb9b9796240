"""Selects Keras 2 (tf_keras) for TensorFlow: the one place kquant imports Keras and TF-MOT.

TF-MOT only works with Keras 2, and TensorFlow picks its Keras when `tf.keras` is first
touched, so the choice must be made before that. Every other kquant module imports
`keras`, `tf` and `tfmot` from here.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from kquant.quiet import captured_stderr  # noqa: E402

with captured_stderr():  # TensorFlow's load-time INFO lines (oneDNN, CUDA probe) stay quiet
    import tensorflow as tf  # noqa: E402  (must follow the environment variable)

    # The CUDA probe runs when devices are first listed, not at import; listing them here (it
    # creates no device, so tf.config stays settable) keeps its "failed call to cuInit" error
    # on a machine without a GPU off the screen.
    tf.config.list_physical_devices()

    if not tf.keras.__name__.startswith("tf_keras"):
        raise ImportError(
            "kquant needs Keras 2 (tf_keras), but TensorFlow has already bound tf.keras to Keras "
            f"3 ({tf.keras.__name__}). Import kquant before anything touches tf.keras, or set "
            "TF_USE_LEGACY_KERAS=1 in the environment before starting Python."
        )

    import tf_keras as keras  # noqa: E402
    import tensorflow_model_optimization as tfmot  # noqa: E402
    # TF-MOT internals kquant builds its scheme from (not in TF-MOT's public API).
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402,E501
        default_8bit_transforms)
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (  # noqa: E402,E501
        model_transformer)
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (  # noqa: E402,E501
        QuantizeLayer)

__all__ = ["QuantizeLayer", "default_8bit_transforms", "keras", "model_transformer", "tf", "tfmot"]
