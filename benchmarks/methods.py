"""Each benchmarked method: how it turns the float model into the model it trains and exports.

kquant methods go through `kquant.quantize_model`; peers (TF-MOT 8-bit, QKeras, Larq) are
rebuilt layer by layer from the same float model with the same weights. Peers are imported
only when asked for, so kquant never depends on them.
"""
import dataclasses
from typing import Callable, Optional

import kquant
import tflite_export
from kquant.backend import keras, tfmot


@dataclasses.dataclass
class Method:
    """A benchmark method: identifier, model builder, TFLite exporter (None: no integer export)."""

    name: str
    build: Callable  # (float_model, weight_bits, activation_bits, training_steps) -> Keras model
    export: Optional[Callable]  # (model, representative) -> tflite bytes
    note: str = ""
    techniques: tuple = ()  # kquant training techniques (see kquant.techniques)
    calibrate: bool = False  # start learned ranges from the float model (kquant.calibrate_ranges)

    def quantized(self, float_model, weight_bits, activation_bits, data, training_steps):
        """The model this method trains at W`weight_bits`A`activation_bits` for
        `training_steps` steps, from a copy of the float model (its learned ranges calibrated
        on `data` where the method says so)."""
        copy = keras.models.clone_model(float_model)
        copy.set_weights(float_model.get_weights())
        model = self.build(copy, weight_bits, activation_bits, training_steps)
        if self.calibrate:
            kquant.calibrate_ranges(model, float_model, data.take(4))
        return model


def _kquant(activation_quantizer, weight_quantizer="dorefa", per_channel=False, weight_bits=None,
            freeze_share=None):
    """A builder; `weight_bits` fixes the weights' bits whatever the row's (ternary: 2; TSQ's
    step 1 keeps 8-bit weights, the nearest to its float weights that exports as integers);
    `freeze_share` folds batch norms, their statistics frozen after that share of training."""
    def build(float_model, row_weight_bits, activation_bits, training_steps):
        folding = {} if freeze_share is None else dict(
            fold_batch_norm=True, freeze_batch_norm_after=int(freeze_share * training_steps))
        return kquant.quantize_model(float_model, kquant.Recipe(
            weight_bits or row_weight_bits, activation_bits, weight_quantizer=weight_quantizer,
            activation_quantizer=activation_quantizer, per_channel=per_channel, **folding))
    return build


def _tfmot_8bit(float_model, weight_bits, activation_bits, training_steps):
    return tfmot.quantization.keras.quantize_model(float_model)


def _int8_converter(model, representative):
    return tflite_export.int8_converter(model, representative).convert()


def _rebuild(float_model, replace):
    """Clones a model, replacing layers by `replace(layer, is_edge)`, and copies the weights."""
    weight_layers = [l.name for l in float_model.layers
                     if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]
    edges = {weight_layers[0], weight_layers[-1]}
    model = keras.models.clone_model(
        float_model, clone_function=lambda layer: replace(layer, layer.name in edges)
        or layer.__class__.from_config(layer.get_config()))
    model.set_weights(float_model.get_weights())
    return model


def _qkeras(float_model, weight_bits, activation_bits, training_steps):
    import qkeras

    def replace(layer, edge):
        bits = 8 if edge else weight_bits
        config = layer.get_config()
        if type(layer) is keras.layers.Conv2D:
            return qkeras.QConv2D(**config, kernel_quantizer=qkeras.quantized_bits(bits, 0, alpha=1),
                                  bias_quantizer=qkeras.quantized_bits(32, 0, alpha=1))
        if type(layer) is keras.layers.Dense:
            return qkeras.QDense(**config, kernel_quantizer=qkeras.quantized_bits(bits, 0, alpha=1),
                                 bias_quantizer=qkeras.quantized_bits(32, 0, alpha=1))
        if type(layer) is keras.layers.ReLU:
            return qkeras.QActivation(qkeras.quantized_relu(activation_bits), name=layer.name)
        return None

    return _rebuild(float_model, replace)


def _larq(float_model, weight_bits, activation_bits, training_steps):
    import larq

    def replace(layer, edge):
        config = layer.get_config()
        if type(layer) is keras.layers.Conv2D and not edge:
            return larq.layers.QuantConv2D(
                **config, kernel_quantizer=larq.quantizers.DoReFa(weight_bits, mode="weights"))
        if type(layer) is keras.layers.ReLU:
            return keras.layers.Activation(
                larq.quantizers.DoReFa(activation_bits, mode="activations"), name=layer.name)
        return None  # Larq has no 8-bit setting: the first conv and last dense stay float

    return _rebuild(float_model, replace)


