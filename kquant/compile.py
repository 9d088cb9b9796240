"""The training setup every example and benchmark shares: SGD with momentum and a cosine schedule."""
from kquant.backend import keras


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
    if epochs < 1 or steps_per_epoch < 1 or learning_rate <= 0:
        raise ValueError("compile_classifier: epochs and steps_per_epoch must be >= 1 and "
                         f"learning_rate > 0; got {epochs}, {steps_per_epoch}, {learning_rate}.")
    if optimizer is None:
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch)
        optimizer = keras.optimizers.SGD(schedule, momentum=momentum)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model
