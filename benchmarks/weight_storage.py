"""File size and batch-1 latency of packed INT4/INT2 weights against int8 weights and float, in
one process, on LiteRT with XNNPACK and on its built-in kernels.

Size and speed depend on the architecture and on which grids pack, not on how long the model
trained; each method trains `--train_steps` steps from the suite's float checkpoint (so its
grids, ranges and accuracy are those of a model in training) and is exported with every
`--storages`. Per storage the record holds the file's bytes and its ratio to float TFLite,
the layers packed, latency against the int8 file and the float file on both runtime paths,
TFLite top-1 on `--test_examples` test images, how often its outputs equal the int8 file's on
each path (packing rounds the bias at a coarser scale, `kquant.deploy.storage`; XNNPACK also
hands packed convolutions to the built-in kernels), and the agreement with kquant's
integer-exact mode. One JSON record per method, bits and storage.

    python benchmarks/weight_storage.py --suite=cifar10-resnet20 --methods=lsq,kquant-pact-calibrated
"""
import collections
import datetime
import os
import sys

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kquant  # noqa: E402  (selects Keras 2 before TensorFlow loads)
import tflite_export  # noqa: E402
from benchmarks import run, suites  # noqa: E402  (run: its flags suite, methods, bits, seed, results)
from benchmarks.measure import tflite_latency  # noqa: E402
from benchmarks.methods import method  # noqa: E402
from kquant.backend import keras  # noqa: E402
from kquant.batches import first_examples  # noqa: E402
from kquant.deploy import integer_outputs  # noqa: E402
from kquant.deploy.integer_model import int8_input  # noqa: E402
from kquant.deploy.lowering import lower  # noqa: E402
from tflite_export.runtime import int8_outputs  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_steps", 200, "Training steps per method before export.")
flags.DEFINE_list("storages", ["int8", "auto", "int2"], "Weight storages to export "
                  f"({list(kquant.deploy.WEIGHT_STORAGES)}); one that a method's grid cannot "
                  "take is recorded with the reason.")
flags.DEFINE_integer("test_examples", 2000, "Test images for top-1 and output agreement.")

RESULTS_FILE = "weight-storage.jsonl"
RUNTIME_PATHS = ("xnnpack", "builtin")


def main(argv):
    del argv
    suite = suites.SUITES[FLAGS.suite]
    data = kquant.load_dataset(suite["dataset"], suite["batch_size"], seed=FLAGS.seed,
                               limit=FLAGS.limit or None)
    float_model = suites.float_model(FLAGS.suite, data, FLAGS.seed, FLAGS.float_epochs)
    images, labels = first_examples(data.test, float_model.input_shape, FLAGS.test_examples,
                                    "weight_storage")
    float_tflite = tflite_export.convert_float(float_model)
    float_latency = {r: tflite_latency(float_tflite, data.input_shape, 1, runtime=r)
                     for r in RUNTIME_PATHS}
    representative = data.train.unbatch().batch(1).take(200)
    results = FLAGS.results or os.path.join(ROOT, "benchmarks", "results", RESULTS_FILE)
    provenance = dict(command="python " + " ".join(sys.argv), commit=suites.commit(),
                      date=datetime.date.today().isoformat())
    for name in FLAGS.methods:
        chosen = method(name)
        for weight_bits, activation_bits in run.bit_pairs(FLAGS.bits):
            keras.utils.set_random_seed(FLAGS.seed)
            model = chosen.quantized(float_model, weight_bits, activation_bits, data.train,
                                     FLAGS.train_steps)
            training = suites.prepare(model, suite, 1, FLAGS.train_steps, chosen.techniques,
                                      float_model, seed=FLAGS.seed, data=data.train)
            training.model.fit(data.train.take(FLAGS.train_steps), epochs=1,
                               callbacks=training.callbacks, verbose=2)
            int8_images = int8_input(model, lower(model).input_quant, images).numpy()
            baseline = None
            for storage in FLAGS.storages:
                record = dict(suite=FLAGS.suite, model=suite["model"], method=name,
                              weight_bits=weight_bits, activation_bits=activation_bits,
                              weight_storage=storage, train_steps=FLAGS.train_steps,
                              float_tflite_bytes=len(float_tflite))
                try:
                    blob = tflite_export.convert(model, representative, weight_storage=storage)
                except ValueError as error:  # this grid does not fit: say why
                    run._append(results, {**record, "unavailable": str(error), **provenance})
                    continue
                outputs = {r: int8_outputs(blob, int8_images, r) for r in RUNTIME_PATHS}
                summary = tflite_export.inspect(blob)
                latency = {r: tflite_latency(blob, data.input_shape, 1, runtime=r)
                           for r in RUNTIME_PATHS}
                if baseline is None:
                    baseline = dict(outputs=outputs, latency=latency)
                exact = integer_outputs(model, int8_images, "xnnpack", int8_images=True,
                                        weight_storage=storage)
                record.update(
                    tflite_bytes=len(blob), size_ratio=round(len(float_tflite) / len(blob), 3),
                    layers_stored=dict(collections.Counter(summary.weight_storage.values())),
                    xnnpack_partitions=summary.xnnpack_partitions,
                    tflite_top1=round(float((np.argmax(outputs["xnnpack"], 1) == labels).mean()), 4),
                    agreement_exact_xnnpack=round(float(np.all(
                        outputs["xnnpack"] == exact, axis=1).mean()), 4))
                # Per runtime path: on the built-in kernels both files run the same kernels,
                # so what differs is the storage alone; on XNNPACK, packed convolutions also
                # move to the built-in kernels' rounding.
                for r in RUNTIME_PATHS:
                    mine, theirs = outputs[r], baseline["outputs"][r]
                    record.update({
                        f"outputs_identical_to_int8_{r}": round(float(np.all(
                            mine == theirs, axis=1).mean()), 4),
                        f"top1_agreement_with_int8_{r}": round(float(
                            (np.argmax(mine, 1) == np.argmax(theirs, 1)).mean()), 4),
                        f"latency_ms_{r}": round(1000 * latency[r], 3),
                        f"latency_vs_int8_{r}": round(latency[r] / baseline["latency"][r], 3),
                        f"latency_vs_float_{r}": round(latency[r] / float_latency[r], 3)})
                run._append(results, {**record, **provenance})


if __name__ == "__main__":
    app.run(main)
