"""The base of techniques that train several networks in one `fit` (distillation, and the
two-network techniques to come)."""
from typing import Mapping

from kquant.backend import keras, tf


class CoTraining(keras.Model):
    """Several networks trained together, each by its own optimizer on its own loss.

    Subclasses implement `compute_losses`. `fit`, callbacks, checkpoints and progress bars
    work as usual; `evaluate` reports every network's loss and accuracy under its name.
    Precision callbacks reach the quantized networks inside (see
    `kquant.quantizers.quantizer_states`); float networks hold no quantizers.

    Args:
        networks: {name: model}, in the order `compute_losses` returns their losses; the first
            is what calling this model runs.
    """

    def __init__(self, networks: Mapping[str, keras.Model], **kwargs):
        super().__init__(**kwargs)
        self.network_names = list(networks)
        self.networks = list(networks.values())
        self.network_optimizers = []
        self._trackers = {n: (keras.metrics.Mean(f"{n}_loss"),
                              keras.metrics.SparseCategoricalAccuracy(f"{n}_accuracy"))
                          for n in self.network_names}

    def compile(self, optimizers, **kwargs):
        """Sets one optimizer per network, in `networks` order.

        Raises:
            ValueError: if the number of optimizers does not match the networks.
        """
        if len(optimizers) != len(self.networks):
            raise ValueError(f"{type(self).__name__}.compile: {len(self.networks)} networks "
                             f"({self.network_names}) need as many optimizers, got "
                             f"{len(optimizers)}.")
        super().compile(optimizer=optimizers[0], **kwargs)
        self.network_optimizers = list(optimizers)

    @property
    def metrics(self):
        return [metric for pair in self._trackers.values() for metric in pair]

    def call(self, inputs, training=False):
        return self.networks[0](inputs, training=training)

    def compute_losses(self, x, y, training=True):
        """Returns ([loss per network], [logits per network]); each loss must reach only its
        own network's variables (hold the others' outputs with stop-gradient)."""
        raise NotImplementedError

    def _track(self, y, losses, logits):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # losses are their shares
        for (loss_metric, accuracy), loss, z in zip(self._trackers.values(), losses, logits):
            loss_metric.update_state(loss * replicas)
            accuracy.update_state(y, z)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data
        with tf.GradientTape(persistent=True) as tape:
            losses, logits = self.compute_losses(x, y, training=True)
        for optimizer, network, loss in zip(self.network_optimizers, self.networks, losses):
            variables = network.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        del tape
        return self._track(y, losses, logits)

    def test_step(self, data):
        x, y = data
        losses, logits = self.compute_losses(x, y, training=False)
        return self._track(y, losses, logits)
