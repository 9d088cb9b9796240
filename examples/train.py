"""The main job: train a (quantized) CNN, evaluate it, export it to integer TFLite and verify it.

With no flags it trains a W4A4 small CNN on scikit-learn's digits (offline) in about a minute.

    python examples/train.py                                    # W4A4 on digits
    python examples/train.py --weight_bits=32 --activation_bits=32 --save_model=float.h5
    python examples/train.py --dataset=cifar10 --model=resnet20 --init_from=float.h5 \
        --weight_bits=2 --activation_bits=2 --epochs=5
    python examples/train.py --technique=stochastic-precision+joint-distillation --student_bits=2,4

Bits of 32 mean float. It prints one line starting with RESULT and a JSON record.
"""
import json
import os
import sys
import time
import warnings

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kquant  # noqa: E402  (selects Keras 2 before TensorFlow loads)
from kquant.backend import keras  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "digits", "digits, mnist, cifar10, folder:/path or a tfds name.")
flags.DEFINE_enum("model", "small_cnn", kquant.models.names(), "Reference model to build.")
flags.DEFINE_integer("weight_bits", 4, "Weight bits, 1-8; 32 trains the float model.")
flags.DEFINE_integer("activation_bits", 4, "Activation bits, 1-8; 32 trains the float model.")
for _bits in ("weight_bits", "activation_bits"):
    flags.register_validator(_bits, lambda bits: 1 <= bits <= 8 or bits == 32,
                             "must be from 1 to 8, or 32 for the float model")
flags.DEFINE_enum("weight_quantizer", "dorefa", sorted(kquant.recipe.weight_quantizers()),
                  "Weight quantizer (direct-levels: learnable levels, updated directly).")
flags.DEFINE_enum("activation_quantizer", "clip", sorted(kquant.recipe.activation_quantizers()),
                  "Activation quantizer (channel-aware: clip fit to the mean per-channel error).")
flags.DEFINE_bool("per_channel", False, "Weight statistics or levels per output channel.")
flags.DEFINE_bool("fold_batch_norm", False, "Fold each batch norm into its conv while training, "
                  "so the weights are quantized as TFLite stores them.")
flags.DEFINE_integer("freeze_batch_norm_epoch", None, "With --fold_batch_norm: the epoch from "
                     "which folded batch norms use their moving statistics (default: never).")
