"""Every kquant quantizer a model holds, with its variables: the one walk over TF-MOT wrappers."""
import dataclasses
from typing import Dict, List, Optional

from kquant.backend import keras, tf, tfmot
from kquant.quantizers.base import LowBitQuantizer


@dataclasses.dataclass
class QuantizerState:
    """One low-bit quantizer of a model and its variables.

    Attributes:
        layer: name of the quantized (float) layer.
        role: "weight" or "activation".
        quantizer: the `LowBitQuantizer`.
        variables: its variables, as its `build` returned them.
        kernel: the kernel variable it quantizes (weights only, else None).
    """

    layer: str
    role: str
    quantizer: LowBitQuantizer
    variables: Dict[str, tf.Variable]
    kernel: Optional[tf.Variable] = None

    @property
    def bits(self):
        """The bit-width variable."""
        return self.variables["bits"]

    @property
    def enabled(self):
        """The on/off variable (1.0 on, 0.0 off)."""
        return self.variables["enabled"]


def quantize_wrappers(model):
    """Every TF-MOT wrapper of a model, in layer order, each once.

    Models inside the model (also the networks of a model that trains several, whose float
    networks hold no wrappers) are searched too.
    """
    seen, found = set(), []

    def walk(container):
        for layer in container.layers:
            if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2):
                if id(layer) not in seen:
                    seen.add(id(layer))
                    found.append(layer)
            elif isinstance(layer, keras.Model):
                walk(layer)

    walk(model)
    return found


def quantized_models(model):
    """The models whose own layers are a model's TF-MOT wrappers: `model` itself when it is a
    quantized model, else the quantized networks inside it (each once)."""
    seen, found = set(), []

    def walk(container):
        own = {id(l) for l in container.layers
               if isinstance(l, tfmot.quantization.keras.QuantizeWrapperV2)}
        if own and not own <= seen:
            seen.update(own)
            found.append(container)
        for layer in container.layers:
            if isinstance(layer, keras.Model) and not own:
                walk(layer)

    walk(model)
    return found


def quantizer_variables(model):
    """The trainable variables of a model's quantizers (clips, steps, offsets, levels), low-bit
    or not, as their `build`s returned them."""
    found = []
    for wrapper in quantize_wrappers(model):
        # pylint: disable=protected-access
        built = [variables for _, _, variables in wrapper._weight_vars]
        built.append(getattr(wrapper, "_output_quantizer_vars", {}))
        found += [v for variables in built for v in variables.values()
                  if isinstance(v, tf.Variable) and v.trainable]
    return found


def quantizer_states(model) -> List[QuantizerState]:
    """Lists every low-bit quantizer of a model (see `quantize_wrappers`), in layer order."""
    states = []
    for layer in quantize_wrappers(model):
        for kernel, quantizer, variables in layer._weight_vars:  # pylint: disable=protected-access
            if isinstance(quantizer, LowBitQuantizer):
                states.append(QuantizerState(layer.layer.name, "weight", quantizer, variables, kernel))
        for quantizer in layer._output_quantizers:  # pylint: disable=protected-access
            if isinstance(quantizer, LowBitQuantizer):
                variables = layer._output_quantizer_vars  # pylint: disable=protected-access
                states.append(QuantizerState(layer.layer.name, "activation", quantizer, variables))
    return states


def training_callbacks(model):
    """The Keras callbacks a model's quantizers ask `fit` for, one per callback class."""
    callbacks = {}
    for state in quantizer_states(model):
        for callback in state.quantizer.training_callbacks():
            callbacks.setdefault(type(callback), callback)
    return list(callbacks.values())
