"""Trains a tiny kquant model with a technique under a tf.distribute strategy and prints, as
JSON, the quantizer variables that differ between replicas (none should), and the final
quantizer state (for comparing workers).

    python tests/distributed/train_replicated.py mirrored two-stage pact
    TF_CONFIG=... python tests/distributed/train_replicated.py multi-worker joint-distillation pact

The last argument picks the quantizers: "pact" (PACT clips, DoReFa weights) or "learned"
(learnable levels with their after-step update, channel-aware clips updated in the forward).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

import kquant  # noqa: E402
from kquant.backend import keras, tf  # noqa: E402


def strategy_for(kind):
    if kind == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    return tf.distribute.MultiWorkerMirroredStrategy()


RECIPES = {"pact": dict(activation_quantizer="pact"),
           "learned": dict(weight_quantizer="direct-levels", activation_quantizer="channel-aware",
                           per_channel=True)}


def main(kind, technique, quantizers):
    strategy = strategy_for(kind)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((images, np.arange(64) % 10)).batch(16)
    from tests.conftest import tiny_cnn

    with strategy.scope():
        float_model = tiny_cnn()
        recipe = RECIPES[quantizers]

        def quantize(bits):
            return kquant.quantize_model(float_model, kquant.Recipe(bits, bits, **recipe))

        model = quantize(2)
        training = kquant.techniques.prepare(model, technique, kquant.techniques.Context(
            kquant.techniques.Schedule(4, 4, 0.02), float_model, data, quantize))
    history = training.model.fit(data, epochs=4, verbose=0, callbacks=training.callbacks)
    # Every variable kept in sync: weights and quantizer variables (bits, switches, levels,
    # clips). Batch-norm statistics and TF-MOT's 8-bit ranges are Keras' on-read variables:
    # each replica keeps its own, and reading one gives their mean.
    replicas = {variable.name: [np.asarray(v).tolist() for v in
                                strategy.experimental_local_results(variable)]
                for variable in training.model.variables
                if variable.synchronization != tf.VariableSynchronization.ON_READ}
    print("RESULT " + json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "differing": sorted(name for name, values in replicas.items()
                            if not all(np.array_equal(values[0], v) for v in values[1:])),
        "state": {name: values[0] for name, values in replicas.items()},
        "losses": {key: [float(v) for v in values] for key, values in history.history.items()
                   if key.endswith("loss")}}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