def method(name):
    """The method of an identifier: a fixed one, or kquant techniques joined with '+'.

    Techniques build on the strongest plain QAT row, kquant-pact-calibrated, so each row
    measures what the technique adds to it, unless the identifier also names calibrated
    quantizer methods: "joint-distillation+direct-levels+channel-aware" trains the
    direct-levels+channel-aware model with joint distillation.

    Raises:
        ValueError: for identifiers that are neither.
    """
    if name in METHODS:
        return METHODS[name]
    parts = name.split("+")
    techniques = tuple(p for p in parts if p in kquant.techniques.names())
    base_name = "+".join(p for p in parts if p not in techniques) or "kquant-pact-calibrated"
    base = METHODS.get(base_name)
    if not techniques or base is None or not base.calibrate:
        calibrated = [m for m, chosen in METHODS.items() if chosen.calibrate]
        raise ValueError(f"Unknown method {name!r}: choose from {list(METHODS)}, or techniques "
                         f"{kquant.techniques.names()} joined with '+', optionally with "
                         f"one of {calibrated}.")
    return Method(name, base.build, base.export, f"on {base_name}", techniques, calibrate=True)


METHODS = {
    "kquant-dorefa": Method("kquant-dorefa", _kquant("clip"), tflite_export.convert),
    "kquant-pact": Method("kquant-pact", _kquant("pact"), tflite_export.convert),
    "kquant-pact-calibrated": Method(
        "kquant-pact-calibrated", _kquant("pact"), tflite_export.convert,
        "PACT clips and 8-bit ranges started from the float model (kquant.calibrate_ranges)",
        calibrate=True),
    # Batch-norm folding (issue 16) against plain QAT, per layer and per channel: 2 x 2 rows.
    "pact-calibrated-folded": Method(
        "pact-calibrated-folded", _kquant("pact", freeze_share=0.5),
        tflite_export.convert, "kquant-pact-calibrated with batch norm folded into the conv "
        "while training (the weight quantizer sees w * gamma / sigma), statistics frozen after "
        "half the steps", calibrate=True),
    "pact-calibrated-per-channel": Method(
        "pact-calibrated-per-channel", _kquant("pact", per_channel=True), tflite_export.convert,
        "kquant-pact-calibrated with DoReFa's weight statistics per output channel",
        calibrate=True),
    "pact-calibrated-per-channel-folded": Method(
        "pact-calibrated-per-channel-folded", _kquant("pact", per_channel=True, freeze_share=0.5),
        tflite_export.convert, "both of the above", calibrate=True),
    "lsq": Method(
        "lsq", _kquant("lsq", "lsq", per_channel=True), tflite_export.convert,
        "LSQ: learned steps for weights (per channel) and activations, started as the paper "
        "does from the float model", calibrate=True),
    "direct-levels": Method(
        "direct-levels", _kquant("pact", "direct-levels", per_channel=True), tflite_export.convert,
        "learnable levels per output channel, direct code updates; PACT activations; calibrated",
        calibrate=True),
    "channel-aware": Method(
        "channel-aware", _kquant("channel-aware"), tflite_export.convert,
        "DoReFa weights; channel-aware activation clips (mean statistic, EMA); calibrated",
        calibrate=True),
    "direct-levels+channel-aware": Method(
        "direct-levels+channel-aware", _kquant("channel-aware", "direct-levels", per_channel=True),
        tflite_export.convert, "both of the above; calibrated", calibrate=True),
    "ternary-pact-calibrated": Method(
        "ternary-pact-calibrated", _kquant("pact", "ternary", per_channel=True, weight_bits=2),
        tflite_export.convert, "plain QAT with ternary weights (TWN, per channel) and PACT "
        "activations; calibrated", calibrate=True),
    "tsq-step1": Method(
        "tsq-step1", _kquant("sparse", weight_bits=8), tflite_export.convert,
        "TSQ step 1 only: sparse activation codes, 8-bit weights (float in the paper)",
        calibrate=True),
    "tsq": Method(
        "tsq", _kquant("sparse", "ternary", per_channel=True, weight_bits=2), tflite_export.convert,
        "TSQ: code learning for all epochs, then ternary weights solved layer by layer",
        ("tsq",), calibrate=True),
    "tsq+finetune": Method(
        "tsq+finetune", _kquant("sparse", "ternary", per_channel=True, weight_bits=2),
        tflite_export.convert, "TSQ with the last quarter of the epochs fine-tuning the ternary "
        "network", ("tsq-finetune",), calibrate=True),
    "tfmot-8bit": Method("tfmot-8bit", _tfmot_8bit, _int8_converter,
                         "TF-MOT default scheme, always W8A8"),
    "qkeras": Method("qkeras", _qkeras, None,
                     "QKeras trains fake-quantized float layers; TFLite has no converter for its "
                     "low-bit grids (int8 post-training quantization would re-quantize them)"),
    "larq": Method("larq", _larq, None,
                   "Larq's converter (LCE) exports binary layers only; multi-bit DoReFa has no "
                   "integer TFLite export; first conv and last dense stay float"),
}
