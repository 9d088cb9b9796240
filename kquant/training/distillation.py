"""Joint knowledge distillation (Zhuang et al., arXiv 1908.04680 section 3.3; METHODS.md 1d).

A full-precision teacher and one or more low-precision students train together, each with its
own optimizer. Per step, with z the logits, T the temperature and sg the stop-gradient:

    student j: L_j = l_s * CE(z_j, y) + l_sk * T^2 * KL(softmax(sg(z_t)/T) || softmax(z_j/T))
    teacher:   L_t = l_t * CE(z_t, y) + l_tk * mean_j T^2 * KL(softmax(sg(z_j)/T) || softmax(z_t/T))

plus each network's own regularization losses. The CVPR'18 variant replaces the KL terms by an
MSE "guidance" loss, on the logits or on named feature maps of equal shape.
"""
from typing import Optional, Sequence

from kquant.backend import keras, tf


def clipped_teacher(float_model, clip=1.0):
    """A float copy of a model whose ReLU/ReLU6 activations are clipped to [0, clip].

    The teacher of joint distillation is full precision but sees activations on the range the
    students quantize (DoReFa's [0, 1] by default), so their logits are comparable.

    Args:
        float_model: a Sequential or functional float model.
        clip: upper end of the activation range.

    Returns:
        A new model with the same weights.
    """
    from kquant.configs import ACTIVATIONS, activation_name, is_activation_layer

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


def _kl(p_logits, q_logits, temperature):
    """T^2 * KL(softmax(p/T) || softmax(q/T)), averaged over the batch."""
    p = tf.nn.log_softmax(p_logits / temperature)
    q = tf.nn.log_softmax(q_logits / temperature)
    return temperature ** 2 * tf.reduce_mean(tf.reduce_sum(tf.exp(p) * (p - q), axis=-1))


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


class JointDistillation(keras.Model):
    """Trains a float teacher and low-precision students together with mutual distillation.

    `fit`, callbacks, checkpoints and progress bars work as usual; `evaluate` reports the
    teacher's and every student's loss and accuracy. Afterwards each student is an ordinary
    kquant model that `tflite_export.convert` exports.

    Args:
        teacher: the full-precision model, with activations clipped like the students'
            (`clipped_teacher(float_model)`).
        students: the low-precision models (from `kquant.quantize_model`).
        temperature: T.
        teacher_weight, student_weight: l_t and l_s, weights of the cross-entropy terms.
        teacher_distillation_weight, student_distillation_weight: l_tk and l_sk.
        guidance: "kl" (the default), or "mse" for the CVPR'18 guidance loss.
        feature_layers: with "mse", names of layers whose outputs are matched (the same name in
            teacher and students); None matches the logits.

    Raises:
        ValueError: for no students, T <= 0, an unknown guidance, or missing feature layers.
    """

    def __init__(self, teacher, students: Sequence[keras.Model], temperature=1.0,
                 teacher_weight=1.0, student_weight=0.7, teacher_distillation_weight=0.5,
                 student_distillation_weight=0.7, guidance="kl",
                 feature_layers: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(**kwargs)
        if not students:
            raise ValueError("JointDistillation: give at least one student.")
        if temperature <= 0:
            raise ValueError(f"JointDistillation: temperature must be > 0, got {temperature!r}.")
        if guidance not in ("kl", "mse"):
            raise ValueError(f"JointDistillation: guidance must be 'kl' or 'mse', got {guidance!r}.")
        self.teacher, self.students = teacher, list(students)
        self.temperature = float(temperature)
        self.weights_ = dict(teacher=teacher_weight, student=student_weight,
                             teacher_distillation=teacher_distillation_weight,
                             student_distillation=student_distillation_weight)
        self.guidance, self.feature_layers = guidance, list(feature_layers or [])
        self._views = [_feature_model(m, self.feature_layers) if self.feature_layers else m
                       for m in [teacher, *self.students]]
        self._cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.student_optimizers = []
        names = ["teacher"] + [f"student_{j}" for j in range(len(self.students))]
        self._trackers = {n: (keras.metrics.Mean(f"{n}_loss"),
                              keras.metrics.SparseCategoricalAccuracy(f"{n}_accuracy")) for n in names}

    def compile(self, teacher_optimizer, student_optimizers, **kwargs):
        """Sets one optimizer for the teacher and one per student.

        Raises:
            ValueError: if the number of student optimizers does not match the students.
        """
        if len(student_optimizers) != len(self.students):
            raise ValueError(f"JointDistillation.compile: {len(self.students)} students need as many "
                             f"optimizers, got {len(student_optimizers)}.")
        super().compile(optimizer=teacher_optimizer, **kwargs)
        self.student_optimizers = list(student_optimizers)

    @property
    def quantized_models(self):
        """The students: what precision callbacks steer (the teacher stays full precision)."""
        return self.students

    @property
    def metrics(self):
        return [metric for pair in self._trackers.values() for metric in pair]

    def call(self, inputs, training=False):
        return self.teacher(inputs, training=training)

    def _guidance(self, target, output):
        """Distillation term pulling `output` towards the constant `target` (lists of tensors)."""
        if self.guidance == "kl":
            return _kl(target[0], output[0], self.temperature)
        pairs = list(zip(target[1:], output[1:])) if self.feature_layers else [(target[0], output[0])]
        return tf.add_n([tf.reduce_mean(tf.square(t - o)) for t, o in pairs])

    def compute_losses(self, x, y, training=True):
        """Returns (teacher loss, [student losses], [teacher logits, student logits...]).

        Each network's loss sees the other networks' outputs only through stop-gradient.
        """
        outputs = []
        for view in self._views:
            result = view(x, training=training)
            outputs.append(list(result) if isinstance(result, (list, tuple)) else [result])
        held = [[tf.stop_gradient(t) for t in out] for out in outputs]
        w = self.weights_
        teacher_out, student_outs = outputs[0], outputs[1:]
        student_losses = [
            w["student"] * self._cross_entropy(y, out[0])
            + w["student_distillation"] * self._guidance(held[0], out) + tf.add_n(
                [tf.constant(0.0)] + student.losses)
            for student, out in zip(self.students, student_outs)]
        teacher_guidance = tf.add_n([self._guidance(h, teacher_out) for h in held[1:]]) / len(student_outs)
        teacher_loss = (w["teacher"] * self._cross_entropy(y, teacher_out[0])
                        + w["teacher_distillation"] * teacher_guidance
                        + tf.add_n([tf.constant(0.0)] + self.teacher.losses))
        return teacher_loss, student_losses, [out[0] for out in outputs]

    def _track(self, y, losses, logits):
        for (loss_metric, accuracy), loss, z in zip(self._trackers.values(), losses, logits):
            loss_metric.update_state(loss)
            accuracy.update_state(y, z)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data
        with tf.GradientTape(persistent=True) as tape:
            teacher_loss, student_losses, logits = self.compute_losses(x, y, training=True)
        pairs = [(self.optimizer, self.teacher, teacher_loss)] + list(
            zip(self.student_optimizers, self.students, student_losses))
        for optimizer, model, loss in pairs:
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        del tape
        return self._track(y, [teacher_loss, *student_losses], logits)

    def test_step(self, data):
        x, y = data
        teacher_loss, student_losses, logits = self.compute_losses(x, y, training=False)
        return self._track(y, [teacher_loss, *student_losses], logits)
