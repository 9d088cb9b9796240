"""Keras' biases moved onto the int32 grid of the deployed model, so `evaluate` says what the
device computes.

TFLite holds each conv and dense bias (batch norm folded in) as an int32 at input scale x
weight scale; Keras adds the float bias. The difference, at most half a bias step, is tiny
against one activation step, but a network has hundreds of thousands of activations: at 2
bits some land on the other side of a rounding boundary, and a deep low-bit
network amplifies each one-step flip. Measured in the ResNet-20 CIFAR-10 benchmark rows (4
epochs, 10,000 test images): top-1 agreement of Keras with the deployed model 85.4% -> 99.6% at
W2A2 and 96.5% -> 98.97% at W4A4 with the biases snapped (`tests/test_integer_exact.py` holds
the small version); the deployed model itself does not change (its int32 biases are the same).
"""
from kquant.backend import keras
from kquant.deploy.lowering import bias_offsets
from kquant.numerics import non_finite_cause
from kquant.quantizers.model_states import quantizer_states


def snap_biases(model, weight_storage="int8"):
    """Moves every conv and dense layer's bias onto the int32 grid the exported model holds.

    The bias variable that moves is the layer's own, or the beta of the batch norm that folds
    into it; afterwards the Keras model adds exactly the bias the TFLite file stores (with a
    quantizer's input shift), and exporting it again writes the same integers. Call it after
    training (`SnapBiases` does, `kquant.techniques.prepare` adds that callback): training
    moves the biases off the grid again.

    Args:
        model: a kquant model at its deployed precision.
        weight_storage: the storage the model is exported with (`tflite_export.convert`):
            packed weights ("int4", "int2", "auto") hold the bias at a coarser step.

    Returns:
        {layer name: the largest move, in bias steps} for the layers whose bias moved. A layer
        with neither a bias nor a batch norm after it keeps its zero bias (the converter then
        stores zero, or a quantizer's input shift rounded).

    Raises:
        ValueError: as `kquant.deploy.integer_model` (a model not deployable as it stands, a
            layer without an integer-exact lowering, weights that cannot be stored as asked).
    """
    moved = {}
    for offset in bias_offsets(model, weight_storage):
        if offset.variable is not None:
            offset.variable.assign_add(offset.offset.astype(offset.variable.dtype.as_numpy_dtype))
            moved[offset.layer] = float(abs(offset.steps).max())
    return moved


class SnapBiases(keras.callbacks.Callback):
    """`snap_biases` at the end of `fit`, so that `evaluate` afterwards gives the deployed
    model's accuracy.

    A model that cannot be lowered yet (no kquant quantizers, a NaN that stopped training, a
    layer without an integer-exact lowering, a quantizer not at its deployed bit-width) keeps
    its biases; a kquant model without NaN says why in one line, and export names the problem
    again.

    Args:
        model: the kquant model to snap (default: the model `fit` trains).
        weight_storage: as for `snap_biases`.
    """

    def __init__(self, model=None, weight_storage="int8"):
        super().__init__()
        self._target, self.weight_storage = model, weight_storage

    def on_train_end(self, logs=None):
        model = self._target if self._target is not None else self.model
        if not quantizer_states(model) or non_finite_cause(model):
            return
        try:
            snap_biases(model, self.weight_storage)
        except ValueError as error:
            print(f"kquant: biases of {model.name!r} left as trained, not snapped to the "
                  f"deployed int32 grid: {error}")
