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
import os
import platform
import re
import shutil
import sys

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kquant  # noqa: E402  (selects Keras 2 before TensorFlow loads)
import tflite_export  # noqa: E402
from benchmarks import suites  # noqa: E402
from benchmarks.measure import tflite_latency  # noqa: E402
from benchmarks.methods import METHODS, Unavailable, method  # noqa: E402
from kquant.backend import keras  # noqa: E402
from kquant.quiet import without_retracing_warnings  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("suite", "mnist-cnn", list(suites.SUITES), "Which suite.")
flags.DEFINE_list("methods", list(METHODS), f"Methods, from {list(METHODS)}, or kquant "
                  f"techniques {kquant.techniques.names()} joined with '+'.")
flags.DEFINE_list("bits", ["4", "2"], "Bit-widths of low-bit methods: N for WNAN, or WNAM "
                  "(e.g. W1A2) for other activation bits.")
flags.DEFINE_integer("epochs", 0, "QAT epochs (0: the suite's default).")
flags.DEFINE_integer("limit", 0, "Use only this many examples per split (0: all).")
flags.DEFINE_integer("float_epochs", 0, "Epochs of the float model of suites that train it here "
                     "(0: the suite's default).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("exact_examples", 0, "Test examples compared with the integer-exact "
                     "mode on LiteRT's built-in kernels and on TFLite Micro (0: the suite's "
                     "default, 10,000 unless the suite says otherwise).")
flags.DEFINE_string("results", "", "JSON-lines file (default benchmarks/results/<suite>.jsonl).")
flags.DEFINE_string("inexact_dir", "~/.cache/kquant/inexact", "Where a kquant row's trained "
                    "model is saved (.keras) when its int8 outputs differ from the integer-exact "
                    "mode on some runtime, to find the difference layer by layer; empty: never.")
flags.DEFINE_string("supersede", "", "Re-run rows already in the results, for this reason: each "
                    "new row carries it as `supersedes`, and once it lands the older rows of its "
                    "method, bits, epochs and seed are marked `superseded` with it (kept, left "
                    "out of the report); rows already re-run for the same reason are skipped.")
flags.DEFINE_string("backup_dir", "", "Back up each row's training after every epoch under this "
                    "folder (outside the work tree, e.g. ~/.cache/kquant/backups) and resume an "
                    "interrupted row from it; empty: no backup.")


def _versions():
    import importlib.metadata as md

    names = ["tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
             "QKeras", "larq", "model-compression-toolkit"]
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def bit_pairs(entries):
    """[(weight bits, activation bits)] from entries such as "4" (W4A4) and "W1A2".

    Raises:
        app.UsageError: for entries of neither form.
    """
    match = [re.fullmatch(r"(\d+)|[wW](\d+)[aA](\d+)", entry.strip()) for entry in entries]
    wrong = [entry for entry, m in zip(entries, match) if m is None]
    if wrong:
        raise app.UsageError(f"--bits: {wrong} are neither N (WNAN) nor WNAM, e.g. 4,W1A2.")
    return [(int(m[1]), int(m[1])) if m[1] else (int(m[2]), int(m[3])) for m in match]


def _key(record):
    return (record["method"], record["weight_bits"], record["activation_bits"], record["epochs"],
            record["seed"])


def _records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _done(path, supersede=""):
    """Keys of the rows in `path` not to run again: the live ones, or with `supersede` the live
    ones re-run for that reason."""
    return {_key(r) for r in _records(path) if not r.get("superseded")
            and (not supersede or r.get("supersedes") == supersede)}


