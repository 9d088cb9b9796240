"""Joint knowledge distillation (technique "joint-distillation").

Zhuang, Liu, Tan, Liu, Reid, Shen, "Effective Training of Convolutional Neural Networks with
Low-bitwidth Weights and Activations", arXiv 1908.04680 (joint knowledge distillation; the
MSE guidance variant is from its CVPR 2018 version, "Towards Effective Low-bitwidth
Convolutional Neural Networks", arXiv 1711.00205).

A full-precision teacher and one or more low-precision students train together, each with its
own optimizer. Per step, with z the logits, T the temperature and sg the stop-gradient:

    student j: L_j = l_s * CE(z_j, y) + l_sk * T^2 * KL(softmax(sg(z_t)/T) || softmax(z_j/T))
    teacher:   L_t = l_t * CE(z_t, y) + l_tk * mean_j T^2 * KL(softmax(sg(z_j)/T) || softmax(z_t/T))

plus each network's own regularization losses (the losses live in `kquant.losses`). The MSE
variant replaces the KL terms by a guidance loss on the logits or on named feature maps of
equal shape.
"""
from typing import Optional, Sequence

from kquant import losses
from kquant.backend import keras, tf
from kquant.graph import ACTIVATIONS, activation_name, is_activation_layer
from kquant.quantizers.model_states import quantizer_states
from kquant.techniques.base import Technique
from kquant.techniques.cotraining import CoTraining
from kquant.techniques.registry import register


RELEASED_WEIGHTS = {  # the authors' released loss weights (mutual_kl, mutual_mse)
    "kl": dict(teacher=1.0, student=0.7, teacher_distillation=0.5, student_distillation=0.7),
    "mse": dict(teacher=1.0, student=0.3, teacher_distillation=0.1, student_distillation=0.1),
}


def clipped_teacher(float_model, clip=1.0):
    """A float copy of a model whose ReLU/ReLU6 activations are clipped to [0, clip].

    The teacher of students with a fixed activation range (DoReFa's [0, 1]) is full precision
    but sees activations on that range, so their logits are comparable.

    Args:
        float_model: a Sequential or functional float model.
        clip: upper end of the activation range.

    Returns:
        A new model with the same weights.
    """
    def clone(layer):
        config = layer.get_config()
        if is_activation_layer(layer):
            return keras.layers.ReLU(max_value=clip, name=layer.name)
        if activation_name(layer) in ACTIVATIONS:  # inline activation="relu" of a conv or dense
            config["activation"] = lambda x: tf.clip_by_value(x, 0.0, clip)
        return layer.__class__.from_config(config)

    teacher = keras.models.clone_model(float_model, clone_function=clone)
    teacher.set_weights(float_model.get_weights())
    return teacher


def teacher_for(student, float_model, clip=False):
    """The float teacher of joint distillation for `student`: a copy of the float model.

    The authors' released code does not clip the teacher's activations, and by default
    neither does kquant. With `clip`, students whose activation quantizers all share one
    fixed clip (DoReFa's [0, 1]) get a teacher clipped to it (`clipped_teacher`); clipping a
    ReLU-trained model to 1 costs it most of its accuracy (ResNet-20 CIFAR-10: 82% -> 20%).
    """
    clips = {s.quantizer.fixed_clip for s in quantizer_states(student) if s.role == "activation"}
    if clip and len(clips) == 1 and None not in clips:
        return clipped_teacher(float_model, clips.pop())
    teacher = keras.models.clone_model(float_model)
    teacher.set_weights(float_model.get_weights())
    return teacher


def _feature_model(model, layer_names):
    """The model with the outputs of `layer_names` (or TF-MOT's `quant_` wrappers) appended."""
    outputs = [model.output]
    for name in layer_names:
        layer = next((l for l in model.layers if l.name in (name, f"quant_{name}")), None)
        if layer is None:
            raise ValueError(f"JointDistillation: model {model.name!r} has no layer {name!r} for "
                             "feature guidance.")
        outputs.append(layer.output)
    return keras.Model(model.inputs, outputs)


