"""TSQ's sparse activations: zero up to a threshold eps, then levels D, 2D, 3D (Recipe name
"sparse"), with eps and D from closed forms for batch-normalised, unit-Gaussian inputs."""
import numpy as np

from kquant.backend import tf
from kquant.quantizers.base import ActivationGrid, ActivationQuantizer
from kquant.quantizers.rounding import steps, straight_through, uniform_activation
from kquant.serialization import serializable

RELEASED = dict(threshold=0.32, step=0.6487)  # the authors' AlexNet values (eps, D)
_GRID = np.linspace(-8.0, 8.0, 160001)
_DENSITY = np.exp(-_GRID ** 2 / 2) / np.sqrt(2 * np.pi)


def _quantize(x, threshold, step, levels, form):
    """q(x) of the two forms on numpy arrays (see `gaussian_step`)."""
    if form == "paper":  # eps, then 1.5D, 2.5D, ...
        codes = np.clip(np.floor(x / step + 0.5), 1, levels - 1)
    else:  # eps, eps + D, eps + 2D, ...
        codes = np.clip(np.ceil((x - threshold) / step), 1, levels - 1)
    return np.where(x > threshold, codes * step, 0.0)


def gaussian_threshold(sparsity):
    """eps = PhiInverse(0.5 + sparsity / 2): with N(0, 1) inputs, the share `sparsity` of the
    positive inputs falls at or below eps (the paper's sparse codes).

    Raises:
        ValueError: for a sparsity outside [0, 1).
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"gaussian_threshold: sparsity must be in [0, 1), got {sparsity!r}.")
    from scipy import stats

    return float(stats.norm.ppf(0.5 + sparsity / 2))


def gaussian_step(threshold, bits=2, form="shifted"):
    """D minimising E[(x - q(x))^2] for x ~ N(0, 1), given eps = `threshold`.

    Args:
        threshold: eps.
        bits: the code's bits (2^bits levels, 0 included).
        form: "paper" (thresholds eps, 1.5D, 2.5D: eps = 0 gives D = 0.5388, eps = 0.32 gives
            0.6488) or "shifted" (eps, eps + D, eps + 2D: the form `SparseActivationQuantizer`
            deploys; equal to "paper" where eps = D / 2).

    Returns:
        D as a float.
    """
    from scipy import optimize

    levels = 2 ** bits
    weights = _DENSITY * (_GRID[1] - _GRID[0])

    def error(step):
        return float(np.sum((_GRID - _quantize(_GRID, threshold, step, levels, form)) ** 2 * weights))

    return float(optimize.minimize_scalar(error, bounds=(1e-3, 4.0), method="bounded",
                                          options={"xatol": 1e-7}).x)


@serializable("sparse")
class SparseActivationQuantizer(ActivationQuantizer):
    """Sparse uniform codes: 0 for a <= eps, then D, 2D, ... up to (2^k - 1) D.

    Forward, with n = 2^k - 1:

        a_q = 0                                          for a < eps
        a_q = D * min(floor((a - eps) / D) + 1, n)       for a >= eps

    Backward: da_q/da = 1 on [0, n D], 0 outside (straight-through).

    Paper: Wang, Hu, Zhang, Zhang, Liu, Cheng, "Two-Step Quantization for Low-bit Neural
    Networks", CVPR 2018 (step 1, code learning). The paper's upper thresholds are 1.5D, 2.5D;
    kquant's are eps + D, eps + 2D, the same where eps = D / 2, as in the released values
    (eps = 0.32, D = 0.6487). Only this form can be held by one int8 requantization of the
    conv output (a grid of step D whose shift the converter folds into the conv bias), so the
    TFLite model computes exactly what Keras does; with a sparsity, D is fit for this form
    (`gaussian_step(eps, form="shifted")`). It takes the pre-activation and replaces the ReLU
    (zero below eps >= 0 includes it), so the shift can be folded. Switched off: relu(a)
    clipped at n D.

    Args:
        bits: k, 1 to 8.
        sparsity: the share of positive N(0, 1) inputs zeroed, in [0, 1); sets eps by
            `gaussian_threshold` and D by `gaussian_step`. None: `threshold` and `step`.
        threshold, step: eps and D when no sparsity is given (default: the released values).

    Raises:
        ValueError: for a sparsity outside [0, 1), a step <= 0 or a threshold < 0.
    """

    replaces_activation = True  # zero below eps >= 0 already does what the ReLU did

    def __init__(self, bits=2, sparsity=None, threshold=RELEASED["threshold"],
                 step=RELEASED["step"]):
        super().__init__(bits)
        self.sparsity = sparsity
        if sparsity is not None:
            threshold = gaussian_threshold(sparsity)
            step = gaussian_step(threshold, self.deploy_bits)
        if not step > 0 or not threshold >= 0:
            raise ValueError(f"SparseActivationQuantizer: step must be > 0 and threshold >= 0, "
                             f"got step={step!r}, threshold={threshold!r}.")
        self.threshold, self.step = float(threshold), float(step)

    @property
    def input_shift(self):
        return self.step / 2 - self.threshold

    def clip(self, weights):
        return self.step * steps(weights["bits"])

    def quantize(self, x, weights):
        top, bits = self.clip(weights), tf.convert_to_tensor(weights["bits"])
        shift = self.input_shift  # folded into the conv bias by the converter
        return straight_through(
            lambda a: uniform_activation(a + shift, top, bits, rectify=True,
                                         standalone=self.standalone), x, 0.0, top)

    def activation_grid(self, weights):
        n = float(steps(weights["bits"]))
        return ActivationGrid(step=self.step, low=0.0, high=self.step * n, levels=int(n) + 1)

    def get_config(self):
        return {**super().get_config(), "sparsity": self.sparsity, "threshold": self.threshold,
                "step": self.step}
