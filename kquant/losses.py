"""Training losses of kquant's techniques: classification, distillation KL, MSE guidance."""
from kquant.backend import keras, tf


def classification_loss(labels, logits):
    """Mean sparse cross-entropy of integer `labels` against `logits`."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)


def distillation_kl(target_logits, logits, temperature):
    """T^2 * KL(softmax(target/T) || softmax(logits/T)), averaged over the batch.

    The T^2 factor keeps the gradient's scale independent of T (Hinton et al., arXiv
    1503.02531). Hold the target constant (stop-gradient) to pull only `logits`.
    """
    p = tf.nn.log_softmax(target_logits / temperature)
    q = tf.nn.log_softmax(logits / temperature)
    return temperature ** 2 * tf.reduce_mean(tf.reduce_sum(tf.exp(p) * (p - q), axis=-1))


def guidance_mse(targets, outputs):
    """Sum over pairs of the mean squared difference of `targets` and `outputs` (lists)."""
    return tf.add_n([tf.reduce_mean(tf.square(t - o)) for t, o in zip(targets, outputs)])
