"""Datasets by name: tfds when online, local files when not, scikit-learn's digits as the default.

`load_dataset("digits")` always works offline (the data ships inside scikit-learn).
`"mnist"` and `"cifar10"` are read from the shared offline copy when one is found (IDX files and
a JPEG image folder), otherwise through `tfds.load`. `"folder:/path"` reads any image folder in
the `tfds.folder_dataset.ImageFolder` layout (`<root>/<split>/<class>/<image>`), and any other
name goes to `tfds.load`.

Where the offline copy lives: `$KQUANT_DATASETS`, else `../shared/datasets` seen from the
project root or the working directory. Archives are extracted once into `$KQUANT_CACHE`
(default `~/.cache/kquant`).
"""
import dataclasses
import gzip
import os
import pathlib
import tarfile
from typing import Optional, Tuple

import numpy as np

from kquant.backend import tf

# Per-channel statistics of the training sets, so that every loader feeds the same inputs.
_NORMALIZATION = {
    "digits": ((0.3,), (0.4,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


@dataclasses.dataclass
class Dataset:
    """Batched train and test pipelines plus what a model needs to know about them.

    Attributes:
        name: the dataset's name as given to `load_dataset`.
        train: batched, shuffled (and augmented, if asked) `tf.data.Dataset` of (image, label).
        test: batched `tf.data.Dataset` of (image, label), in a fixed order.
        num_classes: number of labels.
        input_shape: shape of one image, (height, width, channels).
        train_size: number of training examples.
        batch_size: examples per batch.
    """

    name: str
    train: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    input_shape: Tuple[int, int, int]
    train_size: int
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch (what a learning-rate schedule counts in)."""
        return -(-self.train_size // self.batch_size)


def datasets_root() -> Optional[pathlib.Path]:
    """Returns the folder of offline datasets, or None when there is none.

    `$KQUANT_DATASETS` wins; otherwise `../shared/datasets` next to the project root (the folder
    above the `kquant` package) or next to the working directory.
    """
    if os.environ.get("KQUANT_DATASETS"):
        return pathlib.Path(os.environ["KQUANT_DATASETS"])
    project_root = pathlib.Path(__file__).resolve().parent.parent
    for base in (project_root, pathlib.Path.cwd()):
        candidate = base.parent / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None


def cache_dir() -> pathlib.Path:
    """Returns the folder where archives are extracted (`$KQUANT_CACHE`, default ~/.cache/kquant)."""
    path = pathlib.Path(os.environ.get("KQUANT_CACHE", pathlib.Path.home() / ".cache" / "kquant"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _read_idx(path: pathlib.Path) -> np.ndarray:
    """Reads one (gzipped) IDX file, the format MNIST ships in."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_idx_images(folder: pathlib.Path, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Loads MNIST-style IDX files (`train-*` or `t10k-*`) as (N, H, W, 1) uint8 images and labels."""
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(next(folder.glob(f"{prefix}-images-idx3-ubyte*")))
    labels = _read_idx(next(folder.glob(f"{prefix}-labels-idx1-ubyte*")))
    return images[..., None], labels.astype(np.int64)


def load_digits_arrays(split: str, test_fraction: float = 0.2, seed: int = 0):
    """Loads scikit-learn's 8x8 digits as (N, 8, 8, 1) float images in [0, 1] and labels.

    The split is stratified and fixed by `seed`, so train and test never overlap.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target)
    return (x_train, y_train) if split == "train" else (x_test, y_test)


def _extract_once(archive: pathlib.Path, name: str) -> pathlib.Path:
    target = cache_dir() / name
    marker = target / ".extracted"
    if not marker.exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        marker.touch()
    return target


def image_folder(root: str, split: str) -> tf.data.Dataset:
    """Reads `<root>/<split>/<class>/<image>` with tfds' ImageFolder as (uint8 image, label)."""
    import tensorflow_datasets as tfds

    builder = tfds.folder_dataset.ImageFolder(str(root))
    return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)


def check_image_folder(root: str) -> None:
    """Checks the layout `<root>/train/<class>/<image>` and `<root>/test/<class>/<image>`.

    Raises:
        FileNotFoundError: if `root` is not a folder.
        ValueError: naming each split without a class folder holding an image.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"load_dataset: no image folder at '{root}'.")
    empty = [split for split in ("train", "test")
             if not any(f.is_file() for f in (root / split).glob("*/*"))]
    if empty:
        raise ValueError(f"load_dataset: folder '{root}' has no images in {empty}; it needs the "
                         "layout <folder>/train/<class>/<image> and <folder>/test/<class>/<image>.")


def unreadable_images(folder: pathlib.Path) -> list:
    """The files under `folder`/<class>/ that TensorFlow cannot decode as images."""
    unreadable = []
    for path in sorted(p for p in folder.glob("*/*") if p.is_file()):
        try:
            tf.io.decode_image(tf.io.read_file(str(path)))
        except tf.errors.InvalidArgumentError:
            unreadable.append(str(path))
    return unreadable


def _tfds(name: str, split: str) -> Tuple[tf.data.Dataset, int]:
    import difflib

    import tensorflow_datasets as tfds

    try:
        ds, info = tfds.load(name, split=split, as_supervised=True, with_info=True)
    except tfds.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(name, tfds.list_builders(), n=3)
        raise ValueError(f"load_dataset: unknown dataset {name!r}: use 'digits', 'mnist', "
                         "'cifar10', 'folder:/path' or a tfds name"
                         + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else "")
                         + ".") from None
    except Exception as error:  # tfds raises many types when it cannot download
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RuntimeError(
            f"load_dataset: {name!r} is not in the offline copy (looked in {datasets_root()}) and "
            f"tfds.load could not get it ({type(error).__name__}: {first_line}). On a machine "
            "without internet set KQUANT_DATASETS to the shared datasets folder, or use "
            "'digits' or 'folder:/path'.") from None
    return ds, info.features["label"].num_classes


def _raw_split(name: str, split: str) -> Tuple[tf.data.Dataset, int]:
    """Returns one unbatched split as (image, label) with images uint8 or float in [0, 1]."""
    root = datasets_root()
    if name == "digits":
        x, y = load_digits_arrays(split)
        return tf.data.Dataset.from_tensor_slices((x, y)), 10
    if name == "mnist" and root is not None and (root / "mnist").is_dir():
        x, y = load_idx_images(root / "mnist", split)
        return tf.data.Dataset.from_tensor_slices((x, y)), 10
    if name == "cifar10" and root is not None and (root / "cifar10-jpg.tar.gz").exists():
        folder = _extract_once(root / "cifar10-jpg.tar.gz", "cifar10")
        return image_folder(folder, split), 10
    if name.startswith("folder:"):
        import tensorflow_datasets as tfds

        folder = name[len("folder:"):]
        check_image_folder(folder)
        builder = tfds.folder_dataset.ImageFolder(folder)
        return image_folder(folder, split), builder.info.features["label"].num_classes
    return _tfds(name, split)


def _count(ds: tf.data.Dataset, name: str, split: str) -> int:
    """Examples in one split, read once (filling its cache).

    Raises:
        ValueError: naming the files of an image folder that cannot be decoded.
    """
    try:
        return int(ds.reduce(0, lambda n, _: n + 1))
    except tf.errors.InvalidArgumentError:
        if not name.startswith("folder:"):
            raise
        folder = pathlib.Path(name[len("folder:"):]) / split
        bad = unreadable_images(folder)
        raise ValueError(f"load_dataset: cannot decode {len(bad)} image(s) in '{folder}': "
                         f"{bad[:10]}{' ...' if len(bad) > 10 else ''}; remove or replace them.") \
            from None


def _augment_cifar(image, label):
    """Standard CIFAR augmentation: 4-pixel zero padding, random 32x32 crop, horizontal flip."""
    shape = tf.shape(image)
    padded = tf.image.pad_to_bounding_box(image, 4, 4, shape[0] + 8, shape[1] + 8)
    image = tf.image.random_crop(padded, shape)
    return tf.image.random_flip_left_right(image), label


def load_dataset(name: str = "digits", batch_size: int = 64, augment: bool = True,
                 seed: int = 0, limit: Optional[int] = None) -> Dataset:
    """Loads a dataset as batched, normalised train and test pipelines.

    Args:
        name: "digits" (offline default), "mnist", "cifar10", "folder:/path/to/images", or
            any tfds name.
        batch_size: examples per batch.
        augment: apply the standard augmentation (crop and flip) to 32x32 colour training sets.
        seed: shuffling seed.
        limit: keep only the first `limit` examples of each split (for quick runs and tests).

    Returns:
        A `Dataset`.

    Raises:
        ValueError: if the batch size or limit is not positive.
    """
    if batch_size < 1:
        raise ValueError(f"load_dataset: batch_size must be >= 1, got {batch_size}.")
    if limit is not None and limit < 1:
        raise ValueError(f"load_dataset: limit must be >= 1 or None, got {limit}.")
    mean, std = _NORMALIZATION.get(name, ((0.5,), (0.25,)))

    def normalize(image, label):
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        return (image - mean) / std, tf.cast(label, tf.int32)

    splits, sizes = {}, {}
    num_classes = 10
    for split in ("train", "test"):
        ds, num_classes = _raw_split(name, split)
        if limit is not None:
            ds = ds.take(limit)
        splits[split] = ds.cache()
        sizes[split] = _count(splits[split], name, split)
    train_size = sizes["train"]
    sample_image = next(iter(splits["train"].take(1)))[0]
    input_shape = tuple(int(d) for d in sample_image.shape)

    train = splits["train"].shuffle(min(train_size, 50_000), seed=seed, reshuffle_each_iteration=True)
    if augment and input_shape[0] == 32 and input_shape[-1] == 3:
        train = train.map(_augment_cifar, num_parallel_calls=tf.data.AUTOTUNE)
    train = train.map(normalize, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    test = splits["test"].map(normalize, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return Dataset(name, train.prefetch(tf.data.AUTOTUNE), test.prefetch(tf.data.AUTOTUNE),
                   num_classes, input_shape, train_size, batch_size)
