"""TSQ inside one `fit` (techniques "tsq" and "tsq-finetune").

Wang, Hu, Zhang, Zhang, Liu, Cheng, "Two-Step Quantization for Low-bit Neural Networks",
CVPR 2018. Step 1, code learning: the model trains with full-precision weights (its weight
quantizers switched off) and its low-bit activation codes (the sparse quantizer, Recipe
activation_quantizer="sparse"). Step 2, transformation learning: layer by layer, in order, the
ternary weights and per-channel scales that best reproduce the step-1 network's codes from
the inputs the already ternarised earlier layers give (`tsq_solver.solve_ternary`) are written
into the kernels, and the layer's ternary quantizer is switched on. Step 2 runs when the code
learning ends: at the end of `fit`, or, with a fine-tune share, at the first fine-tune epoch,
after which everything trains quantized.
"""
import time
from typing import Dict

import numpy as np

from kquant import folding, graph, precision
from kquant.backend import keras, tf
from kquant.batches import first_examples
from kquant.techniques.base import PrecisionSchedule
from kquant.techniques.registry import register
from kquant.techniques.tsq_solver import StepFunction, solve_ternary


def step_function(state):
    """The activation quantizer of `state` as the solver's piecewise constant function: levels
    on its grid, thresholds half a step above each level, less its input shift."""
    grid = state.quantizer.activation_grid(state.variables)
    shift = state.quantizer.input_shift
    levels = [grid.low + k * grid.step for k in range(grid.levels)]
    thresholds = [level + grid.step / 2 - shift for level in levels[:-1]]
    return StepFunction(thresholds, levels)


def _follow(model, layer):
    """From a weight layer to the activation that codes its output: (batch norm or None, the
    other input of an Add or None, the activation wrapper)."""
    consumers = graph.consumers(model)
    nxt = consumers.get(layer.name, [])
    batch_norm = other = None
    if len(nxt) == 1 and isinstance(graph.unwrap(nxt[0]), keras.layers.BatchNormalization):
        batch_norm, nxt = nxt[0], consumers.get(nxt[0].name, [])
    if len(nxt) == 1 and isinstance(graph.unwrap(nxt[0]), keras.layers.Add):
        add = nxt[0]
        inputs = add.input if isinstance(add.input, list) else [add.input]
        if len(inputs) != 2:
            return None
        source = (batch_norm or layer).output
        other = next(t for t in inputs if t is not source)
        nxt = consumers.get(add.name, [])
    if len(nxt) == 1 and getattr(nxt[0], "_output_quantizers", None):
        return batch_norm, other, nxt[0]
    return None


