"""Reference architectures the source papers use, sized for a CPU."""
from kquant.models.mobilenet_v2 import small_mobilenet_v2
from kquant.models.resnet import resnet20
from kquant.models.small_cnn import small_cnn

_BUILDERS = {"resnet20": resnet20, "small_cnn": small_cnn, "mobilenet_v2": small_mobilenet_v2}


def names():
    """The names `build_model` takes."""
    return sorted(_BUILDERS)


def build_model(name, input_shape, num_classes, **options):
    """Builds a float reference model by name.

    Args:
        name: one of "resnet20", "small_cnn", "mobilenet_v2".
        input_shape: (height, width, channels) of one image.
        num_classes: number of output logits.
        **options: passed to the builder, e.g. `batch_norm_momentum`.

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: if the name is unknown.
    """
    if name not in _BUILDERS:
        raise ValueError(f"build_model: unknown model {name!r}; choose one of {names()}.")
    return _BUILDERS[name](input_shape=input_shape, num_classes=num_classes, **options)


__all__ = ["build_model", "names", "resnet20", "small_cnn", "small_mobilenet_v2"]
