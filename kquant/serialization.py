"""Keras serialization of kquant models: one registry of kquant classes, plus TF-MOT's.

Every kquant quantizer, QuantizeConfig and layer registers itself with `@serializable`, under
Keras' name "kquant>ClassName"; a quantizer that a `Recipe` can name also gives that name.
Importing kquant registers the TF-MOT classes a quantized model holds as well, so a saved
kquant model loads with a plain `keras.models.load_model` in every format; `custom_objects()`
and `quantize_scope()` are for code that passes its objects explicitly.
"""
import contextlib

from kquant.backend import keras, tfmot

PACKAGE = "kquant"
_CLASSES = {}  # class name -> class, every registered kquant class
_RECIPE_NAMES = {}  # Recipe name -> the quantizer classes of that name (one per kind)


def serializable(recipe_name=None):
    """Class decorator: registers a kquant class as a Keras serializable ("kquant>Name").

    Args:
        recipe_name: the name a `Recipe` selects this quantizer by (e.g. "pact"), or None; a
            weight and an activation quantizer may share one (e.g. "lsq").

    Raises:
        ValueError: if the class name is taken by another class.
    """
    def register(cls):
        if _CLASSES.get(cls.__name__, cls) is not cls:
            raise ValueError(f"kquant: {cls.__name__!r} is already registered for "
                             f"{_CLASSES[cls.__name__]!r}.")
        keras.utils.register_keras_serializable(package=PACKAGE)(cls)
        # HDF5 files and optimizer configs name objects by class name alone.
        keras.utils.get_custom_objects().setdefault(cls.__name__, cls)
        _CLASSES[cls.__name__] = cls
        if recipe_name is not None and cls not in _RECIPE_NAMES.setdefault(recipe_name, []):
            _RECIPE_NAMES[recipe_name].append(cls)
        return cls
    return register


def recipe_names(base):
    """{Recipe name: class} of the registered quantizers that are subclasses of `base`.

    Raises:
        ValueError: if two such classes share a name.
    """
    names = {}
    for name, classes in _RECIPE_NAMES.items():
        for cls in classes:
            if issubclass(cls, base):
                if name in names:
                    raise ValueError(f"kquant: Recipe name {name!r} is registered for both "
                                     f"{names[name]!r} and {cls!r}.")
                names[name] = cls
    return names


def tfmot_objects():
    """The TF-MOT classes (wrappers, input layer, quantizers) a quantized model can hold."""
    objects = {}
    for scope_objects in tfmot.quantization.keras.quantize_scope().custom_objects:
        objects.update(scope_objects)
    return objects


def custom_objects():
    """Every class a saved kquant model refers to, for `load_model(custom_objects=...)`."""
    objects = tfmot_objects()
    for name, cls in _CLASSES.items():
        objects[name] = objects[f"{PACKAGE}>{name}"] = cls
    return objects


@contextlib.contextmanager
def quantize_scope():
    """Scope in which kquant and TF-MOT objects deserialize.

    Example:
        with kquant.quantize_scope():
            model = keras.models.load_model("w4a4.keras")
    """
    with keras.utils.custom_object_scope(custom_objects()):
        yield


# kquant's own classes register as they are defined; TF-MOT's get their plain names here.
keras.utils.get_custom_objects().update(tfmot_objects())
