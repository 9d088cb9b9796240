"""The training setup every example and benchmark shares: SGD with momentum and a cosine
schedule, restarted where a technique's stages begin."""
import math

from kquant.backend import keras, tf
from kquant.quantizers.model_states import quantizer_variables
from kquant.serialization import serializable


@serializable()
class RestartingCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """A cosine decay to 0 from `initial` within each segment between restarts.

    lr(t) = initial * (1 + cos(pi * (t - s) / (e - s))) / 2 for s <= t < e, where s and e are
    the steps at which t's segment starts and ends ([0, restarts..., total]).

    Args:
        initial: learning rate at the start of every segment.
        total_steps: steps of the whole run.
        restart_steps: steps at which the cosine starts again (0 < step < total_steps).
    """

    def __init__(self, initial, total_steps, restart_steps=()):
        self.initial, self.total_steps = float(initial), int(total_steps)
        self.restart_steps = sorted({int(s) for s in restart_steps if 0 < s < total_steps})

    def __call__(self, step):
        edges = tf.constant([0, *self.restart_steps, self.total_steps], tf.float32)
        step = tf.minimum(tf.cast(step, tf.float32), float(self.total_steps))
        segment = tf.clip_by_value(tf.searchsorted(edges, [step], side="right")[0] - 1, 0,
                                   len(self.restart_steps))
        # gather, not edges[segment]: XLA's strided slice wants constant bounds, which would
        # make a jit-compiled train step recompile at every step.
        start, end = tf.gather(edges, segment), tf.gather(edges, segment + 1)
        return self.initial * 0.5 * (1.0 + tf.cos(math.pi * (step - start) / (end - start)))

    def get_config(self):
        return {"initial": self.initial, "total_steps": self.total_steps,
                "restart_steps": self.restart_steps}


def cosine_sgd(learning_rate=0.1, epochs=1, steps_per_epoch=1, momentum=0.9, restart_steps=(),
               weight_decay=0.0, model=None):
    """SGD with momentum whose learning rate decays to 0 along a cosine, over the whole run or
    within each segment between `restart_steps` (`RestartingCosineDecay`).

    `weight_decay` is Keras's decoupled decay (Loshchilov & Hutter, arXiv 1711.05101): after each
    step every trainable variable v becomes v - lr * weight_decay * v, outside the momentum,
    except the quantizer variables (clips, steps, levels) of `model`, the model it will train:
    decay regularizes the network, not the number format it is stored in. With momentum 0.9
    its pull matches an L2 penalty's weight decay (PyTorch's SGD, He et al.) of a tenth as
    much: 5e-3 here is the 5e-4 of the usual CIFAR recipes.

    Raises:
        ValueError: if epochs, steps or learning rate are not positive, or weight decay is
            negative.
    """
    if epochs < 1 or steps_per_epoch < 1 or learning_rate <= 0 or weight_decay < 0:
        raise ValueError("cosine_sgd: epochs and steps_per_epoch must be >= 1, learning_rate "
                         "> 0 and weight_decay >= 0; got "
                         f"{epochs}, {steps_per_epoch}, {learning_rate}, {weight_decay}.")
    schedule = RestartingCosineDecay(learning_rate, epochs * steps_per_epoch, restart_steps)
    optimizer = keras.optimizers.SGD(schedule, momentum=momentum,
                                     weight_decay=weight_decay or None)
    if model is not None:
        optimizer.exclude_from_weight_decay(var_list=quantizer_variables(model))
    return optimizer


def compile_classifier(model, learning_rate=0.1, epochs=1, steps_per_epoch=1, momentum=0.9,
                       optimizer=None, restart_steps=(), weight_decay=0.0):
    """Compiles a logits-output classifier with sparse cross-entropy and accuracy.

    Args:
        model: a Keras model whose output is logits.
        learning_rate: initial learning rate of the cosine schedule.
        epochs: epochs of the coming `fit`; the schedule decays to 0 over them.
        steps_per_epoch: batches per epoch.
        momentum: SGD momentum (ignored if `optimizer` is given).
        optimizer: a Keras optimizer to use instead of SGD with the cosine schedule.
        restart_steps: steps at which the cosine starts again.
        weight_decay: decoupled weight decay of SGD (`cosine_sgd`) on the model's weights, not
            on its quantizers' clips, steps and levels (ignored if `optimizer` is given).

    Returns:
        The model, compiled.

    Raises:
        ValueError: if epochs, steps or learning rate are not positive, or weight decay is
            negative.
    """
    if optimizer is None:
        optimizer = cosine_sgd(learning_rate, epochs, steps_per_epoch, momentum, restart_steps,
                               weight_decay, model)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model
