"""Datasets, normalization and batched augmentation.

Small data sets (Fashion-MNIST, CIFAR-10/100, SVHN) are read once from their original files into a
uint8 tensor, so a batch is one indexing operation: on a 2-core machine per-sample PIL transforms would
cost more than the network. ImageFolder trees (ImageNet-style) are decoded lazily, one file at a time.
torchvision is deliberately not a dependency: its PyPI wheels do not import beside the CPU build of
torch these machines install, and the readers below are a few lines each.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_SUBSET = REPO_ROOT / "models" / "assets" / "fashion-mnist-subset"
# sample images shipped for the app, the tests and the docs (``tools.make_samples`` writes them); one place
SAMPLE_IMAGES = Path(os.environ.get("ROUTESCOPE_SAMPLES") or REPO_ROOT / "models" / "assets" / "samples")
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataNotFoundError(FileNotFoundError):
    """A data set is not on this machine; the message says where it was looked for and how to get it."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data: shape, classes, normalization, photo convention."""

    name: str
    classes: tuple[str, ...]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool = True
    dark_background: bool = False  # Fashion-MNIST: light object on black; photos on white get inverted
    extra: dict = field(default_factory=dict, compare=False)


FASHION_MNIST = DatasetInfo(
    "fashion-mnist",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    (1, 28, 28),
    (0.2860,),
    (0.3530,),
    dark_background=True,
)
CIFAR10 = DatasetInfo(
    "cifar10",
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    (3, 32, 32),
    (0.4914, 0.4822, 0.4465),
    (0.2470, 0.2435, 0.2616),
)
SVHN = DatasetInfo(
    "svhn",
    tuple(str(d) for d in range(10)),
    (3, 32, 32),
    (0.4377, 0.4438, 0.4728),
    (0.1980, 0.2010, 0.1970),
    hflip=False,
)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
DATASET_NAMES = ("fashion-mnist", "cifar10", "cifar100", "svhn", "imagefolder")
# what a test set may also be: the bundled subset, and a plain folder of images without labels
TEST_SET_NAMES = ("fashion-mnist-subset", *DATASET_NAMES, "folder")
DATASET_TITLES = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}