def _append(path, record, supersede=""):
    """Appends `record` to the JSON-lines file; with `supersede`, marks the live rows it
    replaces (same `_key`) superseded for that reason, rewriting the file in one replace."""
    if supersede:
        record = {**record, "supersedes": supersede}
        records = [dict(r, superseded=supersede) if not r.get("superseded")
                   and _key(r) == _key(record) else r for r in _records(path)]
        with open(path + ".tmp", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records + [record])
        os.replace(path + ".tmp", path)
    else:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    print("RECORD " + json.dumps(record))


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # tfds' and the checkpoint saver's info lines
        logging.set_verbosity(logging.WARNING)
    suite = suites.SUITES[FLAGS.suite]
    epochs = FLAGS.epochs or suite["epochs"]
    results = FLAGS.results or os.path.join(ROOT, "benchmarks", "results", f"{FLAGS.suite}.jsonl")
    os.makedirs(os.path.dirname(results), exist_ok=True)
    done = _done(results, FLAGS.supersede)
    rows = []
    for name in FLAGS.methods:
        chosen = method(name)
        for bits, activation_bits in ([chosen.fixed_bits] if chosen.fixed_bits
                                      else bit_pairs(FLAGS.bits)):
            if (name, bits, activation_bits, epochs, FLAGS.seed) in done:
                print(f"skip {name} W{bits}A{activation_bits}: already in {results}")
                # A landed row's backup, restored from an older snapshot, would only be
                # snapshotted again.
                stale = _backup_path(name, bits, activation_bits)
                if stale and os.path.isdir(stale):
                    shutil.rmtree(stale)
                    print(f"removed {stale}: the backup of a row that landed")
            else:
                rows.append((name, chosen, bits, activation_bits))
    float_landed = ("float", 32, 32, 0, FLAGS.seed) in _done(results)  # never re-run
    if not rows and float_landed:
        return  # nothing to run: no need to load the data or train the float model
    data = kquant.load_dataset(suite["dataset"], suite["batch_size"], seed=FLAGS.seed,
                               limit=FLAGS.limit or None)
    float_model = suites.float_model(FLAGS.suite, data, FLAGS.seed, FLAGS.float_epochs)
    kquant.compile_classifier(float_model)
    float_top1 = float(float_model.evaluate(data.test, verbose=0)[1])
    if not FLAGS.limit:  # a smoke run's subset says little of the float model
        try:
            suites.check_float_start(FLAGS.suite, float_top1)
        except ValueError as error:
            raise app.UsageError(str(error))

    def float_speed():
        """Float training images/s now, on a copy: the reference of each run's ratio."""
        sample = dataclasses.replace(data, train=data.train.take(60))
        return suites.train(suites.clone(float_model), sample, suite, 1)[1]

    float_tflite = tflite_export.convert_float(float_model)
    float_latency = {t: tflite_latency(float_tflite, data.input_shape, t) for t in (1, 2)}
    representative = data.train.take(2)
    exact_examples = FLAGS.exact_examples or suite.get("exact_examples", 10_000)
    training_steps = epochs * data.steps_per_epoch
    command = "python " + " ".join(sys.argv)
    common = dict(suite=FLAGS.suite, dataset=suite["dataset"], model=suite["model"], seed=FLAGS.seed,
                  float_top1=round(float_top1, 4), float_tflite_bytes=len(float_tflite),
                  weight_decay=suite.get("weight_decay", 0.0))
    provenance = dict(command=command, commit=suites.commit(), versions=_versions(),
                      python=platform.python_version(),
                      date=datetime.date.today().isoformat())
    if not float_landed:  # the start
        float_report = tflite_export.verify(float_tflite, float_model, data.test)
        _append(results, {**common, "method": "float", "weight_bits": 32, "activation_bits": 32,
                          "epochs": 0, "keras_top1": round(float_top1, 4), "tflite_top1": round(
                              float_report.tflite_accuracy, 4), "tflite_bytes": len(float_tflite),
                          "train_throughput_ratio": 1.0, "latency_ratio_1thread": 1.0,
                          "latency_ratio_2threads": 1.0,
                          "note": "float TFLite (not integer); epochs 0: the starting checkpoint",
                          **provenance})
    for name, chosen, bits, activation_bits in rows:
        keras.utils.set_random_seed(FLAGS.seed)
        record = dict(common, method=name, weight_bits=bits, activation_bits=activation_bits,
                      epochs=epochs, note=chosen.note)
        try:
            if chosen.configuration is not None:
                record["configuration"] = chosen.configuration(bits, activation_bits)
            model = chosen.quantized(float_model, bits, activation_bits, data.train,
                                     training_steps)
        except ImportError as error:
            print(f"skip {name}: {error}")
            continue
        except Unavailable as error:  # a peer that cannot run here: the row says why
            _append(results, {**record, "keras_top1": None, "unavailable": str(error),
                              **provenance}, FLAGS.supersede)
            continue
        reference_speed = float_speed()  # just before, so both see the same machine load
        keras_top1, speed, measured = suites.train(
            model, data, suite, epochs, chosen.techniques, float_model,
            lambda other: chosen.quantized(float_model, other, other, data.train,
                                           training_steps), FLAGS.seed,
            backup_dir=_backup_path(name, bits, activation_bits))
        record.update(keras_top1=round(keras_top1, 4),
                      train_throughput_ratio=round(speed / reference_speed, 3)
                      if speed and reference_speed else None, tflite_top1=None,
                      tflite_bytes=None, agreement=None, latency_ratio_1thread=None,
                      latency_ratio_2threads=None, **measured)
        if chosen.export is not None:
            record.update(_export_fields(chosen, model, representative, data, float_latency,
                                         exact_examples))
            _keep_if_inexact(record, model, FLAGS.inexact_dir)
        _append(results, {**record, **provenance}, FLAGS.supersede)


