"""The full-precision auxiliary module (technique "auxiliary-module").

Zhuang, Liu, Tan, Shen, Reid, "Training Quantized Neural Networks with a Full-Precision
Auxiliary Module", CVPR 2020, arXiv 1903.11236. During training a full-precision path reads
the low-precision network at the output of each residual block (after the Add, before the
activation quantizer) and classifies on its own:

    h_0 = BN(Conv1x1(stem output))
    h_i = ReLU(D_i(h_{i-1}) + A_i(o_i))        A_i = Conv1x1(C_i -> C_i) + BN, the adaptor;
                                               D_i = strided Conv1x1 + BN where the shape
                                               changes, else the identity
    auxiliary logits = Dense(GlobalAveragePooling(h_n))
    loss = w_lp * CE(low-precision logits) + w_aux * CE(auxiliary logits)

The backbone gets gradients from both losses; the low-precision loss does not reach the
auxiliary path (it is not on its way). Afterwards the module is dropped: the model passed in
is the deployable one, unchanged in structure, with the trained weights.
"""
from typing import Optional, Sequence

from kquant import graph
from kquant.backend import keras
from kquant.techniques.base import Technique
from kquant.techniques.registry import register

LOW_PRECISION, AUXILIARY = "low_precision", "auxiliary"


def _attachment_shape(model, layer):
    shape = layer.output.shape
    if len(shape) != 4:
        raise ValueError(f"AuxiliaryModule: layer {graph.unwrap(layer).name!r} of model "
                         f"{model.name!r} has output shape {tuple(shape)}; the auxiliary path "
                         "attaches only to feature maps [batch, height, width, channels].")
    return shape


