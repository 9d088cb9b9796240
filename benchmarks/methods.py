"""Each benchmarked method: how it turns the float model into the model it trains and exports.

kquant methods go through `kquant.quantize_model`; peers (TF-MOT's schemes, QKeras, Larq, Sony's
MCT) are configured as their own documentation recommends and rebuilt from the same float model
with the same weights. Peers are imported only when asked for, so kquant never depends on them;
each peer row records its exact configuration (`Method.configuration`).
"""
import dataclasses
import json
from typing import Callable, Optional

import kquant
import tflite_export
from kquant.backend import keras, tf, tfmot


@dataclasses.dataclass
class Method:
    """A benchmark method: identifier, model builder, TFLite exporter (None: no integer export)."""

    name: str
    build: Callable  # (float_model, weight_bits, activation_bits, training_steps) -> Keras model
    export: Optional[Callable]  # (model, representative) -> tflite bytes
    note: str = ""
    techniques: tuple = ()  # kquant training techniques (see kquant.techniques)
    calibrate: bool = False  # start learned ranges from the float model (kquant.calibrate_ranges)
    configuration: Optional[Callable] = None  # (weight_bits, activation_bits) -> a peer's setup
    fixed_bits: Optional[tuple] = None  # (weight, activation) bits whatever --bits says

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


class Unavailable(Exception):
    """A peer cannot build or export at these settings here; the message, kept in the record, says
    why."""


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


def _float(float_model, weight_bits, activation_bits, training_steps):
    return float_model


def _tfmot_8bit(float_model, weight_bits, activation_bits, training_steps):
    return tfmot.quantization.keras.quantize_model(float_model)


def _int8_converter(model, representative):
    return tflite_export.int8_converter(model, representative).convert()


def _tfmot_n_bit(float_model, weight_bits, activation_bits, training_steps):
    nbit = tfmot.quantization.keras.experimental.default_n_bit
    annotated = tfmot.quantization.keras.quantize_annotate_model(float_model)
    return tfmot.quantization.keras.quantize_apply(annotated, nbit.DefaultNBitQuantizeScheme(
        num_bits_weight=weight_bits, num_bits_activation=activation_bits))


def _tfmot_converter(model, representative):
    """TF-MOT's documented export of a QAT model: the converter with Optimize.DEFAULT.

    Raises:
        Unavailable: with the converter's first error line, when it refuses the model.
    """
    from tensorflow.lite.python.convert_phase import ConverterError

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return converter.convert()
    except ConverterError as error:
        first = next((line for line in str(error).splitlines() if "error:" in line), str(error))
        raise Unavailable("the TFLite converter refuses it: "
                          + first[first.index("error:"):][:300]) from None


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


def _qkeras_setup(weight_bits, activation_bits):
    """QKeras's documented choices, as its quantizer strings: weights quantized_bits with a
    power-of-two scale per output channel fit to the weights (alpha="auto_po2"), activations
    quantized_relu with the integer bits of AutoQKeras's default table (4 bits: 2, i.e.
    [0, 4)); at 2 bits, 1 integer bit ([0, 2)); at 1 bit, the table's binary(alpha="auto_po2")
    weights and binary activations. The first conv and last dense at 8 bits, as kquant's;
    biases at 32 bits (int32 in TFLite, as kquant's)."""
    kernel = ("binary(alpha='auto_po2')" if weight_bits == 1
              else f"quantized_bits({weight_bits},0,alpha='auto_po2')")
    activation = ("binary" if activation_bits == 1 else
                  f"quantized_relu({activation_bits},{ {2: 1, 3: 1, 4: 2}.get(activation_bits, 2)})")
    return dict(kernel=kernel, edge_kernel="quantized_bits(8,0,alpha='auto_po2')",
                bias="quantized_bits(32,0,alpha=1)", activation=activation)


def _qkeras(float_model, weight_bits, activation_bits, training_steps):
    import qkeras

    setup = _qkeras_setup(weight_bits, activation_bits)
    quantizer = qkeras.get_quantizer

    def replace(layer, edge):
        config = layer.get_config()
        layer_type = {keras.layers.Conv2D: qkeras.QConv2D, keras.layers.Dense: qkeras.QDense}.get(
            type(layer))
        if layer_type is not None:
            return layer_type(**config, bias_quantizer=quantizer(setup["bias"]),
                              kernel_quantizer=quantizer(setup["edge_kernel" if edge else "kernel"]))
        if type(layer) is keras.layers.ReLU:
            return qkeras.QActivation(quantizer(setup["activation"]), name=layer.name)
        return None

    return _rebuild(float_model, replace)


def _larq_setup(weight_bits, activation_bits):
    """Larq's documented choices, as QuantConv2D arguments and what replaces each ReLU: at 1 bit
    a binarized network (ste_sign on each conv's input and kernel, weight_clip, the ReLUs
    removed so the sign sees negative values); above, its one multi-bit quantizer DoReFa for
    weights (with the weight_clip its docstring asks for) and activations (clip [0, 1]). Larq
    has no 8-bit setting: the first conv and last dense stay float.

    Raises:
        Unavailable: for binary weights with multi-bit activations or the reverse.
    """
    import larq

    if weight_bits == activation_bits == 1:
        return dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                    kernel_constraint="weight_clip"), "linear"
    if 1 in (weight_bits, activation_bits):
        raise Unavailable("Larq documents no setting mixing binary and multi-bit")
    return dict(kernel_quantizer=larq.quantizers.DoReFa(weight_bits, mode="weights"),
                kernel_constraint="weight_clip"), larq.quantizers.DoReFa(activation_bits,
                                                                          mode="activations")


