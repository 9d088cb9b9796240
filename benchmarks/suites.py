"""The benchmark suites and what every benchmark program shares: the float starting point,
training on a suite's schedule, and provenance (commit)."""
import os
import shutil
import subprocess

import kquant
from benchmarks.measure import StepTimer
from kquant.backend import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUITES = {
    "cifar10-resnet20": dict(dataset="cifar10", model="resnet20", batch_size=128,
                             learning_rate=0.01, epochs=4,
                             checkpoint="benchmarks/checkpoints/resnet20_cifar10_float.h5",
                             trainer="benchmarks/train_float_resnet20.sh"),
    # Issue 17's long protocol: 30 QAT epochs from the 160-epoch float model, against that
    # model fine-tuned the same 30 epochs (method "float-finetuned"), every row with the float
    # model's own weight decay (SGD's decoupled 5e-3, the L2 5e-4 of CIFAR recipes), so the
    # fine-tuned float row continues its recipe rather than overfitting. Issue 17 asked for a
    # float start of at least 90%; two 160-epoch recipes on the JPEG copy (q75 with 4:2:0 chroma
    # subsampling: colour stored at 16x16) reached 87.14% (kernel L2 only) and 89.06% (with
    # decay), so the floor is 89%, reported as short of the 90%: it keeps a weak start
    # (the 4-epoch suite's 85%) from costing a day of rows. The built-in
    # and Micro exact checks take 2,000 test images (XNNPACK's and the accuracies all 10,000):
    # TFLite Micro's interpreter alone takes ~40 ms a ResNet-20 image here, 7 minutes a row at
    # 10,000.
    "cifar10-resnet20-long": dict(dataset="cifar10", model="resnet20", batch_size=128,
                                  learning_rate=0.01, epochs=30, weight_decay=5e-3,
                                  exact_examples=2000, min_float_top1=0.89,
                                  checkpoint="benchmarks/checkpoints/resnet20_cifar10_float_strong.h5",
                                  trainer="benchmarks/train_float_resnet20_strong.sh"),
    "cifar10-mobilenetv2": dict(dataset="cifar10", model="mobilenet_v2", batch_size=128,
                                learning_rate=0.01, epochs=4,
                                checkpoint="benchmarks/checkpoints/mobilenet_v2_cifar10_float.h5",
                                trainer="benchmarks/train_float_mobilenet_v2.sh"),
    "mnist-cnn": dict(dataset="mnist", model="small_cnn", batch_size=128, learning_rate=0.02,
                      epochs=2, float_epochs=2, checkpoint=None),
}


def commit():
    """The git commit the benchmark code runs at (None outside a checkout)."""
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def clone(model):
    """A copy of a float model with the same weights."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def prepare(model, suite, epochs, steps, techniques=(), float_model=None, quantize=None, seed=0,
            data=None):
    """`kquant.techniques.prepare` on the suite's schedule: `epochs` of `steps` batches; the
    techniques that take a seed get `seed`; `data` (training batches) goes to the context."""
    schedule = kquant.techniques.Schedule(epochs, steps, suite["learning_rate"],
                                          weight_decay=suite.get("weight_decay", 0.0))
    seeded = any("seed" in kquant.techniques.options_of(t) for t in techniques)
    chosen = kquant.techniques.parse("+".join(techniques), **({"seed": seed} if seeded else {}))
    return kquant.techniques.prepare(model, chosen, kquant.techniques.Context(
        schedule, float_model=float_model, data=data, quantize=quantize))


def train(model, data, suite, epochs, techniques=(), float_model=None, quantize=None, seed=0,
          backup_dir=None):
    """Trains with the suite's schedule; returns (test top-1 of `model`, training images/s,
    what the techniques measured). With `backup_dir`, each finished epoch is backed up there
    (`BackupAndRestore`: weights, optimizer, schedules) and an interrupted run resumes from it;
    the backup is deleted when training ends."""
    steps = data.steps_per_epoch
    training = prepare(model, suite, epochs, steps, techniques, float_model, quantize, seed,
                       data.train)
    timer = StepTimer(suite["batch_size"])
    backup = [keras.callbacks.BackupAndRestore(backup_dir)] if backup_dir else []
    training.model.fit(data.train, epochs=epochs, callbacks=training.callbacks + backup + [timer],
                       verbose=2)
    if backup_dir:  # BackupAndRestore deletes its checkpoint, not the folder
        shutil.rmtree(backup_dir, ignore_errors=True)
    kquant.compile_classifier(model)
    return float(model.evaluate(data.test, verbose=0)[1]), timer.images_per_second, \
        training.summary()


def check_float_start(name, float_top1):
    """Raises ValueError if the float model is below the suite's `min_float_top1`."""
    least = SUITES[name].get("min_float_top1")
    if least and float_top1 < least:
        raise ValueError(f"Suite {name} starts from a float model of at least {least:.2%}; "
                         f"{SUITES[name]['checkpoint']} has {float_top1:.2%}. Train it again "
                         f"with `bash {SUITES[name]['trainer']}`.")


def float_model(name, data, seed, float_epochs=0):
    """The float starting point: the committed checkpoint, or trained here for quick suites.

    Raises:
        FileNotFoundError: if a suite's checkpoint is missing, with the command that makes it.
    """
    suite = SUITES[name]
    if suite["checkpoint"]:
        path = os.path.join(ROOT, suite["checkpoint"])
        if not os.path.exists(path):
            raise FileNotFoundError(f"Suite {name}: no float checkpoint at {path}; make it "
                                    f"with `bash {suite['trainer']}`.")
        return keras.models.load_model(path, compile=False)
    keras.utils.set_random_seed(seed)
    model = kquant.models.build_model(suite["model"], data.input_shape, data.num_classes)
    train(model, data, {**suite, "learning_rate": 0.05}, float_epochs or suite["float_epochs"])
    return model