@register
class TwoStepQuantization(PrecisionSchedule):
    """TSQ: code learning with float weights, then ternary weights solved layer by layer.

    The layers solved are those whose weight quantizer has three levels (Recipe
    weight_quantizer="ternary"); each must be a Conv2D followed (through an optional batch norm
    and an optional residual Add) by an activation quantizer. Sampling: `images` images from the
    context's data, `positions` output positions from each (N = images * positions samples per
    layer; memory about 8 * N * fan-in bytes per layer, 38 MB for ResNet-20's widest layers at
    the defaults). A progress bar shows each layer's objective before and after;
    `self.report` keeps {layer: (objective before, after, seconds)}.

    kquant's choices (the paper leaves them open): lambda starts at 1 and doubles over 4
    rounds of 3 alternations; the step-1 network's batch norm (inference statistics) is the
    affine map after each conv, and an Add's other input, as the current network computes it,
    is part of the shift; without a fine-tune the code learning takes the whole fit.

    Args:
        finetune_share: share of the epochs, after step 2, that fine-tune the whole quantized
            network with `fit` (0: none); in [0, 1).
        images: images sampled for step 2.
        positions: output positions sampled per image and layer.
        rounds, iterations, lam: the solver's schedule (`solve_ternary`).
        seed: the sampling seed.

    Raises:
        ValueError: for a share outside [0, 1) or non-positive sample sizes; when step 2
            starts, for layers the solver cannot handle or too few samples for a fan-in.
    """

    name = "tsq"
    needs = ("data",)
    default_finetune_share = 0.0

    def __init__(self, finetune_share=None, images=256, positions=32, rounds=4, iterations=3,
                 lam=1.0, seed=0):
        super().__init__()
        share = self.default_finetune_share if finetune_share is None else finetune_share
        if not 0 <= share < 1:
            raise ValueError(f"{type(self).__name__}: finetune_share must be in [0, 1), got "
                             f"{share!r}.")
        if images < 1 or positions < 1:
            raise ValueError(f"{type(self).__name__}: images and positions must be >= 1, got "
                             f"{images!r} and {positions!r}.")
        self.finetune_share, self.images, self.positions = float(share), images, positions
        self.solver = dict(rounds=rounds, iterations=iterations, lam=lam)
        self.seed = seed
        self.data = None
        self.report: Dict[str, tuple] = {}

    def callbacks(self, model, context):
        self.data = context.data
        return [self]

    def _targets(self, model):
        return [s for s in precision.quantizer_states(model)
                if s.role == "weight" and s.quantizer.level_count(s.variables) == 3]

    def first_finetune_epoch(self, epochs):
        """The epoch step 2 runs at; `epochs` when it runs at the end of `fit`."""
        return epochs - round(self.finetune_share * epochs) if self.finetune_share else epochs

    def learning_rate_restarts(self, model, schedule):
        epoch = self.first_finetune_epoch(schedule.epochs)
        return [epoch * schedule.steps_per_epoch] if epoch < schedule.epochs else []

    def on_train_begin(self, logs=None):
        if not self._targets(self.model):
            raise ValueError("TwoStepQuantization: the model has no ternary weight quantizers; "
                             "quantize it with Recipe(weight_quantizer='ternary').")
        if folding.holds_folded_layers(self.model):
            # Step 2 solves for the kernel before its batch norm's affine transform.
            raise ValueError("TwoStepQuantization: the model has batch norms folded into its "
                             "convs; TSQ needs them as layers of their own: quantize it with "
                             "Recipe(fold_batch_norm=False).")
        self._boundary = self.first_finetune_epoch(self.params["epochs"])

    def on_epoch_begin(self, epoch, logs=None):
        coding = epoch < self._boundary
        precision.assign(self._targets(self.model), enabled=not coding, source=self.name)
        if epoch == self._boundary and not self.report:
            self.solve(self.model)

    def on_train_end(self, logs=None):
        if self._boundary >= self.params["epochs"] and not self.report:
            self.solve(self.model)

    def _sample(self, model):
        if self.data is None:
            raise ValueError("TwoStepQuantization: step 2 samples images from the training data; "
                             "pass Context(data=...) to kquant.techniques.prepare.")
        return first_examples(self.data, model.input_shape, self.images, "TwoStepQuantization",
                              "Context(data=...)")[0]

    def solve(self, model):
        """Step 2 on `model` (its weight quantizers off, as code learning leaves them).

        Raises:
            ValueError: for layers the solver cannot handle.
        """
        targets = self._targets(model)
        chains = {}
        for state in targets:
            layer = graph.find_layer(model, state.layer)
            chain = _follow(model, layer)
            if type(graph.unwrap(layer)) is not keras.layers.Conv2D or chain is None or \
                    graph.unwrap(layer).dilation_rate != (1, 1):
                raise ValueError(f"TwoStepQuantization: layer {state.layer!r} "
                                 f"({type(graph.unwrap(layer)).__name__}) is not a Conv2D "
                                 "(dilation 1) followed by [batch norm,] [Add,] an activation "
                                 "quantizer; the solver handles only those.")
            chains[state.layer] = (layer, *chain)
        images = self._sample(model)
        rng = np.random.default_rng(self.seed)
        precision.assign(targets, enabled=False, source=self.name)
        codes = {name: self._predict(model, chain[3].output, images)
                 for name, chain in chains.items()}  # the step-1 network's codes
        progress = keras.utils.Progbar(len(targets), unit_name="layer")
        for i, state in enumerate(targets):
            layer, batch_norm, other, activation = chains[state.layer]
            started = time.time()
            inner = graph.unwrap(layer)
            wanted = [layer.input] + ([other] if other is not None else [])
            inputs, *rest = self._predict(model, wanted, images)
            patches = tf.image.extract_patches(
                inputs, [1, *inner.kernel_size, 1], [1, *inner.strides, 1], [1, 1, 1, 1],
                inner.padding.upper()).numpy()
            y = codes[state.layer]
            chosen = rng.integers(0, patches.shape[1] * patches.shape[2],
                                  size=(len(images), self.positions))
            take = lambda a: np.take_along_axis(  # noqa: E731
                a.reshape(len(images), -1, a.shape[-1]), chosen[..., None], axis=1).reshape(
                    -1, a.shape[-1])
            x = take(patches).T
            if x.shape[1] < x.shape[0]:
                raise ValueError(f"TwoStepQuantization: layer {state.layer!r} has a fan-in of "
                                 f"{x.shape[0]} but images * positions = {x.shape[1]} samples; "
                                 "sample at least as many (images=..., positions=...).")
            scale, shift = self._affine(batch_norm, state.kernel.shape[-1])
            if rest:
                shift = shift + take(rest[0])
            kernel = state.kernel.numpy()
            solution = solve_ternary(x, take(y), step_function(
                next(s for s in precision.quantizer_states(model)
                     if s.layer == graph.unwrap(activation).name and s.role == "activation")),
                kernel.reshape(-1, kernel.shape[-1]), scale, shift, **self.solver)
            state.kernel.assign((solution.ternary * solution.alpha).reshape(kernel.shape))
            precision.assign([state], enabled=True, source=self.name)
            before, after = solution.reconstruction
            self.report[state.layer] = (before, after, time.time() - started)
            progress.update(i + 1, [("error before", before), ("error after", after)])

    def summary(self):
        """{"tsq_layers": {layer: [error before, error after, solver seconds]}}."""
        return {"tsq_layers": {k: [round(float(v), 4) for v in values]
                               for k, values in self.report.items()}}

    @staticmethod
    def _predict(model, tensors, images):
        single = not isinstance(tensors, list)
        probe = keras.Model(model.inputs, tensors)
        outputs = probe.predict(images, batch_size=64, verbose=0)
        return outputs if single or isinstance(outputs, list) else [outputs]

    @staticmethod
    def _affine(batch_norm, channels):
        """(scale, shift) of a batch norm in inference, or (1, 0)."""
        if batch_norm is None:
            return np.ones(channels), np.zeros(channels)
        inner = graph.unwrap(batch_norm)
        gamma = inner.gamma.numpy() if inner.scale else np.ones(channels)
        beta = inner.beta.numpy() if inner.center else np.zeros(channels)
        scale = gamma / np.sqrt(inner.moving_variance.numpy() + inner.epsilon)
        return scale, beta - inner.moving_mean.numpy() * scale


@register
class TwoStepQuantizationFinetune(TwoStepQuantization):
    """`TwoStepQuantization` whose last quarter of the epochs fine-tunes the ternary network
    (the paper's optional fine-tune)."""

    name = "tsq-finetune"
    default_finetune_share = 0.25