def _backup_path(name, bits, activation_bits):
    """The folder backing up a row's training under --backup_dir ('' without one)."""
    return FLAGS.backup_dir and os.path.join(
        os.path.expanduser(FLAGS.backup_dir),
        f"{FLAGS.suite}-{name}-W{bits}A{activation_bits}-seed{FLAGS.seed}")


def _export_fields(chosen, model, representative, data, float_latency, exact_examples):
    """The exported model's accuracy, agreement, size, partitions and latency ratios; for a peer
    whose export fails, why (`export_unavailable`)."""
    try:
        tflite = chosen.export(model, representative)
    except Unavailable as error:
        return {"export_unavailable": str(error)}
    report = tflite_export.verify(tflite, model, data.test)
    return dict(tflite_top1=round(report.tflite_accuracy, 4), agreement=round(report.agreement, 4),
                tflite_bytes=len(tflite),
                xnnpack_partitions=tflite_export.inspect(tflite).xnnpack_partitions,
                **_exact_fields(report, tflite, model, data, exact_examples),
                **{f"latency_ratio_{t}thread{'s' if t > 1 else ''}": round(
                    tflite_latency(tflite, data.input_shape, t) / float_latency[t], 3)
                   for t in (1, 2)})


def _exact_fields(report, tflite, model, data, examples):
    """Agreement with kquant's integer-exact mode on each runtime (the built-in kernels and
    TFLite Micro on `examples` test images), the worst layer (fed TFLite's own inputs) and the
    TFLite Micro arena; empty for models kquant cannot lower (peers)."""
    if report.exact_agreement is None:
        return {}
    layers = report.layer_differences.values()
    fields = {"agreement_exact_xnnpack": round(report.exact_agreement, 4),
              "layer_max_differing": round(max((d.differing for d in layers), default=0.0), 4),
              "layer_max_steps": max((d.max_steps for d in layers), default=0)}
    for runtime in ("builtin", "micro"):
        fields[f"agreement_exact_{runtime}"] = round(tflite_export.exact_agreement(
            tflite, model, data.test, runtime, examples), 4)
    fields["exact_examples"] = min(examples, report.examples)
    fields["micro_arena_bytes"] = tflite_export.runtime.micro_arena_bytes(tflite)
    return fields


def _keep_if_inexact(record, model, folder):
    """Saves the model of a row whose int8 outputs differ from the integer-exact mode on some
    runtime (a rare rounding the mode does not reproduce yet) in `folder` ("": never) and
    records where."""
    exact = [v for k, v in record.items() if k.startswith("agreement_exact_")]
    if not folder or not exact or min(exact) == 1.0:
        return
    folder = os.path.expanduser(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{record['suite']}-{record['method']}-W{record['weight_bits']}"
                                f"A{record['activation_bits']}-seed{record['seed']}.keras")
    model.save(path)
    record["inexact_model"] = path


if __name__ == "__main__":
    # Each row is a new model, so TensorFlow's retracing warning blames nothing real here.
    with without_retracing_warnings():
        app.run(main)
