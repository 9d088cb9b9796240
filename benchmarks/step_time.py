"""Step time of each training technique or quantizer against plain QAT, in one process.

Each method trains `--rounds` epochs of `--steps` batches (so schedules pass through all their
stages) from the suite's float checkpoint; the methods take turns, and the whole sequence runs
`--passes` times, so all of them see about the same machine load. The result per method is its median step time over
plain QAT's (kquant-pact-calibrated), one JSON record per method.

    python benchmarks/step_time.py --suite=cifar10-resnet20 --bits=2 \\
        --methods=two-stage,progressive-bits,stochastic-precision,joint-distillation
"""
import datetime
import json
import os
import sys

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kquant  # noqa: E402  (selects Keras 2 before TensorFlow loads)
from benchmarks import run  # noqa: E402  (its flags: suite, methods, bits, seed, results)
from benchmarks.measure import StepTimer  # noqa: E402
from benchmarks.methods import method  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 40, "Training steps per method and round.")
flags.DEFINE_integer("rounds", 4, "Epochs per fit (the schedules' epochs).")
flags.DEFINE_integer("passes", 2, "How many times every method trains, in turn.")

PLAIN_QAT = "kquant-pact-calibrated"


def main(argv):
    del argv
    suite = run.SUITES[FLAGS.suite]
    bits = int(FLAGS.bits[0])
    data = kquant.load_dataset(suite["dataset"], suite["batch_size"], seed=FLAGS.seed,
                               limit=FLAGS.limit or None)
    float_model = run._float_model(suite, data)  # pylint: disable=protected-access
    batches = data.train.take(FLAGS.steps).cache()
    names = [PLAIN_QAT] + [m for m in FLAGS.methods if m != PLAIN_QAT]
    runs = {}
    for name in names:
        chosen = method(name)
        model = chosen.build(run._clone(float_model), bits, bits)  # pylint: disable=protected-access
        extra = ([chosen.build(run._clone(float_model), 6 - bits, 6 - bits)]  # pylint: disable=protected-access
                 if "joint-distillation" in chosen.techniques else [])
        trainable, callbacks = kquant.techniques.prepare(
            model, list(chosen.techniques), FLAGS.rounds, FLAGS.steps, suite["learning_rate"],
            float_model, extra, seed=FLAGS.seed)
        runs[name] = (trainable, callbacks, StepTimer(suite["batch_size"], skip=3))
    for turn in range(FLAGS.passes):
        for name, (trainable, callbacks, timer) in runs.items():
            print(f"pass {turn + 1}/{FLAGS.passes}: {name}")
            trainable.fit(batches, epochs=FLAGS.rounds, callbacks=callbacks + [timer], verbose=2)
    plain = float(np.median(runs[PLAIN_QAT][2].durations))
    results = FLAGS.results or os.path.join(ROOT, "benchmarks", "results", "step-time.jsonl")
    command = "python " + " ".join(sys.argv)
    for name, (_, _, timer) in runs.items():
        record = dict(suite=FLAGS.suite, method=name, weight_bits=bits, activation_bits=bits,
                      steps=len(timer.durations), step_seconds=round(float(np.median(timer.durations)), 4),
                      step_time_vs_plain_qat=round(float(np.median(timer.durations)) / plain, 3),
                      command=command, commit=run._commit(),  # pylint: disable=protected-access
                      date=datetime.date.today().isoformat())
        with open(results, "a") as f:
            f.write(json.dumps(record) + "\n")
        print("RECORD " + json.dumps(record))


if __name__ == "__main__":
    app.run(main)
