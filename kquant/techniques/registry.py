"""Techniques by name: register, parse "a+b", and prepare what `fit` trains."""
import dataclasses
import inspect

from kquant.compile import compile_classifier
from kquant.deploy.bias import SnapBiases
from kquant.numerics import StopOnNonFinite
from kquant.quantizers.model_states import training_callbacks
from kquant.techniques.base import Training

_TECHNIQUES = {}


def register(cls):
    """Class decorator: makes a `Technique` subclass available by its `name`.

    Raises:
        ValueError: if the name is empty or taken by another class.
    """
    if not cls.name or _TECHNIQUES.get(cls.name, cls) is not cls:
        raise ValueError(f"register: technique name {cls.name!r} is empty or already taken.")
    _TECHNIQUES[cls.name] = cls
    return cls


def names():
    """The registered technique names."""
    return list(_TECHNIQUES)


def options_of(name):
    """The option names technique `name` takes (its constructor's arguments)."""
    return [p for p in inspect.signature(_TECHNIQUES[name].__init__).parameters if p != "self"]


def parse(spec, **options):
    """Turns "none" or "a+b" into technique objects.

    Each technique receives the `options` its constructor takes (an option several take goes
    to each of them).

    Args:
        spec: technique names joined with '+', or "none" / "".
        **options: technique settings, e.g. boundary_epoch=2, student_bits=(2, 4).

    Returns:
        A list of `Technique`s.

    Raises:
        ValueError: for unknown names, or an option none of the named techniques takes.
    """
    chosen = [] if spec in ("", "none", None) else spec.split("+")
    unknown = [n for n in chosen if n not in _TECHNIQUES]
    if unknown:
        raise ValueError(f"Unknown technique(s) {unknown}; choose from {names()} joined with '+', "
                         "or 'none'.")
    taken = {n: [o for o in options_of(n) if o in options] for n in chosen}
    unused = sorted(set(options) - {o for used in taken.values() for o in used})
    if unused:
        offered = {n: options_of(n) for n in chosen}
        raise ValueError(f"Technique option(s) {unused} belong to none of {chosen}; their "
                         f"options: {offered}.")
    return [_TECHNIQUES[n](**{o: options[o] for o in taken[n]}) for n in chosen]


def prepare(model, techniques, context):
    """Assembles what `fit` trains for `techniques`, with every callback it needs.

    Without a technique that trains models of its own, `model` is compiled (SGD with momentum,
    cosine decay over the schedule, restarted where any technique asks:
    `learning_rate_restarts`). The callbacks are the techniques' followed by those the
    quantizers ask for (e.g. learnable levels' direct update), `StopOnNonFinite`, and
    `kquant.deploy.SnapBiases` for each deployable model (after `fit`, `evaluate` gives the
    deployed model's accuracy).

    Args:
        model: the kquant model to train.
        techniques: a spec for `parse` ("two-stage+stochastic-precision") or `Technique`s.
        context: a `Context` (the schedule, and what the techniques need).

    Returns:
        A `Training`: `fit` `training.model` with `training.callbacks`; then evaluate and
        export `training.deployable`.

    Raises:
        ValueError: if a technique lacks something it needs, or two techniques both train
            models of their own.
    """
    chosen = parse(techniques) if isinstance(techniques, str) else list(techniques)
    for technique in chosen:
        missing = [need for need in technique.needs if getattr(context, need) is None]
        if missing:
            raise ValueError(f"Technique {technique.name!r} needs {missing} in its Context.")
    trainers = [t.name for t in chosen if t.trains_models]
    if len(trainers) > 1:
        raise ValueError(f"Techniques {trainers} each train models of their own; combine at most "
                         "one of them with others.")
    restarts = sorted({step for t in chosen
                       for step in t.learning_rate_restarts(model, context.schedule)})
    schedule = dataclasses.replace(context.schedule, restart_steps=tuple(restarts))
    context = dataclasses.replace(context, schedule=schedule)
    if trainers:
        trainable, deployable = next(t for t in chosen if t.trains_models).build_trainer(model, context)
    else:
        trainable = compile_classifier(model, optimizer=schedule.optimizer(model))
        deployable = [model]
    callbacks = [c for t in chosen for c in t.callbacks(model, context)]
    # Snapping comes last: the techniques' own on_train_end put the models at their deployed
    # precision first.
    snap = [SnapBiases(m, context.weight_storage) for m in deployable]
    return Training(trainable, callbacks + training_callbacks(trainable) + [StopOnNonFinite()] +
                    snap, deployable, chosen)
