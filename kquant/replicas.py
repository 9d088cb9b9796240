"""Values that every replica of a `tf.distribute` strategy must agree on."""
from kquant.backend import tf, tfmot
from kquant.serialization import serializable


def _replica_context():
    """The replica context when several replicas run in sync, else None."""
    context = tf.distribute.get_replica_context()
    return context if context is not None and context.num_replicas_in_sync > 1 else None


def replica_mean(value):
    """`value` averaged over the replicas in sync (itself on one device).

    A quantizer state fit to a batch in the forward pass (a clip) sees only its replica's
    share of the batch; averaged, every replica assigns the same value.
    """
    context = _replica_context()
    return value if context is None else context.all_reduce(tf.distribute.ReduceOp.MEAN, value)


def replica_max(value):
    """The largest of a scalar `value` over the replicas in sync (itself on one device)."""
    context = _replica_context()
    return value if context is None else tf.reduce_max(context.all_gather(value[None], axis=0))


@serializable()
class InputRangeQuantizer(tfmot.quantization.keras.quantizers.AllValuesQuantizer):
    """TF-MOT's 8-bit input quantizer (running min and max of every value seen, with 0 inside),
    with the batch's min and max taken over all replicas, so that every replica keeps the same
    range (TF-MOT's assigns each replica's own)."""

    def __call__(self, inputs, training, weights, **kwargs):
        if not training:
            return super().__call__(inputs, training, weights, **kwargs)
        low, high = -replica_max(-tf.reduce_min(inputs)), replica_max(tf.reduce_max(inputs))
        low = weights["min_var"].assign(tf.minimum(tf.minimum(weights["min_var"], low), 0.0))
        high = weights["max_var"].assign(tf.maximum(tf.maximum(weights["max_var"], high), 0.0))
        return tf.quantization.fake_quant_with_min_max_vars(
            inputs, low, high, num_bits=self.num_bits, narrow_range=self.narrow_range)