flags.DEFINE_integer("epochs", 8, "Training epochs.")
flags.DEFINE_float("batch_norm_momentum", 0.9, "Momentum of the reference models' batch norms.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_float("learning_rate", 0.05, "Initial learning rate (cosine decay to 0).")
flags.DEFINE_float("weight_decay", 0.0, "SGD's decoupled weight decay (kquant.cosine_sgd: 5e-3 "
                   "matches the L2 weight decay 5e-4 of the usual CIFAR recipes).")
flags.register_validator("weight_decay", lambda value: value >= 0, "must be >= 0")
flags.DEFINE_string("init_from", "", "A saved float Keras model (.h5) to start from.")
flags.DEFINE_bool("calibrate_ranges", True, "With --init_from: start PACT clips and 8-bit ranges "
                  "from the float model's activations (kquant.calibrate_ranges).")
flags.DEFINE_string("save_model", "", "Where to save the trained Keras model (.h5).")
flags.DEFINE_string("backup_dir", "", "Resume an interrupted run from this folder (BackupAndRestore).")
flags.DEFINE_string("export_dir", "exports", "Folder for the TFLite model; empty skips export.")
flags.DEFINE_enum("runtime", "xnnpack", sorted(kquant.deploy.RUNTIMES), "Where the TFLite model "
                  "will run: LiteRT with XNNPACK (phones, desktops), LiteRT's built-in kernels, "
                  "or TFLite Micro; verify compares it with kquant's integer-exact mode there.")
flags.DEFINE_enum("weight_storage", "int8", list(kquant.deploy.WEIGHT_STORAGES),
                  "How the TFLite file stores low-bit weights: int8, packed int4 (layers of at "
                  "most 4 bits), int2 (also dense layers of at most 2 bits; LiteRT only) or "
                  "auto (int4 wherever the grid fits).")
flags.DEFINE_integer("limit", 0, "Use only this many examples per split (0: all).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("technique", "none", "Training technique(s), joined with '+', from "
                    f"{kquant.techniques.names()}; or none.")
# Technique options: each goes to the named techniques that take it, only when given.
flags.DEFINE_integer("boundary_epoch", None, "two-stage: first epoch with quantized activations "
                     "(default: the last 3/4 of the epochs are quantized).")
flags.DEFINE_float("initial_probability", None, "stochastic-precision: p0, ramping to 1 "
                   "(default 0.25).")
flags.DEFINE_list("student_bits", None, "joint-distillation: bit-widths (W=A) of the students "
                  "trained with one teacher; the trained model is the one at its own bits "
                  "(default 2,4).")
flags.DEFINE_float("temperature", None, "joint-distillation: softmax temperature (default 1).")
flags.DEFINE_integer("first_bits", None, "ctmq-chain, ctmq-cyclic: bits of the first chain "
                     "step (default: one step above the target).")
flags.DEFINE_integer("bits_per_step", None, "ctmq-chain, ctmq-cyclic: bits each chain step drops "
                     "(default 1).")
flags.DEFINE_integer("cycles", None, "ctmq-cyclic: full-precision/low-bit cycles after the chain "
                     "(default 1).")
flags.DEFINE_integer("step_epochs", None, "ctmq-chain, ctmq-cyclic: epochs per chain step "
                     "(default 1; the final phase also gets the remaining epochs).")
flags.DEFINE_integer("cycle_epochs", None, "ctmq-cyclic: epochs per phase of a cycle "
                     "(default: step_epochs).")
flags.DEFINE_list("attach_to", None, "auxiliary-module: layer names for the adaptors (default: "
                  "every residual Add).")
flags.DEFINE_float("auxiliary_weight", None, "auxiliary-module: weight of the auxiliary head's "
                   "loss (default 1).")
TECHNIQUE_OPTIONS = {"boundary_epoch": int, "initial_probability": float,
                     "student_bits": lambda bits: [int(b) for b in bits], "temperature": float,
                     "first_bits": int, "bits_per_step": int, "cycles": int, "step_epochs": int,
                     "cycle_epochs": int, "attach_to": list, "auxiliary_weight": float}
flags.DEFINE_bool("float_reference", True, "Also train the float model from scratch on the same "
                  "budget and report its accuracy (skipped with --init_from).")


def technique_options():
    """The technique flags given on the command line, as options for `techniques.parse`."""
    return {name: convert(FLAGS[name].value) for name, convert in TECHNIQUE_OPTIONS.items()
            if FLAGS[name].present}


def check_flags_take_effect(quantized):
    """Raises a UsageError naming each flag given that does nothing with the others given."""
    idle = {"weight_quantizer": not quantized, "activation_quantizer": not quantized,
            "per_channel": not quantized, "fold_batch_norm": not quantized,
            "calibrate_ranges": not FLAGS.init_from, "float_reference": bool(FLAGS.init_from),
            "runtime": not FLAGS.export_dir,
            "weight_storage": not FLAGS.export_dir or not quantized}
    why = {"calibrate_ranges": "it needs --init_from", "float_reference": "--init_from skips it",
           "runtime": "--export_dir is empty, so nothing is exported",
           "weight_storage": "nothing quantized is exported"}
    unused = [f"--{name}: {why.get(name, 'the model is float, bits 32')}"
              for name, is_idle in idle.items() if is_idle and FLAGS[name].present]
    if unused:
        raise app.UsageError(f"These flags do nothing here: {'; '.join(unused)}.")


def load_float_model(path, data):
    """The model saved at `path` (`kquant.load_model`: no stored code runs), checked against
    the dataset's images and classes.

    Raises:
        app.UsageError: for a path holding no Keras model, or one that does not fit the data.
    """
    try:
        model = kquant.load_model(path)
    except (OSError, ValueError) as error:  # missing, not a Keras file, or carrying code
        raise app.UsageError(f"--init_from={path}: {error}")
    if tuple(model.input_shape[1:]) != tuple(data.input_shape) or \
            model.output_shape[-1] != data.num_classes:
        raise app.UsageError(
            f"--init_from={path}: the model takes {model.input_shape[1:]} and gives "
            f"{model.output_shape[-1]} logits; --dataset={FLAGS.dataset} has images shaped "
            f"{data.input_shape} and {data.num_classes} classes.")
    return model


def new_path(path):
    """`path`, or with -1, -2, ... before its extension if taken: runs never overwrite exports."""
    stem, extension = os.path.splitext(path)
    number = 0
    while os.path.exists(path):
        number += 1
        path = f"{stem}-{number}{extension}"
    return path


def fit_and_evaluate(model, data, techniques=(), callbacks=(), float_model=None, quantize=None):
    """Trains with the flags' schedule and techniques; returns (test top-1 of `model`, seconds).

    `float_model` and `quantize` (bits -> a model quantized like `model`) are what techniques
    may need (`kquant.techniques.Context`).
    """
    schedule = kquant.techniques.Schedule(FLAGS.epochs, data.steps_per_epoch,
                                          FLAGS.learning_rate, weight_decay=FLAGS.weight_decay)
    context = kquant.techniques.Context(schedule, float_model, data.train, quantize,
                                        weight_storage=FLAGS.weight_storage)
    try:
        training = kquant.techniques.prepare(model, techniques, context)
    except ValueError as error:  # a technique's plan that does not fit these flags
        raise app.UsageError(str(error))
    start = time.time()
    training.model.fit(data.train, epochs=FLAGS.epochs, validation_data=data.test,
                       callbacks=training.callbacks + list(callbacks),
                       verbose=1 if sys.stdout.isatty() else 2)
    seconds = time.time() - start
    if training.model is not model:
        for name, value in training.model.evaluate(data.test, verbose=0, return_dict=True).items():
            print(f"{FLAGS.technique}, {name}: {value:.4f}")
        kquant.compile_classifier(model)
    return float(model.evaluate(data.test, verbose=0)[1]), seconds


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # the converter's info lines; --verbosity=0 shows them
        logging.set_verbosity(logging.WARNING)
    keras.utils.set_random_seed(FLAGS.seed)
    try:
        data = kquant.load_dataset(FLAGS.dataset, FLAGS.batch_size, seed=FLAGS.seed,
                                   limit=FLAGS.limit or None)
    except (ValueError, FileNotFoundError) as error:  # kquant's message names what is wrong
        raise app.UsageError(f"--dataset={FLAGS.dataset}: {error}")
    if FLAGS.init_from:
        model = load_float_model(FLAGS.init_from, data)
    else:
        model = kquant.models.build_model(FLAGS.model, data.input_shape, data.num_classes,
                                          batch_norm_momentum=FLAGS.batch_norm_momentum)
    float_model = model
    quantized = FLAGS.weight_bits != 32 or FLAGS.activation_bits != 32
    try:
        techniques = kquant.techniques.parse(FLAGS.technique, **technique_options())
    except ValueError as error:
        raise app.UsageError(str(error))
    check_flags_take_effect(quantized)
    if techniques and not quantized:
        raise app.UsageError("--technique needs a quantized model (bits below 32).")

    freeze = FLAGS.freeze_batch_norm_epoch
    if freeze is not None and not (FLAGS.fold_batch_norm and 0 <= freeze <= FLAGS.epochs):
        raise app.UsageError(f"--freeze_batch_norm_epoch must be from 0 to --epochs "
                             f"({FLAGS.epochs}) and needs --fold_batch_norm, got {freeze}.")

    def quantize(weight_bits, activation_bits):
        quantized_model = kquant.quantize_model(float_model, kquant.Recipe(
            weight_bits=weight_bits, activation_bits=activation_bits,
            weight_quantizer=FLAGS.weight_quantizer, activation_quantizer=FLAGS.activation_quantizer,
            per_channel=FLAGS.per_channel, fold_batch_norm=FLAGS.fold_batch_norm,
            freeze_batch_norm_after=None if freeze is None else
            freeze * data.steps_per_epoch))
        if FLAGS.init_from and FLAGS.calibrate_ranges:
            kquant.calibrate_ranges(quantized_model, float_model, data.train.take(4))
        return quantized_model

    if quantized:
        model = quantize(FLAGS.weight_bits, FLAGS.activation_bits)
        kquant.describe(model)
    record = {"dataset": FLAGS.dataset, "model": FLAGS.model, "weight_bits": FLAGS.weight_bits,
              "activation_bits": FLAGS.activation_bits, "technique": FLAGS.technique,
              "epochs": FLAGS.epochs, "seed": FLAGS.seed}
    if quantized and FLAGS.float_reference and not FLAGS.init_from:
        keras.utils.set_random_seed(FLAGS.seed)
        reference = kquant.models.build_model(FLAGS.model, data.input_shape, data.num_classes,
                                              batch_norm_momentum=FLAGS.batch_norm_momentum)
        record["float_top1"] = round(fit_and_evaluate(reference, data)[0], 4)
    callbacks = [keras.callbacks.BackupAndRestore(FLAGS.backup_dir)] if FLAGS.backup_dir else []
    keras_top1, train_seconds = fit_and_evaluate(model, data, techniques, callbacks, float_model,
                                                 lambda bits: quantize(bits, bits))
    if FLAGS.save_model:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.save_model)), exist_ok=True)
        with warnings.catch_warnings():  # .h5 is what --init_from loads; Keras calls it legacy
            warnings.filterwarnings("ignore", "You are saving your model as an HDF5 file")
            model.save(FLAGS.save_model, include_optimizer=False)
    record.update(keras_top1=round(keras_top1, 4), train_seconds=round(train_seconds, 1))
    if FLAGS.export_dir:
        import tflite_export

        representative = data.train.unbatch().batch(1).take(200)
        tflite_bytes = (tflite_export.convert(model, representative,
                                              weight_storage=FLAGS.weight_storage)
                        if quantized else tflite_export.convert_float(model))
        os.makedirs(FLAGS.export_dir, exist_ok=True)
        path = new_path(os.path.join(FLAGS.export_dir, f"{FLAGS.model}_w{FLAGS.weight_bits}"
                                     f"a{FLAGS.activation_bits}_{FLAGS.technique}.tflite"))
        with open(path, "wb") as f:
            f.write(tflite_bytes)
        report = tflite_export.verify(tflite_bytes, model, data.test, runtime=FLAGS.runtime)
        print(report)
        if report.exact_agreement is not None:
            record.update(runtime=FLAGS.runtime, exact_agreement=round(report.exact_agreement, 4))
        record.update(tflite_path=path, tflite_bytes=len(tflite_bytes),
                      weight_storage=FLAGS.weight_storage if quantized else "float32",
                      tflite_top1=round(report.tflite_accuracy, 4), agreement=round(report.agreement, 4),
                      float_tflite_bytes=len(tflite_export.convert_float(float_model)))
    print("RESULT " + json.dumps(record))


if __name__ == "__main__":
    app.run(main)