class TensorImages(Dataset):
    """Images held as one uint8 tensor (N, C, H, W); ``__getitems__`` lets DataLoader fetch a batch at once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sources: list[Path] | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError("TensorImages wants uint8 images (N, C, H, W) and one label each")
        self.images, self.labels = images, labels.long()
        self.sources = sources or []  # the files it was read from (what a test set's fingerprint hashes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


class ImageFolderImages(Dataset):
    """``root/<class>/<image>`` (labels from the folder names), or with ``labelled=False`` every image under
    ``root`` (label -1: routing and cost, no accuracy). Decoded lazily, one image per item, converted by
    ``models.preprocess.to_pixels`` for a model that takes ``pixels`` (a meta: input_size, crop_pct, ...)."""

    EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")

    def __init__(self, root: Path, size: int | None = None, pixels: dict | None = None, labelled: bool = True) -> None:
        self.pixels = pixels or {"input_size": (3, size or 32, size or 32)}
        if labelled:
            self.classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
            self.samples = [
                (p, label)
                for label, name in enumerate(self.classes)
                for p in sorted((root / name).rglob("*"))
                if self._is_image(p)
            ]
        else:
            self.classes = []
            self.samples = [(p, -1) for p in sorted(root.rglob("*")) if self._is_image(p)]
        if not self.samples:
            where = f"{root}/<class>/<image>" if labelled else f"{root}/<image>"
            raise DataNotFoundError(f"no images under {root} (expected {where})")
        self.labels = torch.tensor([label for _, label in self.samples])

    @classmethod
    def _is_image(cls, path: Path) -> bool:
        return path.suffix.lower() in cls.EXTENSIONS and not any(part.startswith(".") for part in path.parts[-2:])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        from .preprocess import to_pixels

        path, label = self.samples[i]
        with Image.open(path) as img:
            img.draft("RGB", (self.pixels["input_size"][2] * 2, self.pixels["input_size"][1] * 2))  # JPEG: decode small
            pixels, _, _ = to_pixels(img, self.pixels)
        return pixels, label


def collate_batch(batch):
    """DataLoader collate that accepts both a ready batch (``__getitems__``) and a list of samples."""
    if isinstance(batch, tuple):
        return batch
    return torch.stack([x for x, _ in batch]), torch.tensor([y for _, y in batch])


# --- readers of the original file formats -------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST family), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise UsageError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (used to ship the Fashion-MNIST subset)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order: --data-dir, $ROUTESCOPE_DATA, the Debian package."""
    roots = [Path(p) for p in (data_dir, os.environ.get("ROUTESCOPE_DATA")) if p]
    candidates = []
    for root in roots:
        candidates += [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    return candidates + [SYSTEM_FASHION_MNIST]


def find_fashion_mnist(split: str, data_dir=None) -> tuple[Path, Path] | None:
    """The (images, labels) files of ``split`` in the first folder that has both, without reading them."""
    prefix = "train" if split == "train" else "t10k"
    for folder in fashion_mnist_roots(data_dir):
        images, labels = (
            _idx_file(folder, f"{prefix}-images-idx3-ubyte"),
            _idx_file(folder, f"{prefix}-labels-idx1-ubyte"),
        )
        if images and labels:
            return images, labels
    return None


def load_fashion_mnist(split: str, data_dir=None, download: bool = False) -> TensorImages:
    found = find_fashion_mnist(split, data_dir)
    if found:
        images, labels = found
        return TensorImages(
            torch.from_numpy(read_idx(images).copy()).unsqueeze(1),
            torch.from_numpy(read_idx(labels).astype(np.int64)),
            [images, labels],
        )
    roots = fashion_mnist_roots(data_dir)
    if download:
        target = Path(data_dir or os.environ.get("ROUTESCOPE_DATA") or "data") / "fashion-mnist"
        download_fashion_mnist(target)
        return load_fashion_mnist(split, target)
    raise DataNotFoundError(
        f"Fashion-MNIST ({split}) not found in: {', '.join(map(str, roots))}. "
        "Install it with `apt-get install dataset-fashion-mnist`, put the four original .gz files in a folder "
        "given by --data-dir or $ROUTESCOPE_DATA, or pass --download where the network allows."
    )


def download_fashion_mnist(target: Path, base_url: str = FASHION_MNIST_URL) -> None:
    """Fetch the four original files into ``target`` (atomic per file)."""
    target.mkdir(parents=True, exist_ok=True)
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        dest = target / f"{stem}.gz"
        if dest.exists():
            continue
        tmp = dest.with_suffix(".part")
        try:
            with urllib.request.urlopen(base_url + dest.name, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataNotFoundError(f"could not download {base_url + dest.name}: {e}") from e
        os.replace(tmp, dest)


def _require_dir(data_dir, sub: str, what: str) -> Path:
    for root in [Path(p) for p in (data_dir, os.environ.get("ROUTESCOPE_DATA")) if p]:
        for folder in (root / sub, root):
            if folder.is_dir() and any(folder.iterdir()):
                return folder
    raise DataNotFoundError(f"{what} not found: pass --data-dir (or set $ROUTESCOPE_DATA) to a folder holding {sub}/")


def load_cifar(split: str, data_dir, num_classes: int) -> tuple[TensorImages, tuple[str, ...]]:
    """The python-pickle release of CIFAR-10/100 (cifar-10-batches-py, cifar-100-python)."""
    sub = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    folder = _require_dir(data_dir, sub, f"CIFAR-{num_classes}")
    if num_classes == 10:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key, meta_file, names_key = b"labels", "batches.meta", b"label_names"
    else:
        files, label_key, meta_file, names_key = [split], b"fine_labels", "meta", b"fine_label_names"
    missing = [name for name in (*files, meta_file) if not (folder / name).is_file()]
    if missing:
        raise DataNotFoundError(
            f"CIFAR-{num_classes} not found: {folder} lacks {', '.join(missing)} (pass --data-dir "
            f"or set $ROUTESCOPE_DATA to a folder holding {sub}/)"
        )
    images, labels = [], []
    for name in files:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels += list(batch[label_key])
    with open(folder / meta_file, "rb") as f:
        classes = tuple(n.decode() for n in pickle.load(f, encoding="bytes")[names_key])
    return TensorImages(
        torch.from_numpy(np.concatenate(images)), torch.tensor(labels), [folder / n for n in files]
    ), classes


def load_svhn(split: str, data_dir) -> TensorImages:
    """The cropped-digits .mat release (train_32x32.mat, test_32x32.mat); label 10 means digit 0."""
    from scipy.io import loadmat

    folder = _require_dir(data_dir, "svhn", "SVHN")
    if not (folder / f"{split}_32x32.mat").is_file():
        raise DataNotFoundError(
            f"SVHN not found: no {split}_32x32.mat in {folder} (pass --data-dir or set "
            "$ROUTESCOPE_DATA to a folder holding svhn/)"
        )
    mat = loadmat(folder / f"{split}_32x32.mat")
    images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))
    labels = torch.from_numpy(mat["y"].astype(np.int64).ravel() % 10)
    return TensorImages(images, labels, [folder / f"{split}_32x32.mat"])


