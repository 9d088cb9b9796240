"""What a quantized model costs: bits, memory, MACs and bit-operations per layer, against float
(as Larq's model summary reports them), and a plot of each layer's learned grid."""
import numpy as np

from kquant import graph
from kquant.backend import keras
from kquant.quantizers.model_states import quantize_wrappers, quantizer_states

FLOAT_BITS = 32


def _macs(layer, output_shape):
    """Multiply-accumulates of one example through a conv, depthwise or dense layer."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        per_output = int(np.prod(layer.depthwise_kernel.shape[:2]))  # k_h x k_w x 1
    else:
        per_output = int(np.prod(layer.kernel.shape[:-1]))
    return per_output * int(np.prod(output_shape[1:]))


def _input_bits(wrapper, output_bits):
    """The bit-width of the tensor a layer reads: the nearest quantized output upstream
    (through pass-through and fused layers); the model's input is 8-bit."""
    layer = wrapper
    while True:
        sources = graph.producers(layer)
        if not sources or not isinstance(sources[0], type(wrapper)):
            return 8  # the 8-bit input quantizer
        layer = sources[0]
        if layer.name in output_bits:
            return output_bits[layer.name]


def summary(model, print_fn=print):
    """Per weight layer: weight and input bits, parameter memory, MACs and bit-operations.

    Memory counts each kernel weight at its deployed bits (the grid's information, as Larq
    does; `tflite_export` stores int8 today) and biases at 32 bits; bit-operations are MACs x
    weight bits x input bits. Float counts 32 bits for both.

    Args:
        model: a kquant model.
        print_fn: where the table goes (None prints nothing).

    Returns:
        (rows, totals): rows of dicts with keys layer, weight_bits, input_bits, parameters,
        memory_bytes, macs, bops; totals with keys parameters, memory_bytes,
        float_memory_bytes, macs, bops, float_bops, memory_ratio and bops_ratio (float over
        quantized).
    """
    states = quantizer_states(model)
    weights = {s.layer: s for s in states if s.role == "weight"}
    activation_bits = {s.layer: s.quantizer.deploy_bits for s in states if s.role == "activation"}
    output_bits = {}  # wrapper name -> bits of its quantized output
    for wrapper in quantize_wrappers(model):
        if wrapper.layer.name in activation_bits:
            output_bits[wrapper.name] = activation_bits[wrapper.layer.name]
        elif wrapper.quantize_config.output_quantizer is not None:
            output_bits[wrapper.name] = 8
    rows = []
    for wrapper in quantize_wrappers(model):
        inner = wrapper.layer
        if inner.name not in weights:
            continue
        kernel_size = int(np.prod(weights[inner.name].kernel.shape))
        bias_size = int(np.prod(inner.bias.shape)) if getattr(inner, "use_bias", False) else 0
        bits = weights[inner.name].quantizer.deploy_bits
        input_bits = _input_bits(wrapper, output_bits)
        macs = _macs(inner, wrapper.output_shape)
        rows.append({"layer": inner.name, "weight_bits": bits, "input_bits": input_bits,
                     "parameters": kernel_size + bias_size,
                     "memory_bytes": (kernel_size * bits + bias_size * FLOAT_BITS) / 8,
                     "macs": macs, "bops": macs * bits * input_bits})
    totals = {key: sum(r[key] for r in rows)
              for key in ("parameters", "memory_bytes", "macs", "bops")}
    totals["float_memory_bytes"] = totals["parameters"] * FLOAT_BITS / 8
    totals["float_bops"] = totals["macs"] * FLOAT_BITS * FLOAT_BITS
    totals["memory_ratio"] = totals["float_memory_bytes"] / max(totals["memory_bytes"], 1)
    totals["bops_ratio"] = totals["float_bops"] / max(totals["bops"], 1)
    if print_fn is not None:
        print_fn(f"{'layer':<28} {'W bits':>6} {'A bits':>6} {'params':>9} {'memory KB':>10} "
                 f"{'MACs':>12} {'BOPs':>15}")
        for r in rows:
            print_fn(f"{r['layer']:<28} {r['weight_bits']:>6} {r['input_bits']:>6} "
                     f"{r['parameters']:>9} {r['memory_bytes'] / 1024:>10.2f} {r['macs']:>12} "
                     f"{r['bops']:>15}")
        print_fn(f"{'total':<28} {'':>6} {'':>6} {totals['parameters']:>9} "
                 f"{totals['memory_bytes'] / 1024:>10.2f} {totals['macs']:>12} {totals['bops']:>15}")
        print_fn(f"float: {totals['float_memory_bytes'] / 1024:.2f} KB "
                 f"({totals['memory_ratio']:.2f}x the quantized memory), "
                 f"{totals['float_bops']} BOPs ({totals['bops_ratio']:.1f}x)")
    return rows, totals


def plot_grids(model, path):
    """Writes a PNG of each layer's learned grid: the weight levels of each quantized kernel
    (codes x step, all channels) and each activation quantizer's levels.

    Args:
        model: a kquant model.
        path: the PNG file to write.

    Raises:
        ImportError: naming the extra to install, without matplotlib.
    """
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise ImportError("kquant.summary.plot_grids needs matplotlib: "
                          "pip install 'kquant[examples]'.") from error
    states = quantizer_states(model)
    weights = [s for s in states if s.role == "weight"]
    activations = [s for s in states if s.role == "activation"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, max(3, 0.3 * len(weights))))
    for row, state in enumerate(weights):
        codes, step = state.quantizer.codes_and_step(state.quantizer.fold(state.kernel),
                                                     state.variables)
        values = np.unique(np.rint(codes.numpy()) * np.reshape(step.numpy(), -1))
        left.plot(values, np.full(len(values), row), "|", markersize=8)
    left.set_yticks(range(len(weights)), [s.layer for s in weights], fontsize=7)
    left.set_title("weight levels (codes x step, every channel)")
    for row, state in enumerate(activations):
        grid = state.quantizer.activation_grid(state.variables)
        levels = np.linspace(grid.low, grid.high, min(grid.levels, 256))
        right.plot(levels, np.full(len(levels), row), "|-", markersize=8)
    right.set_yticks(range(len(activations)), [s.layer for s in activations], fontsize=7)
    right.set_title("activation levels")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
