"""Benchmark: kquant against float, TF-MOT 8-bit, QKeras and Larq, on one data set and budget.

Every (method, bits) run starts from the same float checkpoint, trains the same epochs with the
same schedule, and appends one JSON record to the results file as soon as it finishes. Runs
already in the file are skipped, so the suite resumes where it stopped.

    python benchmarks/run.py --suite=cifar10-resnet20 --methods=kquant-dorefa --bits=4,2
    python benchmarks/run.py --suite=mnist-cnn             # the quick suite, float trained here
    python benchmarks/report.py                              # -> docs/benchmarks.md and PNG
"""
import dataclasses
import datetime
import json
import math
import os
import platform
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kquant  # noqa: E402  (selects Keras 2 before TensorFlow loads)
import tflite_export  # noqa: E402
from benchmarks.measure import StepTimer, tflite_latency  # noqa: E402
from benchmarks.methods import METHODS, method  # noqa: E402
from kquant.backend import keras  # noqa: E402

SUITES = {
    "cifar10-resnet20": dict(dataset="cifar10", model="resnet20", batch_size=128,
                             learning_rate=0.01, epochs=4,
                             checkpoint="benchmarks/checkpoints/resnet20_cifar10_float.h5",
                             trainer="benchmarks/train_float_resnet20.sh"),
    "cifar10-mobilenetv2": dict(dataset="cifar10", model="mobilenet_v2", batch_size=128,
                                learning_rate=0.01, epochs=4,
                                checkpoint="benchmarks/checkpoints/mobilenet_v2_cifar10_float.h5",
                                trainer="benchmarks/train_float_mobilenet_v2.sh"),
    "mnist-cnn": dict(dataset="mnist", model="small_cnn", batch_size=128, learning_rate=0.02,
                      epochs=2, float_epochs=2, checkpoint=None),
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("suite", "mnist-cnn", list(SUITES), "Which suite.")
flags.DEFINE_list("methods", list(METHODS), f"Methods, from {list(METHODS)}, or kquant "
                  "techniques joined with '+' (two-stage, progressive-bits, stochastic-precision, "
                  "joint-distillation).")
flags.DEFINE_list("bits", ["4", "2"], "Bit-widths (weights = activations) for low-bit methods.")
flags.DEFINE_integer("epochs", 0, "QAT epochs (0: the suite's default).")
flags.DEFINE_integer("limit", 0, "Use only this many examples per split (0: all).")
flags.DEFINE_integer("float_epochs", 0, "Epochs of the float model of suites that train it here "
                     "(0: the suite's default).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("results", "", "JSON-lines file (default benchmarks/results/<suite>.jsonl).")


def _commit():
    """The git commit the benchmark code ran at (None outside a checkout)."""
    import subprocess

    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _versions():
    import importlib.metadata as md

    names = ["tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
             "QKeras", "larq"]
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def _done(path):
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {(r["method"], r["weight_bits"], r["activation_bits"], r["epochs"], r["seed"])
                for r in map(json.loads, filter(str.strip, f))}


def _append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    print("RECORD " + json.dumps(record))


def _train(model, data, suite, epochs, techniques=(), float_model=None, extra_students=()):
    """Trains with the suite's schedule; returns (test top-1 of `model`, training images/s)."""
    steps = math.ceil(data.train_size / suite["batch_size"])
    trainable, callbacks = kquant.techniques.prepare(
        model, list(techniques), epochs, steps, suite["learning_rate"], float_model,
        extra_students, seed=FLAGS.seed)
    timer = StepTimer(suite["batch_size"])
    trainable.fit(data.train, epochs=epochs, callbacks=callbacks + [timer], verbose=2)
    kquant.compile_classifier(model)
    return float(model.evaluate(data.test, verbose=0)[1]), timer.images_per_second


def _float_model(suite, data):
    """The float starting point: the committed checkpoint, or trained here for quick suites."""
    if suite["checkpoint"]:
        path = os.path.join(ROOT, suite["checkpoint"])
        if not os.path.exists(path):
            raise FileNotFoundError(f"Suite {FLAGS.suite}: no float checkpoint at {path}; make it "
                                    f"with `bash {suite['trainer']}`.")
        return keras.models.load_model(path, compile=False)
    keras.utils.set_random_seed(FLAGS.seed)
    model = kquant.models.build_model(suite["model"], data.input_shape, data.num_classes)
    _train(model, data, {**suite, "learning_rate": 0.05}, FLAGS.float_epochs or suite["float_epochs"])
    return model


def _clone(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def main(argv):
    del argv
    suite = SUITES[FLAGS.suite]
    epochs = FLAGS.epochs or suite["epochs"]
    results = FLAGS.results or os.path.join(ROOT, "benchmarks", "results", f"{FLAGS.suite}.jsonl")
    os.makedirs(os.path.dirname(results), exist_ok=True)
    data = kquant.load_dataset(suite["dataset"], suite["batch_size"], seed=FLAGS.seed,
                               limit=FLAGS.limit or None)
    float_model = _float_model(suite, data)
    kquant.compile_classifier(float_model)
    float_top1 = float(float_model.evaluate(data.test, verbose=0)[1])

    def float_speed():
        """Float training images/s now, on a copy: the reference of each run's ratio."""
        sample = dataclasses.replace(data, train=data.train.take(60))
        return _train(_clone(float_model), sample, suite, 1)[1]

    float_tflite = tflite_export.convert_float(float_model)
    float_latency = {t: tflite_latency(float_tflite, data.input_shape, t) for t in (1, 2)}
    representative = data.train.take(2)
    done = _done(results)
    command = "python " + " ".join(sys.argv)
    common = dict(suite=FLAGS.suite, dataset=suite["dataset"], model=suite["model"], seed=FLAGS.seed,
                  float_top1=round(float_top1, 4), float_tflite_bytes=len(float_tflite))
    provenance = dict(command=command, commit=_commit(), versions=_versions(),
                      python=platform.python_version(),
                      date=datetime.date.today().isoformat())
    if ("float", 32, 32, 0, FLAGS.seed) not in done:
        float_report = tflite_export.verify(float_tflite, float_model, data.test)
        _append(results, {**common, "method": "float", "weight_bits": 32, "activation_bits": 32,
                          "epochs": 0, "keras_top1": round(float_top1, 4), "tflite_top1": round(
                              float_report.tflite_accuracy, 4), "tflite_bytes": len(float_tflite),
                          "train_throughput_ratio": 1.0, "latency_ratio_1thread": 1.0,
                          "latency_ratio_2threads": 1.0,
                          "note": "float TFLite (not integer); epochs 0: the starting checkpoint",
                          **provenance})
    for name in FLAGS.methods:
        chosen = method(name)
        for bits in ([8] if name == "tfmot-8bit" else [int(b) for b in FLAGS.bits]):
            if (name, bits, bits, epochs, FLAGS.seed) in done:
                print(f"skip {name} W{bits}A{bits}: already in {results}")
                continue
            keras.utils.set_random_seed(FLAGS.seed)
            record = dict(common, method=name, weight_bits=bits, activation_bits=bits,
                          epochs=epochs, note=chosen.note)
            try:
                model = chosen.build(_clone(float_model), bits, bits)
            except ImportError as error:
                print(f"skip {name}: {error}")
                continue
            extra = ([chosen.build(_clone(float_model), 6 - bits, 6 - bits)]
                     if "joint-distillation" in chosen.techniques else [])
            if chosen.calibrate:
                for student in [model, *extra]:
                    kquant.calibrate_ranges(student, float_model, data.train.take(4))
            reference_speed = float_speed()  # just before, so both see the same machine load
            keras_top1, speed = _train(model, data, suite, epochs, chosen.techniques,
                                       float_model, extra)
            record.update(keras_top1=round(keras_top1, 4),
                          train_throughput_ratio=round(speed / reference_speed, 3), tflite_top1=None,
                          tflite_bytes=None, agreement=None, latency_ratio_1thread=None,
                          latency_ratio_2threads=None)
            if chosen.export is not None:
                tflite = chosen.export(model, representative)
                report = tflite_export.verify(tflite, model, data.test)
                record.update(tflite_top1=round(report.tflite_accuracy, 4),
                              agreement=round(report.agreement, 4), tflite_bytes=len(tflite),
                              **{f"latency_ratio_{t}thread{'s' if t > 1 else ''}": round(
                                  tflite_latency(tflite, data.input_shape, t) / float_latency[t], 3)
                                 for t in (1, 2)})
            _append(results, {**record, **provenance})


if __name__ == "__main__":
    app.run(main)