class JointDistillation(CoTraining):
    """Trains a float teacher and low-precision students together with mutual distillation.

    Metrics are named "teacher_..." and "student_<j>_...". Afterwards each student is an
    ordinary kquant model that `tflite_export.convert` exports. The loss weights default to
    the authors' released values for the chosen guidance: with "kl" (`mutual_kl`) l_t = 1,
    l_s = 0.7, l_tk = 0.5, l_sk = 0.7; with "mse" (`mutual_mse`) l_t = 1, l_s = 0.3,
    l_tk = 0.1, l_sk = 0.1.

    Args:
        teacher: the full-precision model (`teacher_for(student, float_model)`).
        students: the low-precision models (from `kquant.quantize_model`).
        temperature: T.
        teacher_weight, student_weight: l_t and l_s, weights of the cross-entropy terms
            (None: the released value).
        teacher_distillation_weight, student_distillation_weight: l_tk and l_sk (None: the
            released value).
        guidance: "kl" (the default), or "mse" for the CVPR'18 guidance loss.
        feature_layers: with "mse", names of layers whose outputs are matched (the same name in
            teacher and students); None matches the logits.

    Raises:
        ValueError: for no students, T <= 0, an unknown guidance, or missing feature layers.
    """

    def __init__(self, teacher, students: Sequence[keras.Model], temperature=1.0,
                 teacher_weight=None, student_weight=None, teacher_distillation_weight=None,
                 student_distillation_weight=None, guidance="kl",
                 feature_layers: Optional[Sequence[str]] = None, **kwargs):
        if not students:
            raise ValueError("JointDistillation: give at least one student.")
        if temperature <= 0:
            raise ValueError(f"JointDistillation: temperature must be > 0, got {temperature!r}.")
        if guidance not in ("kl", "mse"):
            raise ValueError(f"JointDistillation: guidance must be 'kl' or 'mse', got {guidance!r}.")
        super().__init__({"teacher": teacher,
                          **{f"student_{j}": s for j, s in enumerate(students)}}, **kwargs)
        self.teacher, self.students = teacher, list(students)
        self.temperature = float(temperature)
        given = dict(teacher=teacher_weight, student=student_weight,
                     teacher_distillation=teacher_distillation_weight,
                     student_distillation=student_distillation_weight)
        self.loss_weights_ = {name: RELEASED_WEIGHTS[guidance][name] if value is None else value
                              for name, value in given.items()}
        self.guidance, self.feature_layers = guidance, list(feature_layers or [])
        self._views = [_feature_model(m, self.feature_layers) if self.feature_layers else m
                       for m in [teacher, *self.students]]

    def compile(self, teacher_optimizer, student_optimizers, **kwargs):
        """Sets one optimizer for the teacher and one per student.

        Raises:
            ValueError: if the number of student optimizers does not match the students.
        """
        if len(student_optimizers) != len(self.students):
            raise ValueError(f"JointDistillation.compile: {len(self.students)} students need as "
                             f"many optimizers, got {len(student_optimizers)}.")
        super().compile([teacher_optimizer, *student_optimizers], **kwargs)

    def _guidance(self, target, output):
        """Distillation term pulling `output` towards the constant `target` (lists of tensors)."""
        if self.guidance == "kl":
            return losses.distillation_kl(target[0], output[0], self.temperature)
        if self.feature_layers:
            return losses.guidance_mse(target[1:], output[1:])
        return losses.guidance_mse(target[:1], output[:1])

    def compute_losses(self, x, y, training=True):
        """Returns ([teacher loss, student losses...], [teacher logits, student logits...]).

        Each network's loss sees the other networks' outputs only through stop-gradient.
        """
        outputs = []
        for view in self._views:
            result = view(x, training=training)
            outputs.append(list(result) if isinstance(result, (list, tuple)) else [result])
        held = [[tf.stop_gradient(t) for t in out] for out in outputs]
        w = self.loss_weights_
        teacher_out, student_outs = outputs[0], outputs[1:]
        student_losses = [
            w["student"] * losses.classification_loss(y, out[0])
            + w["student_distillation"] * self._guidance(held[0], out)
            + losses.regularization(student)
            for student, out in zip(self.students, student_outs)]
        teacher_guidance = tf.add_n([self._guidance(h, teacher_out) for h in held[1:]]) / len(student_outs)
        teacher_loss = (w["teacher"] * losses.classification_loss(y, teacher_out[0])
                        + w["teacher_distillation"] * teacher_guidance
                        + losses.regularization(self.teacher))
        return [teacher_loss, *student_losses], [out[0] for out in outputs]


def _deploy_bits(model):
    """The lowest deployed activation bit-width of a model (its weights' when it has none)."""
    states = quantizer_states(model)
    for role in ("activation", "weight"):
        bits = [s.quantizer.deploy_bits for s in states if s.role == role]
        if bits:
            return min(bits)
    raise ValueError(f"joint-distillation: model {model.name!r} has no kquant quantizers.")


@register
class JointDistillationTechnique(Technique):
    """Joint distillation as a technique: the trained model is one student; students at the
    other `student_bits` (W = A) are built beside it with `Context.quantize`, all with one
    float teacher (`teacher_for`), each network with its own cosine SGD over the schedule.

    The teacher has its own optimizer settings: by default its learning rate is 0.2 times the
    students', the ratio of the authors' released fine-tuning configuration (teacher 0.001,
    students 0.005), since kquant's techniques start from a trained float model.

    Args:
        student_bits: bit-widths of the students; the released configuration trains a 2-bit
            and a 4-bit student with one teacher. The trained model is the student at its own
            bit-width, whether or not that is listed.
        temperature: T.
        guidance: "kl" or "mse" (each with the released loss weights).
        feature_layers: with "mse", layers whose outputs are matched.
        teacher_learning_rate_scale: the teacher's learning rate over the students'.
        clip_teacher: clip the teacher's activations to the students' fixed clip (see
            `teacher_for`); the released code does not.
    """

    name = "joint-distillation"
    needs = ("float_model", "quantize")
    trains_models = True

    def __init__(self, student_bits=(2, 4), temperature=1.0, guidance="kl", feature_layers=None,
                 teacher_learning_rate_scale=0.2, clip_teacher=False):
        if not teacher_learning_rate_scale > 0:
            raise ValueError("joint-distillation: teacher_learning_rate_scale must be > 0, got "
                             f"{teacher_learning_rate_scale!r}.")
        self.student_bits = [int(b) for b in student_bits]
        self.temperature, self.guidance, self.feature_layers = temperature, guidance, feature_layers
        self.teacher_learning_rate_scale = float(teacher_learning_rate_scale)
        self.clip_teacher = bool(clip_teacher)

    def build_trainer(self, model, context):
        own = _deploy_bits(model)
        students = [model] + [context.quantize(b) for b in dict.fromkeys(self.student_bits)
                              if b != own]
        teacher = teacher_for(model, context.float_model, self.clip_teacher)
        trainer = JointDistillation(teacher, students, temperature=self.temperature,
                                    guidance=self.guidance, feature_layers=self.feature_layers)
        schedule = context.schedule
        trainer.compile(
            schedule.optimizer(teacher, schedule.learning_rate * self.teacher_learning_rate_scale),
            [schedule.optimizer(student) for student in students])
        return trainer, students
