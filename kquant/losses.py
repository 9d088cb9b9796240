"""Training losses of kquant's techniques: classification, distillation KL, MSE guidance.

Each is this replica's share of the loss of the global batch, as a `tf.distribute` strategy
sums gradients over replicas: on one device, the plain batch mean.
"""
from kquant.backend import keras, tf


def _replica_share(value):
    """A batch mean of this replica divided by the number of replicas."""
    return value / tf.distribute.get_strategy().num_replicas_in_sync


def regularization(network):
    """A network's regularization losses (weight decay, clip penalties), this replica's share."""
    return tf.nn.scale_regularization_loss(tf.add_n([tf.constant(0.0)] + network.losses))


def classification_loss(labels, logits):
    """Mean sparse cross-entropy of integer `labels` against `logits`."""
    per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return tf.nn.compute_average_loss(per_example)


def distillation_kl(target_logits, logits, temperature):
    """T^2 * KL(softmax(target/T) || softmax(logits/T)), averaged over the batch.

    The T^2 factor keeps the gradient's scale independent of T (Hinton et al., arXiv
    1503.02531). Hold the target constant (stop-gradient) to pull only `logits`.
    """
    p = tf.nn.log_softmax(target_logits / temperature)
    q = tf.nn.log_softmax(logits / temperature)
    per_example = tf.reduce_sum(tf.exp(p) * (p - q), axis=-1)
    return temperature ** 2 * tf.nn.compute_average_loss(per_example)


def guidance_mse(targets, outputs):
    """Sum over pairs of the mean squared difference of `targets` and `outputs` (lists)."""
    return _replica_share(tf.add_n([tf.reduce_mean(tf.square(t - o))
                                    for t, o in zip(targets, outputs)]))
