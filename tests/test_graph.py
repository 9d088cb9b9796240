import pytest

import kquant
from kquant import graph
from kquant.backend import keras
from tests.conftest import tiny_cnn


def test_resnet20_splits_into_stem_nine_blocks_and_head():
    model = kquant.quantize_model(kquant.models.resnet20((32, 32, 3), 10))
    units = graph.residual_units(model)
    assert len(units) == 11
    blocks = units[1:-1]
    adds = [name for unit in blocks for name in unit
            if isinstance(model.get_layer(f"quant_{name}").layer, keras.layers.Add)]
    assert len(adds) == 9 and all(sum(n in adds for n in unit) == 1 for unit in blocks)
    assert units[0][0] == model.layers[2].layer.name  # the stem starts at the first conv
    assert isinstance(model.get_layer(f"quant_{units[-1][-1]}").layer, keras.layers.Dense)


def test_consumers_and_activation_names():
    model = tiny_cnn()
    following = graph.consumers(model)
    assert sorted(l.name for l in following["first_relu"]) == ["add", "middle"]
    assert graph.activation_name(model.get_layer("depthwise_relu")) == "relu6"
    assert graph.activation_name(keras.layers.ReLU(negative_slope=0.1)) == "leaky or thresholded ReLU"
    assert graph.is_activation_layer(model.get_layer("block_out"))
    assert not graph.is_activation_layer(model.get_layer("middle"))


def test_models_without_residual_blocks_are_named_in_the_error():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="plain")
    with pytest.raises(ValueError, match="'plain' has no residual Add"):
        graph.residual_units(model)
