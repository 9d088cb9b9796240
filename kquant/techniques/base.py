"""The technique protocol: what a technique needs, what it hands to `fit`, what it deploys."""
import dataclasses
from typing import Any, Callable, List, Optional, Tuple

from kquant import precision
from kquant.backend import keras
from kquant.compile import cosine_sgd


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The training budget of the coming `fit`: SGD with momentum, cosine decay to 0.

    Attributes:
        epochs: epochs of the fit.
        steps_per_epoch: batches per epoch.
        learning_rate: initial learning rate.
        restart_steps: steps at which the cosine starts again (`prepare` fills them in from
            the techniques' `learning_rate_restarts`).
        weight_decay: decoupled weight decay of SGD (`kquant.cosine_sgd`).
    """

    epochs: int
    steps_per_epoch: int
    learning_rate: float
    restart_steps: Tuple[int, ...] = ()
    weight_decay: float = 0.0

    def optimizer(self, model, learning_rate=None):
        """A new SGD with this schedule (`kquant.cosine_sgd`) for `model`, from `learning_rate`
        if given (weight decay leaves the model's quantizer variables alone)."""
        rate = self.learning_rate if learning_rate is None else learning_rate
        return cosine_sgd(rate, self.epochs, self.steps_per_epoch,
                          restart_steps=self.restart_steps, weight_decay=self.weight_decay,
                          model=model)


@dataclasses.dataclass
class Context:
    """What techniques may need besides the model they train.

    Attributes:
        schedule: the `Schedule`.
        float_model: the float model the quantized one was made from.
        data: the training batches.
        quantize: bits -> a new model quantized from the float model like the one trained
            (same recipe and calibration) at that bit-width, for techniques that train more
            than one low-bit model.
        weight_storage: the storage the models are exported with (`tflite_export.convert`);
            their biases are snapped to its int32 grid at the end of training
            (`kquant.deploy.SnapBiases`).
    """

    schedule: Schedule
    float_model: Optional[keras.Model] = None
    data: Any = None
    quantize: Optional[Callable[[int], keras.Model]] = None
    weight_storage: str = "int8"


@dataclasses.dataclass
class Training:
    """What `kquant.techniques.prepare` hands back.

    Attributes:
        model: the compiled model to call `fit` on.
        callbacks: the callbacks that `fit` needs (techniques' and quantizers').
        deployable: the kquant models to evaluate and export afterwards; the first is the
            model passed to `prepare`.
        techniques: the `Technique`s, for their `summary()` after `fit`.
    """

    model: keras.Model
    callbacks: List[keras.callbacks.Callback]
    deployable: List[keras.Model]
    techniques: List["Technique"] = dataclasses.field(default_factory=list)

    def summary(self):
        """What the techniques measured while training, merged (see `Technique.summary`)."""
        return {k: v for t in self.techniques for k, v in t.summary().items()}


class Technique:
    """A training technique behind one small interface, registered by name.

    A technique either steers the model through callbacks (`callbacks`), or trains it inside a
    model of its own (`trains_models = True` and `build_trainer`), or both. Combined with '+',
    every technique adds its callbacks and at most one builds the trainer.

    Attributes:
        name: the registry name (`kquant.techniques.register`).
        needs: `Context` fields it cannot work without ("float_model", "data", "quantize").
        trains_models: whether `build_trainer` supplies the model to fit.
    """

    name = ""
    needs = ()
    trains_models = False

    def callbacks(self, model, context):
        """The callbacks `fit` needs for this technique (none by default)."""
        del model, context
        return []

    def learning_rate_restarts(self, model, schedule):
        """Training steps at which the learning-rate cosine should start again (none)."""
        del model, schedule
        return []

    def build_trainer(self, model, context):
        """Returns (compiled model to fit, [deployable models, `model` first])."""
        raise NotImplementedError

    def summary(self):
        """What this technique measured during `fit` worth keeping in a record (JSON-able)."""
        return {}


class PrecisionSchedule(Technique, keras.callbacks.Callback):
    """A technique that is a callback steering precision (bits and switches) during `fit`.

    It steers as its own source (`kquant.precision`, source = its name), so techniques
    combine; it returns itself from `callbacks`. Evaluation inside `fit` (validation, hence
    `ModelCheckpoint(save_best_only=True)`) and `predict` run at the deployed precision; the
    schedule resumes afterwards.
    """

    def callbacks(self, model, context):
        return [self]

    def on_test_begin(self, logs=None):
        precision.apply_deployed(self.model)

    def on_test_end(self, logs=None):
        precision.apply_requests(self.model)

    on_predict_begin, on_predict_end = on_test_begin, on_test_end
