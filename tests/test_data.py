import gzip

import numpy as np
import pytest

from kquant import data


def test_digits_are_the_offline_default_with_disjoint_stratified_splits():
    dataset = data.load_dataset(batch_size=50)
    assert dataset.name == "digits" and dataset.input_shape == (8, 8, 1)
    assert dataset.train_size == 1437 and dataset.num_classes == 10
    x_train, _ = data.load_digits_arrays("train")
    x_test, y_test = data.load_digits_arrays("test")
    train_rows = {row.tobytes() for row in x_train}
    assert sum(row.tobytes() in train_rows for row in x_test) < 10  # a few digits repeat exactly
    assert set(np.bincount(y_test)) <= {35, 36, 37}


def test_idx_files_are_read(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + images.tobytes())
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes([7, 3]))
    x, y = data.load_idx_images(tmp_path, "train")
    np.testing.assert_array_equal(x[..., 0], images)
    np.testing.assert_array_equal(y, [7, 3])


def test_image_folders_load_with_labels_in_folder_order(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for label, colour in enumerate([0, 255]):
            folder = tmp_path / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), (colour,) * 3).save(folder / f"{i}.png")
    dataset = data.load_dataset(f"folder:{tmp_path}", batch_size=6, augment=False)
    images, labels = next(iter(dataset.test))
    assert dataset.input_shape == (32, 32, 3) and dataset.num_classes == 2
    brightness = images.numpy().mean(axis=(1, 2, 3))
    assert np.all((brightness > 0) == (labels.numpy() == 1))


def test_cifar10_loads_from_the_shared_offline_copy():
    if data.datasets_root() is None or not (data.datasets_root() / "cifar10-jpg.tar.gz").exists():
        pytest.skip("no offline CIFAR-10 copy; set KQUANT_DATASETS")
    dataset = data.load_dataset("cifar10", batch_size=16, limit=64)
    images, labels = next(iter(dataset.train))
    assert images.shape == (16, 32, 32, 3) and dataset.num_classes == 10
    assert abs(float(images.numpy().mean())) < 1.0 and labels.dtype.name == "int32"


def test_mnist_loads_from_the_folder_kquant_datasets_names(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "mnist").mkdir()
    for split, count in (("train", 6), ("t10k", 4)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        with gzip.open(tmp_path / "mnist" / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
                    + images.tobytes())
        with gzip.open(tmp_path / "mnist" / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + count.to_bytes(4, "big") + bytes(range(count)))
    monkeypatch.setenv("KQUANT_DATASETS", str(tmp_path))
    dataset = data.load_dataset("mnist", batch_size=4, augment=False)
    assert dataset.train_size == 6 and dataset.input_shape == (28, 28, 1)
    _, labels = next(iter(dataset.test))
    assert sorted(labels.numpy().tolist()) == [0, 1, 2, 3]


def test_bad_batch_size_is_named():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.load_dataset(batch_size=0)


def test_cifar_augmentation_crops_with_padding_and_flips():
    from kquant.backend import tf

    image = tf.reshape(tf.range(32 * 32 * 3, dtype=tf.float32) + 1, (32, 32, 3))
    tf.random.set_seed(0)
    outputs = [data._augment_cifar(image, 0)[0].numpy() for _ in range(30)]
    assert all(o.shape == (32, 32, 3) for o in outputs)
    assert any((o == 0).any() for o in outputs)  # some crops reach into the zero padding
    # values grow along the width, so a flipped crop shrinks along it
    assert any(o[16, 10, 0] > o[16, 11, 0] > 0 for o in outputs)
    assert any(0 < o[16, 10, 0] < o[16, 11, 0] for o in outputs)
    assert len({o.tobytes() for o in outputs}) > 10


def test_unavailable_tfds_names_explain_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KQUANT_DATASETS", str(tmp_path))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(RuntimeError, match="set KQUANT_DATASETS"):
        data.load_dataset("mnist")


def _image_folder(root, splits=("train", "test")):
    from PIL import Image

    for split in splits:
        for label in range(2):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (100 * label,) * 3).save(folder / f"{i}.png")


def test_image_folder_mistakes_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image folder at '.*missing'"):
        data.load_dataset(f"folder:{tmp_path / 'missing'}")
    _image_folder(tmp_path / "only_train", splits=("train",))
    with pytest.raises(ValueError, match=r"has no images in \['test'\]; it needs the layout"):
        data.load_dataset(f"folder:{tmp_path / 'only_train'}")
    _image_folder(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "test" / "class1" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot decode 1 image\(s\) in .*test.*broken.png"):
        data.load_dataset(f"folder:{tmp_path / 'corrupt'}")


def test_a_misspelt_dataset_name_is_one_line_with_suggestions():
    with pytest.raises(ValueError) as error:
        data.load_dataset("cifar100x")
    message = str(error.value)
    assert "\n" not in message and "did you mean 'cifar100'" in message