def _larq_configuration(weight_bits, activation_bits):
    import larq

    conv, relu = _larq_setup(weight_bits, activation_bits)
    text = lambda v: v if isinstance(v, str) else json.dumps(larq.quantizers.serialize(v))
    return (f"QuantConv2D({', '.join(f'{k}={text(v)}' for k, v in conv.items())}); "
            f"each ReLU -> {text(relu)}; first conv and last dense float")


def _larq(float_model, weight_bits, activation_bits, training_steps):
    import larq

    conv, relu = _larq_setup(weight_bits, activation_bits)

    def replace(layer, edge):
        if type(layer) is keras.layers.Conv2D and not edge:
            return larq.layers.QuantConv2D(**{**layer.get_config(), **conv})
        if type(layer) is keras.layers.ReLU:
            return keras.layers.Activation(relu, name=layer.name)
        return None

    return _rebuild(float_model, replace)


def _mct(float_model, weight_bits, activation_bits, training_steps):
    """Sony's model-compression-toolkit QAT, where its Keras API runs beside this TensorFlow.

    Raises:
        ImportError: if it is not installed (the row is skipped).
        Unavailable: saying why it does not run here.
    """
    import importlib.metadata

    from model_compression_toolkit import verify_packages

    version = importlib.metadata.version("model-compression-toolkit")
    if not verify_packages.FOUND_TF:
        raise Unavailable(f"model-compression-toolkit {version} installs beside TensorFlow "
                          f"{tf.__version__} but switches its Keras API off for TensorFlow >= "
                          f"2.16 (model_compression_toolkit/verify_packages.py)")
    raise Unavailable(f"model-compression-toolkit {version} runs its Keras API here: its QAT "
                      "builder is not written yet")


def method(name):
    """The method of an identifier: a fixed one, or kquant techniques joined with '+'.

    Techniques build on plain QAT, kquant-pact-calibrated, so each row measures what the
    technique adds to it, unless the identifier also names a calibrated quantizer method:
    "joint-distillation+direct-levels+channel-aware" trains the direct-levels+channel-aware
    model with joint distillation, "two-stage+pact-calibrated-per-channel" the per-channel one.

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
    # Batch-norm folding (issue 16), on per-channel DoReFa (per-layer DoReFa cannot fold: its
    # folded W2A2 row collapsed to 10.8%, and `fold_refusal` now refuses it).
    "pact-calibrated-per-channel": Method(
        "pact-calibrated-per-channel", _kquant("pact", per_channel=True), tflite_export.convert,
        "kquant-pact-calibrated with DoReFa's weight statistics per output channel",
        calibrate=True),
    "pact-calibrated-per-channel-folded": Method(
        "pact-calibrated-per-channel-folded", _kquant("pact", per_channel=True, freeze_share=0.5),
        tflite_export.convert, "pact-calibrated-per-channel with batch norm folded into the "
        "conv while training (the weight quantizer sees w * gamma / sigma), statistics frozen "
        "after half the steps", calibrate=True),
    "lsq": Method(
        "lsq", _kquant("lsq", "lsq", per_channel=True), tflite_export.convert,
        "LSQ: learned steps for weights (per channel) and activations, started as the paper "
        "does from the float model", calibrate=True),
    "lsq-plus": Method(  # "+" joins techniques in method names
        "lsq-plus", _kquant("lsq+", "lsq", per_channel=True), tflite_export.convert,
        "LSQ weights (per channel); LSQ+ activations: learned step and offset in place of the "
        "ReLU, MSE start from the float model", calibrate=True),
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
    "float-finetuned": Method(
        "float-finetuned", _float, None, "the float model trained the same epochs on the same "
        "schedule as the QAT rows: the reference their drop is measured against where it ran",
        fixed_bits=(32, 32)),
    "tfmot-8bit": Method("tfmot-8bit", _tfmot_8bit, _int8_converter,
                         "TF-MOT default scheme, always W8A8", fixed_bits=(8, 8)),
    "tfmot-nbit": Method(
        "tfmot-nbit", _tfmot_n_bit, _tfmot_converter, "TF-MOT's experimental n-bit scheme "
        "(default_n_bit.DefaultNBitQuantizeScheme), exported as TF-MOT documents",
        configuration=lambda w, a: f"quantize_apply(quantize_annotate_model(model), "
                                   f"DefaultNBitQuantizeScheme(num_bits_weight={w}, "
                                   f"num_bits_activation={a}))"),
    "qkeras": Method(
        "qkeras", _qkeras, None, "QKeras trains fake-quantized float layers; TFLite has no "
        "converter for its low-bit grids (int8 post-training quantization would re-quantize "
        "them)", configuration=lambda w, a: json.dumps(_qkeras_setup(w, a))),
    "larq": Method(
        "larq", _larq, None, "Larq's converter (LCE) exports binary layers only, for ARM; "
        "multi-bit DoReFa has no integer TFLite export", configuration=_larq_configuration),
    "mct-qat": Method("mct-qat", _mct, None, "Sony's model-compression-toolkit QAT"),
}
