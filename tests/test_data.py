import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from routescope.models import data
from routescope.models.data import DataNotFoundError, augment, load_dataset, normalize, read_idx, write_idx


def test_idx_roundtrip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / "x-idx3-ubyte.gz", array)
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), array)


def test_bundled_subset_is_real_and_balanced():
    subset, info = load_dataset("fashion-mnist-subset", "test")
    assert len(subset) == 500 and info.input_size == (1, 28, 28)
    assert torch.bincount(subset.labels).tolist() == [50] * 10
    images, labels = subset.__getitems__([0, 1, 2])
    assert images.shape == (3, 1, 28, 28) and images.dtype == torch.uint8 and images.float().std() > 20


def test_fashion_mnist_from_data_dir_and_env(fmnist_dir, monkeypatch):
    train, _ = load_dataset("fashion-mnist", "train", data_dir=fmnist_dir)
    assert len(train) == 500
    monkeypatch.setenv("ROUTESCOPE_DATA", str(fmnist_dir))
    assert len(load_dataset("fashion-mnist", "test")[0]) == 500


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)


def test_download_from_a_local_mirror(fmnist_dir, tmp_path):
    target = tmp_path / "dl"
    data.download_fashion_mnist(target, base_url=fmnist_dir.as_uri() + "/")
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in fmnist_dir.iterdir())
    with pytest.raises(DataNotFoundError, match="could not download"):
        data.download_fashion_mnist(tmp_path / "bad", base_url=(tmp_path / "missing").as_uri() + "/")


def test_cifar10_and_cifar100_pickles(tmp_path):
    rng = np.random.default_rng(0)
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(c10 / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, f)
    with open(c10 / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in data.CIFAR10.classes]}, f)
    train, info = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert len(train) == 20 and info.input_size == (3, 32, 32)
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    for split in ("train", "test"):
        with open(c100 / split, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"fine_labels": [5, 6, 99]}, f)
    with open(c100 / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)
    test, info = load_dataset("cifar100", "test", data_dir=tmp_path)
    assert len(test) == 3 and len(info.classes) == 100 and test.labels.tolist() == [5, 6, 99]


def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    (tmp_path / "svhn").mkdir()
    savemat(
        tmp_path / "svhn" / "test_32x32.mat",
        {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.array([[10], [1], [2], [3]])},
    )
    test, info = load_dataset("svhn", "test", data_dir=tmp_path)
    assert test.images.shape == (4, 3, 32, 32) and test.labels.tolist() == [0, 1, 2, 3] and not info.hflip


def test_image_folder(tmp_path):
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (50, 40), (10, 20, 30)).save(tmp_path / split / cls / "a.png")
    train, info = load_dataset("imagefolder", "train", data_dir=tmp_path, image_size=24)
    x, y = train[1]
    assert info.classes == ("cat", "dog") and x.shape == (3, 24, 24) and y == 1
    assert len(load_dataset("imagefolder", "test", data_dir=tmp_path, image_size=24)[0]) == 2


def test_augment_keeps_shape_and_is_seeded():
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    a = augment(images, True, torch.Generator().manual_seed(1))
    b = augment(images, True, torch.Generator().manual_seed(1))
    assert a.shape == images.shape and a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, images)


def test_normalize():
    x = normalize(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8), (0.5,), (0.25,))
    assert torch.allclose(x, torch.full_like(x, 2.0))