def image_root(name: str, split: str, data_dir=None) -> Path:
    """The folder of an ImageFolder tree's ``split`` (``DIR/train``, ``DIR/val``, or ``DIR`` itself), or of a plain
    folder of images (``name == "folder"``: ``DIR``)."""
    if name == "folder":
        return _require_dir(data_dir, ".", "image folder")
    sub = "train" if split == "train" else "val"
    root = _require_dir(data_dir, sub, "ImageFolder tree")
    if root.name != sub and (root / split).is_dir():
        root = root / split
    return root


def load_dataset(
    name: str, split: str, data_dir=None, download: bool = False, image_size: int = 32
) -> tuple[Dataset, DatasetInfo]:
    """Return ``(dataset, info)`` for ``split`` in {"train", "test"}; images are uint8 (C, H, W)."""
    if split not in ("train", "test"):
        raise UsageError(f"split must be 'train' or 'test', not {split!r}")
    if name == "fashion-mnist":
        return load_fashion_mnist(split, data_dir, download), FASHION_MNIST
    if name == "fashion-mnist-subset":
        return load_fashion_mnist("test", BUNDLED_SUBSET), FASHION_MNIST
    if name == "cifar10":
        return load_cifar(split, data_dir, 10)[0], CIFAR10
    if name == "cifar100":
        data, classes = load_cifar(split, data_dir, 100)
        return data, DatasetInfo("cifar100", classes, (3, 32, 32), CIFAR100_MEAN, CIFAR100_STD)
    if name == "svhn":
        return load_svhn(split, data_dir), SVHN
    if name in ("imagefolder", "folder"):
        data = ImageFolderImages(image_root(name, split, data_dir), image_size, labelled=name == "imagefolder")
        return data, DatasetInfo(name, tuple(data.classes), (3, image_size, image_size), IMAGENET_MEAN, IMAGENET_STD)
    raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(TEST_SET_NAMES)}")


# --- tensors the model sees ----------------------------------------------------------------------------


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float, scaled to [0, 1] and standardized per channel."""
    x = images.float().div_(255)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def augment(images: torch.Tensor, hflip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched random crop (zero padding of 1/8 of the side) and horizontal flip, on uint8 or float."""
    n, _, h, w = images.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(images.device)  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None]).to(images.device)  # (n, w)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(flip[:, None].to(images.device), cols.flip(1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()
