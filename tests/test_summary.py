"""kquant.summary: bits, memory, MACs and bit-operations against hand counts; the grid plot."""
import numpy as np

import kquant
from kquant.backend import keras
from kquant.summary import plot_grids, summary

L = keras.layers


def _model():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same", use_bias=False, name="first")(inputs)
    x = L.ReLU(name="first_relu")(x)
    x = L.Conv2D(4, 3, padding="same", name="middle")(x)
    x = L.ReLU(name="middle_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(x)
    x = L.ReLU(name="depthwise_relu")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return kquant.quantize_model(keras.Model(inputs, L.Dense(10, name="logits")(x)),
                                 kquant.Recipe(2, 2))


def test_summary_counts_match_a_hand_count():
    rows, totals = summary(_model(), print_fn=None)
    by_layer = {r["layer"]: r for r in rows}
    # first: 3x3x1x4 weights at 8 bits (first layer) reading the 8-bit input; 8x8x4 outputs.
    assert by_layer["first"] == {"layer": "first", "weight_bits": 8, "input_bits": 8,
                                 "parameters": 36, "memory_bytes": 36.0, "macs": 9 * 256,
                                 "bops": 9 * 256 * 64}
    # middle: 3x3x4x4 weights at 2 bits plus 4 float biases, reading a 2-bit ReLU.
    assert by_layer["middle"] == {"layer": "middle", "weight_bits": 2, "input_bits": 2,
                                  "parameters": 148, "memory_bytes": 144 * 2 / 8 + 16,
                                  "macs": 36 * 256, "bops": 36 * 256 * 4}
    assert by_layer["depthwise"]["macs"] == 9 * 256 and by_layer["depthwise"]["memory_bytes"] == 9
    # logits: 4x10 at 8 bits (last layer) + 10 biases, reading the 8-bit pooled features.
    assert by_layer["logits"]["input_bits"] == 8 and by_layer["logits"]["memory_bytes"] == 80
    assert totals["parameters"] == 36 + 148 + 36 + 50
    assert totals["memory_bytes"] == 36 + 52 + 9 + 80
    assert totals["float_memory_bytes"] == 270 * 4
    assert totals["bops"] == 9 * 256 * 64 + 36 * 256 * 4 + 9 * 256 * 4 + 40 * 64
    assert totals["float_bops"] == (2304 + 9216 + 2304 + 40) * 1024
    assert np.isclose(totals["memory_ratio"], 1080 / 177)


def test_summary_prints_a_table_with_totals():
    lines = []
    summary(_model(), print_fn=lines.append)
    assert lines[0].split()[:3] == ["layer", "W", "bits"]
    assert any(line.startswith("total") for line in lines)
    assert "6.10x the quantized memory" in lines[-1]


def test_plot_of_learned_grids_is_a_png(tmp_path):
    import matplotlib.image

    path = tmp_path / "grids.png"
    plot_grids(_model(), str(path))
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
