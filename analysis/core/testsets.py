"""A test set: a data set name and where it is, opened for one model. Every analysis takes one.

``--dataset NAME --data-dir DIR`` (or ``$ROUTESCOPE_DATA``) on the command line, the test-set picker in the app.
The images reach the model as its meta says (``models.preprocess.to_pixels``: channels, size, crop), so a CIFAR
model can be traced on Fashion-MNIST and a 224x224 model on a folder of photos. Labels are the data set's where its
class names are the model's (by name, loosely: ``ankle_boot`` is ``Ankle boot``); otherwise an image is
unlabelled (-1): its routing and cost are shown, not its accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from routescope.models.data import (
    TEST_SET_NAMES,
    DataNotFoundError,
    ImageFolderImages,
    TensorImages,
    image_root,
    load_dataset,
)
from routescope.models.errors import UsageError
from routescope.models.preprocess import to_pixels

BUNDLED = "fashion-mnist-subset"
UNLABELLED = -1


@dataclass(frozen=True)
class TestSet:
    """Which test images: a name from ``TEST_SET_NAMES`` and, for those not bundled, the folder they are in."""

    name: str = BUNDLED
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.name not in TEST_SET_NAMES:
            raise UsageError(f"unknown test set {self.name!r}; choose from {', '.join(TEST_SET_NAMES)}")

    @property
    def label(self) -> str:
        """How pages and captions name it."""
        return self.name + (f" ({Path(self.data_dir).name})" if self.data_dir and self.name != BUNDLED else "")


def name_key(name: str) -> str:
    """Class names compared loosely: case, spaces and punctuation ignored (a folder cannot be named ``T-shirt/top``)."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def label_map(data_classes: list[str] | tuple[str, ...], model_classes: list[str] | tuple[str, ...]) -> list[int]:
    """For each class of the data set, the model's class of the same name, or ``UNLABELLED``."""
    exact = {c: i for i, c in enumerate(model_classes)}
    loose = {name_key(c): i for i, c in enumerate(model_classes)}
    return [exact.get(c, loose.get(name_key(c), UNLABELLED)) for c in data_classes]


class ModelImages(Dataset):
    """A data set's images as a model takes them (uint8 (C, H, W) at its input size) with the model's labels."""

    def __init__(self, data: Dataset, labels: list[int], meta: dict, fingerprint: str, classes: tuple[str, ...]):
        self.data, self.labels, self.meta, self.fingerprint, self.classes = data, labels, meta, fingerprint, classes
        self.shape = tuple(meta["input_size"])

    def __len__(self) -> int:
        return len(self.data)

    @property
    def labelled(self) -> bool:
        """Whether any image has a label the model knows (else: routing and cost only, no accuracy)."""
        return any(label != UNLABELLED for label in self.labels)

    def label_of(self, source_label: int) -> int:
        return self.labels[source_label] if 0 <= source_label < len(self.labels) else UNLABELLED

    def model_labels(self) -> torch.Tensor:
        """Every image's label in the model's classes (-1: unlabelled), without decoding an image."""
        return torch.tensor([self.label_of(int(label)) for label in self.data.labels], dtype=torch.long)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.data[i]
        if tuple(image.shape) != self.shape:  # e.g. Fashion-MNIST for a CIFAR model: the upload conversion
            array = image.permute(1, 2, 0).numpy()
            picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
            image = to_pixels(picture, self.meta)[0]
        return image, self.label_of(int(label))


def _fingerprint(name: str, files: list[Path]) -> str:
    """What identifies the images without reading them: the set's name and each file's name, size and time."""
    digest = hashlib.sha256(name.encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def in_memory_test_set(images: torch.Tensor, labels: torch.Tensor, meta: dict, name: str = "images") -> ModelImages:
    """Images already in memory (uint8 N x C x H x W, labels in the model's classes) as a test set; its fingerprint
    hashes the pixels and labels."""
    digest = hashlib.sha256(name.encode())
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(labels.long().contiguous().numpy().tobytes())
    classes = tuple(meta["classes"])
    return ModelImages(TensorImages(images, labels), list(range(len(classes))), meta, digest.hexdigest()[:16], classes)


def open_test_set(test_set: TestSet, meta: dict) -> ModelImages:
    """The images of ``test_set`` for the model described by ``meta``; a ``DataNotFoundError`` saying where it was
    looked for when it is not on this machine."""
    if test_set.name in ("imagefolder", "folder"):
        root = image_root(test_set.name, "test", test_set.data_dir)
        data = ImageFolderImages(root, pixels=meta, labelled=test_set.name == "imagefolder")
        files = [path for path, _ in data.samples]
        classes = tuple(data.classes)
    else:
        data, info = load_dataset(test_set.name, "test", test_set.data_dir)
        files = data.sources if isinstance(data, TensorImages) else []
        classes = tuple(info.classes)
    labels = label_map(classes, meta["classes"])
    return ModelImages(data, labels, meta, _fingerprint(test_set.name, files), classes)


def found(test_set: TestSet) -> bool:
    """Whether ``test_set`` is on this machine (without reading its images)."""
    try:
        if test_set.name in ("imagefolder", "folder"):
            image_root(test_set.name, "test", test_set.data_dir)
        else:
            load_dataset(test_set.name, "test", test_set.data_dir)
        return True
    except (DataNotFoundError, UsageError, OSError):
        return False


def default_test_set(meta: dict, data_dir: str | None = None) -> TestSet:
    """The checkpoint's own data set where it is found, else the bundled subset. A Fashion-MNIST model's default is
    the bundled subset of its test set (500 images, quick everywhere); ``--dataset fashion-mnist`` takes all 10,000."""
    own = meta.get("dataset")
    if own in TEST_SET_NAMES and own not in (BUNDLED, "fashion-mnist") and found(TestSet(own, data_dir)):
        return TestSet(own, data_dir)
    return TestSet(BUNDLED)


def add_test_set_arguments(
    parser: argparse.ArgumentParser,
    default: str | None = None,
    when_absent: str = "the checkpoint's own data set where it is found, else the bundled 500-image Fashion-MNIST "
    "subset",
) -> None:
    """``--dataset`` and ``--data-dir`` of every command that reads test images (``when_absent``: what it reads
    without ``--dataset``, for the help)."""
    parser.add_argument(
        "--dataset",
        default=default,
        choices=TEST_SET_NAMES,
        help=f"the test images (default: {when_absent}); 'folder' is a plain folder of images (no labels: routing and "
        "cost, no accuracy)",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("ROUTESCOPE_DATA"),
        help="where the data set is (default: $ROUTESCOPE_DATA, then the system paths)",
    )


def test_set_of(args: argparse.Namespace, meta: dict) -> TestSet:
    """The test set a command's ``--dataset``/``--data-dir`` name for a model (its default when not given)."""
    return TestSet(args.dataset, args.data_dir) if args.dataset else default_test_set(meta, args.data_dir)
