"""The training setup every example and benchmark shares: SGD with momentum and a cosine schedule."""
from kquant.backend import keras


def cosine_sgd(learning_rate=0.1, epochs=1, steps_per_epoch=1, momentum=0.9):
    """SGD with momentum whose learning rate decays to 0 along a cosine over the run.

    Raises:
        ValueError: if epochs, steps or learning rate are not positive.
    """
    if epochs < 1 or steps_per_epoch < 1 or learning_rate <= 0:
        raise ValueError("cosine_sgd: epochs and steps_per_epoch must be >= 1 and learning_rate "
                         f"> 0; got {epochs}, {steps_per_epoch}, {learning_rate}.")
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch)
    return keras.optimizers.SGD(schedule, momentum=momentum)


def compile_classifier(model, learning_rate=0.1, epochs=1, steps_per_epoch=1, momentum=0.9,
                       optimizer=None):
    """Compiles a logits-output classifier with sparse cross-entropy and accuracy.

    Args:
        model: a Keras model whose output is logits.
        learning_rate: initial learning rate of the cosine schedule.
        epochs: epochs of the coming `fit`; the schedule decays to 0 over them.
        steps_per_epoch: batches per epoch.
        momentum: SGD momentum (ignored if `optimizer` is given).
        optimizer: a Keras optimizer to use instead of SGD with the cosine schedule.

    Returns:
        The model, compiled.

    Raises:
        ValueError: if epochs, steps or learning rate are not positive.
    """
    if optimizer is None:
        optimizer = cosine_sgd(learning_rate, epochs, steps_per_epoch, momentum)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model
