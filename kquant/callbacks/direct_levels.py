"""The direct update of learnable-level weights after every optimizer step."""
from kquant.backend import keras, tf
from kquant.precision import quantize_wrappers
from kquant.quantizers.direct_levels import DirectLevelsWeightQuantizer


def direct_levels_quantizers(model):
    """[(kernel variable, quantizer, its variables)] of every learnable-levels weight quantizer.

    Nested models and training wrappers with `quantized_models` (`JointDistillation`) included.
    """
    return [(kernel, quantizer, variables) for layer in quantize_wrappers(model)
            for kernel, quantizer, variables in layer._weight_vars  # pylint: disable=protected-access
            if isinstance(quantizer, DirectLevelsWeightQuantizer)]


def initialize_levels(model):
    """Starts every learnable-levels quantizer of `model` from its current (float) kernels.

    `kquant.quantize_model` calls it; call it again after loading other float weights.

    Returns:
        The number of quantizers initialised.
    """
    found = direct_levels_quantizers(model)
    for kernel, quantizer, variables in found:
        quantizer.initialize(kernel, variables)
    return len(found)


class DirectLevelsUpdate(keras.callbacks.Callback):
    """Applies the direct code update of learnable-level weights after every training batch.

    Add it to `fit` for models whose recipe uses `weight_quantizer="direct-levels"`
    (`kquant.techniques.prepare` adds it by itself):

        model.fit(data, callbacks=[kquant.callbacks.DirectLevelsUpdate()])

    Without it the levels still learn but no weight changes level. See
    `kquant.quantizers.DirectLevelsWeightQuantizer.update` for the rule.

    Raises:
        ValueError: at the start of training, if the model has no learnable-levels quantizer.
    """

    def __init__(self):
        super().__init__()
        self._found = []
        self._update = None

    def on_train_begin(self, logs=None):
        self._found = direct_levels_quantizers(self.model)
        if not self._found:
            raise ValueError(f"DirectLevelsUpdate: model {self.model.name!r} has no learnable-levels "
                             "weight quantizer (Recipe(weight_quantizer='direct-levels')).")
        self._update = tf.function(self._update_all)

    def _update_all(self):
        for kernel, quantizer, variables in self._found:
            quantizer.update(kernel, variables)

    def on_train_batch_end(self, batch, logs=None):
        self._update()
