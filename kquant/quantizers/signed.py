"""Symmetric activations on [-c, c], down to the sign of binary networks (Recipe name "sign")."""
from kquant.backend import tf
from kquant.quantizers.base import ActivationGrid, ActivationQuantizer
from kquant.quantizers.rounding import (requantization_range, steps, straight_through,
                                        uniform_activation)
from kquant.serialization import serializable

MAX_SIGNED_BITS = 7  # the levels are odd multiples of c / n, and int8 holds them up to n = 127


@serializable("sign")
class SignActivationQuantizer(ActivationQuantizer):
    """Activations on 2^k levels spread evenly over [-c, c]; at 1 bit, c * sign(a).

    Forward, with n = 2^k - 1:

        a_q = c * (2 * round(n * (clip(a, -c, c) + c) / (2c)) / n - 1)
        a_q = c * sign(a) = +c for a >= 0, -c for a < 0                  for k = 1

    Backward: da_q/da = 1 for |a| <= c, 0 outside (the clipped straight-through estimator).

    It replaces the ReLU it stands for (`replaces_activation`): `kquant.quantize_model` makes
    that layer linear, so the quantizer sees the pre-activation and the network has no ReLU,
    as binary networks built on sign activations do. Switched off: clip(a, -c, c).

    Papers: Hubara, Courbariaux, Soudry, El-Yaniv, Bengio, "Binarized Neural Networks",
    NeurIPS 2016 (sign forward, gradient 1 for |a| <= 1); Rastegari, Ordonez, Redmon,
    Farhadi, "XNOR-Net", arXiv 1603.05279.

    kquant's choices: c is fixed (a batch norm usually follows the next conv, which makes the
    scale of the two levels immaterial). In TFLite the levels sit on an int8 tensor of scale
    c / n with codes -n, -n + 2, ..., n (a grid of step 2c / n has no zero, which TFLite
    tensors must hold); the shift by c is folded by the converter into the bias of the conv
    before it, so a conv-BN-sign block costs one extra elementwise SUB.

    Args:
        bits: bit-width k, 1 to 7.
        clip: c, the magnitude of the outermost levels, > 0.

    Raises:
        ValueError: for bits outside 1 to 7 or clip <= 0.
    """

    replaces_activation = True

    def __init__(self, bits=1, clip=1.0):
        super().__init__(bits)
        if self.deploy_bits > MAX_SIGNED_BITS:
            raise ValueError(f"SignActivationQuantizer: bits must be an integer from 1 to "
                             f"{MAX_SIGNED_BITS}, got {bits!r}.")
        if not clip > 0:
            raise ValueError(f"SignActivationQuantizer: clip must be > 0, got {clip!r}.")
        self.fixed_clip = float(clip)

    @property
    def input_shift(self):
        return self.fixed_clip

    def quantize(self, x, weights):
        c, n = self.fixed_clip, steps(weights["bits"])

        def symmetric(a):
            # Rounding where the accumulator is requantized (grid 2c / n from a + c, shift
            # folded into the conv bias), then relabelled onto codes of scale c / n.
            u = uniform_activation(a + c, 2.0 * c, weights["bits"], rectify=True)
            return tf.quantization.fake_quant_with_min_max_vars(u - c, *self._codes_range(n))

        return straight_through(symmetric, x, -c, c)

    def _codes_range(self, n):
        return -128.0 * self.fixed_clip / n, 127.0 * self.fixed_clip / n

    def requantization_range(self, weights):
        """The grid of step 2c / n on [0, 2c] that a + c is requantized onto."""
        low, high = requantization_range(2.0 * self.fixed_clip, weights["bits"])
        return float(low.numpy()), float(high.numpy())

    def relabel(self, weights):
        """a_q = u - c, onto int8 codes of scale c / n."""
        low, high = self._codes_range(steps(weights["bits"]))
        return [(self.fixed_clip, True, (float(low.numpy()), float(high.numpy())))]

    def bypass(self, x, weights):
        return tf.clip_by_value(x, -self.fixed_clip, self.fixed_clip)

    def activation_grid(self, weights):
        """Levels every 2 steps of c / n, the int8 tensor's scale, from -c to c."""
        n = float(steps(weights["bits"]))
        return ActivationGrid(step=self.fixed_clip / n, low=-self.fixed_clip,
                              high=self.fixed_clip, levels=int(n) + 1)

    def get_config(self):
        return {**super().get_config(), "clip": self.fixed_clip}
