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
from benchmarks import run, suites  # noqa: E402  (run: its flags suite, methods, bits, seed, results)
from benchmarks.measure import StepTimer  # noqa: E402
from benchmarks.methods import method  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 40, "Training steps per method and round.")
flags.DEFINE_integer("rounds", 4, "Epochs per fit (the schedules' epochs).")
flags.DEFINE_integer("passes", 2, "How many times every method trains, in turn.")
flags.DEFINE_bool("skip_measured", False, "Measure nothing if every method already has a "
                  "record at these bits for this suite (a resumed queue); without it each run "
                  "appends, and repeated runs show the spread between them.")

PLAIN_QAT = "kquant-pact-calibrated"


def main(argv):
    del argv
    suite = suites.SUITES[FLAGS.suite]
    bits = int(FLAGS.bits[0])
    names = [PLAIN_QAT] + [m for m in FLAGS.methods if m != PLAIN_QAT]
    results = FLAGS.results or os.path.join(ROOT, "benchmarks", "results", "step-time.jsonl")
    if FLAGS.skip_measured:
        measured = {r["method"] for r in run._records(results)
                    if r["suite"] == FLAGS.suite and r["weight_bits"] == bits}
        if set(names) <= measured:
            print(f"skip W{bits}A{bits}: every method already measured in {results}")
            return
    data = kquant.load_dataset(suite["dataset"], suite["batch_size"], seed=FLAGS.seed,
                               limit=FLAGS.limit or None)
    float_model = suites.float_model(FLAGS.suite, data, FLAGS.seed, FLAGS.float_epochs)
    batches = data.train.take(FLAGS.steps).cache()
    runs = {}
    for name in names:
        chosen = method(name)
        steps = FLAGS.rounds * FLAGS.steps
        training = suites.prepare(
            chosen.quantized(float_model, bits, bits, data.train, steps), suite, FLAGS.rounds,
            FLAGS.steps, chosen.techniques, float_model,
            lambda other, chosen=chosen: chosen.quantized(float_model, other, other, data.train,
                                                          steps),
            FLAGS.seed, batches)
        runs[name] = (training.model, training.callbacks, StepTimer(suite["batch_size"], skip=3))
    for turn in range(FLAGS.passes):
        for name, (trainable, callbacks, timer) in runs.items():
            print(f"pass {turn + 1}/{FLAGS.passes}: {name}")
            trainable.fit(batches, epochs=FLAGS.rounds, callbacks=callbacks + [timer], verbose=2)
    plain = float(np.median(runs[PLAIN_QAT][2].durations))
    command = "python " + " ".join(sys.argv)
    for name, (_, _, timer) in runs.items():
        record = dict(suite=FLAGS.suite, method=name, weight_bits=bits, activation_bits=bits,
                      steps=len(timer.durations), step_seconds=round(float(np.median(timer.durations)), 4),
                      step_time_vs_plain_qat=round(float(np.median(timer.durations)) / plain, 3),
                      command=command, commit=suites.commit(),
                      date=datetime.date.today().isoformat())
        with open(results, "a") as f:
            f.write(json.dumps(record) + "\n")
        print("RECORD " + json.dumps(record))


if __name__ == "__main__":
    app.run(main)
