"""The base of activation quantizers whose range is trained: re-fit from a batch on demand."""
from kquant.backend import tf
from kquant.quantizers.base import ActivationQuantizer
from kquant.quantizers.channel_aware import fit_clip
from kquant.replicas import replica_mean


class LearnedRangeActivationQuantizer(ActivationQuantizer):
    """An activation quantizer whose range is a trained variable (PACT's clip, LSQ's step).

    After `refit` (which techniques call when the bit-width changes) the next training batch
    sets the clip to the channel-aware fit of that batch at the new bit-width (`fit_clip`, mean
    statistic), and gradient steps go on from there (the optimizer state is kept). Subclasses
    build their range variable and say how a clip is written into it (`assign_clip`).
    """

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        weights["refit"] = layer.add_weight(f"{name}_refit", shape=(), dtype=tf.float32,
                                            trainable=False, initializer="zeros")
        return weights

    def assign_clip(self, weights, clip):
        """Sets the range variable so that the clip becomes `clip`; returns the assign op."""
        raise NotImplementedError

    def refit(self, weights):
        weights["refit"].assign(1.0)

    def batch_update(self, x, weights):
        """After `refit`: the clip := the channel-aware fit of this batch; otherwise nothing."""
        def fit():
            clip = tf.maximum(replica_mean(fit_clip(tf.stop_gradient(x), weights["bits"])), 1e-3)
            with tf.control_dependencies([self.assign_clip(weights, clip),
                                          weights["refit"].assign(0.0)]):
                return tf.identity(clip)

        return tf.cond(weights["refit"] > 0.5, fit, lambda: tf.zeros([]))
