"""Every quantizer saves and loads in all three formats, three ways, to identical predictions."""
import numpy as np
import pytest

import kquant
from kquant.backend import keras
from tests.conftest import tiny_cnn

RECIPES = {  # together they hold every registered quantizer
    "dorefa+clip": kquant.Recipe(3, 2, per_channel=True),
    "dorefa+pact": kquant.Recipe(4, 4, activation_quantizer="pact"),
    "direct-levels+channel-aware": kquant.Recipe(2, 2, weight_quantizer="direct-levels",
                                                 activation_quantizer="channel-aware",
                                                 per_channel=True),
    "binary+sign": kquant.Recipe(1, 1, activation_quantizer="sign"),
    "ternary+sparse": kquant.Recipe(2, 2, weight_quantizer="ternary", activation_quantizer="sparse",
                                    per_channel=True),
    "lsq+lsq": kquant.Recipe(2, 2, weight_quantizer="lsq", activation_quantizer="lsq",
                             per_channel=True),
    "lsq+lsq+": kquant.Recipe(4, 2, weight_quantizer="lsq", activation_quantizer="lsq+"),
    "dorefa+pact, folded": kquant.Recipe(2, 2, activation_quantizer="pact", per_channel=True,
                                         fold_batch_norm=True, freeze_batch_norm_after=1),
}


def test_the_recipes_cover_every_registered_quantizer():
    used = {r.weight_quantizer for r in RECIPES.values()} | {
        r.activation_quantizer for r in RECIPES.values()}
    registered = set(kquant.recipe.weight_quantizers()) | set(kquant.recipe.activation_quantizers())
    assert used == {n for n in registered if not n.startswith("test-")}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_save_and_load_round_trip_in_every_format(tmp_path, random_images, recipe):
    model = kquant.quantize_model(tiny_cnn(), RECIPES[recipe])
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    model.fit(random_images, np.zeros((16, 10)), verbose=0)  # moves ranges, clips and levels
    kquant.precision.set_enabled(model, False, layers=["middle"])
    expected = model.predict(random_images, verbose=0)
    for fmt, name in (("keras", "model.keras"), ("h5", "model.h5"), ("tf", "saved")):
        path = str(tmp_path / name)
        model.save(path, save_format=None if fmt == "keras" else fmt)
        loads = {"quantize_scope": lambda: _in_scope(path),
                 "custom_objects": lambda: keras.models.load_model(
                     path, custom_objects=kquant.custom_objects()),
                 "plain": lambda: keras.models.load_model(path)}
        for how, load in loads.items():
            loaded = load()
            np.testing.assert_allclose(loaded.predict(random_images, verbose=0), expected,
                                       atol=1e-6, err_msg=f"{fmt}, {how}")
            assert kquant.describe(loaded, print_fn=None) == kquant.describe(model, print_fn=None)


def _in_scope(path):
    with kquant.quantize_scope():
        return keras.models.load_model(path)


def test_bits_of_any_integer_type_are_accepted():
    recipe = kquant.Recipe(np.int64(2), np.int32(4), first_last_bits=np.uint8(8))
    rows = kquant.describe(kquant.quantize_model(tiny_cnn(), recipe), print_fn=None)
    assert {(r["role"], r["bits"]) for r in rows} == {("weight", 2), ("weight", 8),
                                                       ("activation", 4)}
    assert kquant.quantizers.PACTQuantizer(np.int16(3)).deploy_bits == 3
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
        kquant.Recipe(np.float32(2.0), 4)


def test_custom_objects_hold_kquant_and_tfmot_classes():
    objects = kquant.custom_objects()
    for name in ("QuantizeWrapperV2", "QuantizeLayer", "MovingAverageQuantizer",
                 "kquant>DoReFaWeightQuantizer", "kquant>WeightLayerConfig", "kquant>InputQuantizer"):
        assert name in objects, name


@pytest.mark.parametrize("fmt,name", [("keras", "model.keras"), ("h5", "model.h5"),
                                      ("tf", "saved")])
def test_load_model_runs_no_stored_code_in_any_format(tmp_path, random_images, fmt, name):
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Lambda(lambda x: x * 2, name="stored_code")(inputs)
    path = str(tmp_path / name)
    keras.Model(inputs, outputs).save(path, save_format=None if fmt == "keras" else fmt)
    with pytest.raises(ValueError, match="stored_code|Lambda"):
        kquant.load_model(path)
    trusted = kquant.load_model(path, safe_mode=False)
    np.testing.assert_allclose(trusted.predict(random_images, verbose=0), 2 * random_images)


def test_load_model_loads_kquant_models_in_safe_mode(tmp_path, random_images):
    model = kquant.quantize_model(tiny_cnn(), kquant.Recipe(2, 2, activation_quantizer="pact"))
    model(random_images)
    for name in ("model.keras", "model.h5"):
        model.save(str(tmp_path / name))
        loaded = kquant.load_model(tmp_path / name)
        np.testing.assert_allclose(loaded.predict(random_images, verbose=0),
                                   model.predict(random_images, verbose=0), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="load_model: nothing at"):
        kquant.load_model(tmp_path / "missing.h5")


@pytest.mark.parametrize("safe_mode", [True, False])
def test_load_model_names_what_holds_no_model(tmp_path, safe_mode):
    (tmp_path / "notes.h5").write_text("not a model")
    (tmp_path / "notes.keras").write_text("not a model")
    (tmp_path / "folder").mkdir()
    for name in ("notes.h5", "notes.keras", "folder"):
        with pytest.raises(ValueError, match=f"load_model: '.*{name}' is not a saved Keras model"):
            kquant.load_model(tmp_path / name, safe_mode=safe_mode)