def _stride(previous, shape, name):
    """The stride of D_i taking feature maps of `previous` shape to `shape`."""
    strides = [p // s if s and p % s == 0 else None for p, s in zip(previous[1:3], shape[1:3])]
    if None in strides or strides[0] != strides[1]:
        raise ValueError(f"AuxiliaryModule: layer {name!r} outputs {tuple(shape[1:3])} maps, "
                         f"which a strided 1x1 conv cannot reach from the previous attachment's "
                         f"{tuple(previous[1:3])}; attach to layers whose maps shrink by an "
                         "integer factor.")
    return strides[0]


def _conv_bn(x, channels, stride, name):
    x = keras.layers.Conv2D(channels, 1, strides=stride, use_bias=False, name=f"{name}_conv")(x)
    return keras.layers.BatchNormalization(name=f"{name}_bn")(x)


def auxiliary_trainer(model, attach_to=None, stem=None, num_classes=None):
    """The training model: `model` and the auxiliary path, with outputs
    {"low_precision": model's logits, "auxiliary": the auxiliary logits}.

    Args:
        model: a functional kquant (or float) classifier with logits output.
        attach_to: layer names whose outputs feed the adaptors; None: every residual Add.
        stem: layer name whose output starts the path (h_0); None: the end of the first
            residual unit when attaching automatically, else no h_0 (h_1 = ReLU(A_1(o_1))).
        num_classes: classes of the auxiliary head; None: the model's output width.

    Returns:
        A functional Keras model sharing every layer of `model`.

    Raises:
        ValueError: for no attachment point, unknown layer names, or outputs that cannot be
            adapted (not feature maps, or maps that do not shrink by an integer factor).
    """
    if attach_to is None:
        attach_to = graph.residual_adds(model)
        if not attach_to:
            raise ValueError(f"AuxiliaryModule: model {model.name!r} has no residual Add layers to "
                             "attach to; give the layer names with attach_to=[...].")
        if stem is None:
            stem = graph.residual_units(model)[0][-1]
    names = list(attach_to) + ([stem] if stem else [])
    missing = [n for n in names if graph.find_layer(model, n) is None]
    if missing:
        raise ValueError(f"AuxiliaryModule: model {model.name!r} has no layers {missing} "
                         "(attach_to / stem).")
    layers = [graph.find_layer(model, n) for n in names]
    shapes = [_attachment_shape(model, layer) for layer in layers]
    # The backbone as one nested model with the attachment points as extra outputs, so the
    # walks over a model's quantizers and residual units see it as it is.
    backbone = keras.Model(model.inputs, [model.output] + [layer.output for layer in layers],
                           name=f"{model.name}_backbone")
    inputs = keras.Input(model.input_shape[1:], name="image")
    logits, *taps = backbone(inputs)
    h, previous = None, None
    if stem:
        h, previous = _conv_bn(taps[-1], shapes[0][-1], 1, "aux_stem"), shapes[-1]
    for i, (tap, shape) in enumerate(zip(taps[:len(attach_to)], shapes)):
        adapted = _conv_bn(tap, shape[-1], 1, f"aux_adaptor{i}")
        if h is not None:
            stride = _stride(previous, shape, names[i])
            if stride != 1 or h.shape[-1] != shape[-1]:
                h = _conv_bn(h, shape[-1], stride, f"aux_down{i}")
            adapted = keras.layers.Add(name=f"aux_add{i}")([h, adapted])
        h, previous = keras.layers.ReLU(name=f"aux_relu{i}")(adapted), shape
    h = keras.layers.GlobalAveragePooling2D(name="aux_pool")(h)
    auxiliary = keras.layers.Dense(num_classes or model.output.shape[-1], name=AUXILIARY)(h)
    low_precision = keras.layers.Activation("linear", name=LOW_PRECISION)(logits)
    return keras.Model(inputs, {LOW_PRECISION: low_precision, AUXILIARY: auxiliary},
                       name=f"{model.name}_with_auxiliary_module")


@register
class AuxiliaryModule(Technique):
    """Trains a kquant model with a full-precision auxiliary path that is dropped afterwards.

    `fit` trains the model `build_trainer` returns (both paths, one SGD optimizer with the
    context's cosine schedule); `evaluate` on it reports the loss and accuracy of both heads
    ("low_precision_accuracy", "auxiliary_accuracy"). `Training.deployable` is the model
    passed in, which exports like any kquant model. Combines with the callback techniques
    (two-stage, progressive-bits, stochastic-precision, ctmq-*) and with every quantizer
    recipe; not with joint distillation, which trains models of its own.

    Args:
        attach_to: layer names for the adaptors; None finds every residual Add
            (`kquant.graph.residual_adds`).
        stem: layer name whose output starts the path; see `auxiliary_trainer`.
        auxiliary_weight: weight of the auxiliary head's cross-entropy (the paper: 1).
        low_precision_weight: weight of the low-precision head's cross-entropy (the paper: 1).

    Raises:
        ValueError: for negative weights; at `prepare`, for attachment points that do not
            exist or cannot be adapted.
    """

    name = "auxiliary-module"
    trains_models = True

    def __init__(self, attach_to: Optional[Sequence[str]] = None, stem: Optional[str] = None,
                 auxiliary_weight: float = 1.0, low_precision_weight: float = 1.0):
        for argument, value in (("auxiliary_weight", auxiliary_weight),
                                ("low_precision_weight", low_precision_weight)):
            if not value >= 0:
                raise ValueError(f"AuxiliaryModule: {argument} must be >= 0, got {value!r}.")
        self.attach_to = None if attach_to is None else list(attach_to)
        self.stem = stem
        self.weights = {LOW_PRECISION: float(low_precision_weight),
                        AUXILIARY: float(auxiliary_weight)}

    def build_trainer(self, model, context):
        trainer = auxiliary_trainer(model, self.attach_to, self.stem)
        cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        trainer.compile(
            optimizer=context.schedule.optimizer(trainer),
            loss={LOW_PRECISION: cross_entropy, AUXILIARY: cross_entropy},
            loss_weights=self.weights,
            metrics={LOW_PRECISION: ["accuracy"], AUXILIARY: ["accuracy"]})
        return trainer, [model]
