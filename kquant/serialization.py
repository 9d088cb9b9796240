"""Keras serialization of kquant models: one registry of kquant classes, plus TF-MOT's.

Every kquant quantizer, QuantizeConfig and layer registers itself with `@serializable`, under
Keras' name "kquant>ClassName"; a quantizer that a `Recipe` can name also gives that name.
Importing kquant registers the TF-MOT classes a quantized model holds as well, so a saved
kquant model loads with a plain `keras.models.load_model` in every format; `custom_objects()`
and `quantize_scope()` are for code that passes its objects explicitly. `load_model` loads a
file from elsewhere without running code stored in it, in every format.
"""
import contextlib
import json
import os

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


# Layers whose saved config carries Python code (bytecode) that loading would run.
CODE_LAYERS = ("Lambda",)


def _code_layers_in(config):
    """Names of the layers of a saved model config (any nesting) that carry Python code."""
    found = []
    if isinstance(config, dict):
        if config.get("class_name") in CODE_LAYERS:
            found.append(config.get("config", {}).get("name", "?"))
        for value in config.values():
            found += _code_layers_in(value)
    elif isinstance(config, list):
        for value in config:
            found += _code_layers_in(value)
    return found


def _stored_code_layers(path):
    """Layers carrying Python code in an HDF5 file or SavedModel folder (the formats Keras loads
    without its safe mode)."""
    if os.path.isdir(path):
        from tf_keras.protobuf import saved_metadata_pb2

        metadata = saved_metadata_pb2.SavedMetadata()
        with open(os.path.join(path, "keras_metadata.pb"), "rb") as f:
            metadata.ParseFromString(f.read())
        return [name for node in metadata.nodes
                for name in _code_layers_in(json.loads(node.metadata or "{}"))]
    import h5py

    with h5py.File(path, "r") as f:
        config = f.attrs.get("model_config")
    return _code_layers_in(json.loads(config)) if config is not None else []


def load_model(path, safe_mode=True, compile=False):  # pylint: disable=redefined-builtin
    """Loads a saved kquant (or any Keras) model, by default without running code stored in it.

    Keras' safe mode refuses Lambda layers in `.keras` files only; HDF5 files and SavedModel
    folders would run a Lambda's stored bytecode. Here every format is checked: a model with
    such layers is refused unless `safe_mode=False` (only for files you trust).

    Args:
        path: a `.keras` or `.h5` file or a SavedModel folder.
        safe_mode: refuse layers that carry Python code.
        compile: restore the training configuration too.

    Returns:
        The model, with kquant's and TF-MOT's classes.

    Raises:
        FileNotFoundError: if nothing is at `path`.
        ValueError: naming the layers that carry code, in safe mode; for a file or folder
            that holds no saved Keras model.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_model: nothing at {path!r}.")
    try:
        unsafe = _stored_code_layers(path) if safe_mode and not path.endswith(".keras") else []
        if unsafe:
            raise ValueError(f"load_model: {path!r} holds layers {unsafe} with Python code that "
                             "loading would run; pass safe_mode=False only if you trust the file.")
        with quantize_scope():
            if path.endswith(".keras"):
                return keras.models.load_model(path, compile=compile, safe_mode=safe_mode)
            return keras.models.load_model(path, compile=compile)
    except OSError as error:  # h5py's or Keras' for a file or folder it cannot read as a model
        raise ValueError(f"load_model: {path!r} is not a saved Keras model ({error}).") from None

