"""Read a user's zip of test images (an ImageFolder tree or a flat folder of images) without trusting it.

A zip is a list of claims: a name can point outside any folder, a declared size can lie, a few kilobytes can
inflate to gigabytes. So every name and declared size is checked before anything is decompressed, each member
is read with a bounded read into memory (never extracted, nothing is written to disk), and each image is decoded
from those bytes by ``images.open_image``, one at a time, under the same limits as a single uploaded image.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import threading
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import torch
from PIL import Image
from torch.utils.data import Dataset

from routescope.models.data import ImageFolderImages
from routescope.models.preprocess import to_pixels

from .images import MAX_BYTES, MAX_PIXELS, ImageError, open_image
from .testsets import UNLABELLED, ModelImages

IMAGE_EXTENSIONS = ImageFolderImages.EXTENSIONS  # what counts as an image file here is what training reads
# a member below this size cannot bomb anything; above it a ratio over the limit is refused (a flat-colour
# BMP of a few hundred kilobytes legitimately compresses 1000:1)
RATIO_FLOOR_BYTES = 2**20
_ENCRYPTED = 0x1  # general purpose flag bit 0


@dataclass(frozen=True)
class ArchiveLimits:
    """How much one archive may hold; the per-image limits are those of a single uploaded image."""

    max_total_bytes: int = 512 * 2**20  # all members, uncompressed, as declared and as read
    max_file_bytes: int = MAX_BYTES  # one member: a bigger image is skipped, never decompressed
    max_files: int = 20_000
    max_megapixels: float = MAX_PIXELS / 1e6  # checked from the image header, before decoding
    max_ratio: float = 100.0  # uncompressed / compressed size of one member: the zip-bomb guard


DEFAULT_LIMITS = ArchiveLimits()


class ArchiveError(ValueError):
    """The archive as a whole cannot be used; the message (one sentence) is meant for the user."""


@dataclass
class ArchiveTestSet:
    """The usable images of an archive, by member name, with the label its folder gives (None: unlabelled).

    Labels index ``class_names`` when they were given, else ``classes_found``. Only names are held: an image's
    bytes are read again from the (compressed) archive by ``image_bytes`` when needed.
    """

    layout: str  # "imagefolder" (class folders) or "flat" (no folders: every image unlabelled)
    items: list[tuple[str, int | None]]
    classes_found: list[str]
    skipped: list[tuple[str, str]]  # (member name, reason) for what is not a usable image
    unmatched_folders: list[str]  # folders that are not model classes: their images are kept, unlabelled
    _source: bytes | str | os.PathLike = field(repr=False, compare=False)
    _infos: list[zipfile.ZipInfo] = field(repr=False, compare=False)
    _limits: ArchiveLimits = field(repr=False, compare=False)
    _zip: zipfile.ZipFile | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.items)

    def image_bytes(self, i: int) -> bytes:
        """The file bytes of ``items[i]``, read again under the same bounds (the archive file may have changed)."""
        if self._zip is None:
            self._zip = _open_zip(self._source)
        return _read_member(self._zip, self._infos[i], self._limits.max_file_bytes)

    def close(self) -> None:
        """Release the archive file (a path source keeps it open between ``image_bytes`` calls)."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> ArchiveTestSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # picklable (e.g. for a cache): the open archive is reopened on demand
        return {**self.__dict__, "_zip": None}


def _open_zip(source: bytes | str | os.PathLike) -> zipfile.ZipFile:
    if not isinstance(source, bytes) and not os.path.isfile(source):
        raise ArchiveError(f"{os.fspath(source)}: no such file")
    try:
        return zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        raise ArchiveError("this file is not a zip archive (or it is damaged); upload a .zip of images") from None


def _parts(name: str) -> tuple[str, ...]:
    """A member's path components; an absolute path or a '..' would escape any folder, so the archive is refused."""
    path = name.replace("\\", "/")  # zips made on Windows may use backslashes
    if path.startswith("/") or re.match(r"[A-Za-z]:", path) or ".." in path.split("/"):
        raise ArchiveError(
            f"the archive member {name!r} points outside the archive (absolute path or '..'), so the archive is refused"
        )
    return tuple(p for p in path.split("/") if p not in ("", "."))


def _mb(n: float) -> str:
    return f"{n / 2**20:.3g} MB"


def _check_archive(infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    """Whole-archive refusals from the central directory alone, before any member is decompressed."""
    files = [info for info in infos if not info.is_dir()]
    if len(files) > limits.max_files:
        raise ArchiveError(f"the archive holds {len(files):,} files, over the limit of {limits.max_files:,}")
    total = sum(info.file_size for info in files)
    if total > limits.max_total_bytes:
        raise ArchiveError(f"the archive unpacks to {_mb(total)}, over the {_mb(limits.max_total_bytes)} limit")
    for info in infos:
        name = info.filename
        _parts(name)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveError(f"the archive member {name!r} is a symbolic link, which an upload may not contain")
        if info.flag_bits & _ENCRYPTED:
            raise ArchiveError(f"the archive member {name!r} is encrypted; zip the images without a password")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
            raise ArchiveError(
                f"the archive member {name!r} inflates {ratio:,.0f} times (over {limits.max_ratio:g}), "
                "the mark of a zip bomb, so the archive is refused"
            )


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """Decompress one member into memory: never more than ``limit`` bytes, nor more than it declares.

    Reading at most declared + 1 bytes per member also bounds the total by the declared total checked before.
    """
    try:
        with zf.open(info) as f:
            data = f.read(min(limit, info.file_size) + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as e:
        raise ImageError(f"{info.filename}: damaged or unsupported zip member ({str(e)[:120]})") from None
    if len(data) > info.file_size:
        raise ArchiveError(
            f"the archive member {info.filename!r} holds more than the size it declares, so the archive is refused"
        )
    if len(data) > limit:
        raise ImageError(f"{info.filename}: file is over the {_mb(limit)} image size limit")
    return data


def _decode_problem(data: bytes, name: str, limits: ArchiveLimits) -> str | None:
    """Why these bytes are not a usable image, or None; the pixel count is read from the header first."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # any header Pillow cannot read: open_image below decodes it again and says why
        width = height = 0
    if width * height > limits.max_megapixels * 1e6:
        return f"{width}x{height} pixels is over the {limits.max_megapixels:g}-megapixel limit"
    try:
        open_image(data, name)
    except ImageError as e:
        return str(e).removeprefix(f"{name}: ")
    return None


def _class_key(name: str) -> str:
    """Folder names cannot hold '/' and people write 'ankle_boot': compare case- and punctuation-blind."""
    return re.sub(r"[\W_]+", "", name.casefold())


def _few(names: Sequence[str], n: int = 4) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def read_image_archive(
    data: bytes | str | os.PathLike, class_names: Sequence[str] | None = None, limits: ArchiveLimits = DEFAULT_LIMITS
) -> ArchiveTestSet:
    """Check and index a zip of test images; raise ``ArchiveError`` when the archive as a whole is unusable.

    Layout: images inside folders are an ImageFolder tree labelled by their first folder (deeper folders belong to
    it, as in ``ImageFolderImages``); one folder wrapping everything is dropped; images at the top are unlabelled.
    A lone top folder named after a model class is that class, not a wrapper. Every image is decoded once here,
    so ``items`` holds only images that decode; their bytes are not kept.
    """
    zf = _open_zip(data)
    try:
        infos = zf.infolist()
        _check_archive(infos, limits)
        skipped: list[tuple[str, str]] = []
        candidates: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        for info in infos:
            parts = _parts(info.filename)
            if info.is_dir() or not parts:
                continue
            suffix = PurePosixPath(parts[-1]).suffix.lower()
            if any(p.startswith(".") or p == "__MACOSX" for p in parts):
                skipped.append((info.filename, "hidden file or macOS metadata"))
            elif suffix not in IMAGE_EXTENSIONS:
                skipped.append((info.filename, f"not an image file ({suffix or 'no extension'})"))
            else:
                candidates.append((info, parts))
        if not candidates:
            raise ArchiveError(f"the archive holds no image files ({', '.join(IMAGE_EXTENSIONS)})")

        # the first class wins when two names compare equal once punctuation is dropped
        index = {} if class_names is None else {_class_key(c): i for i, c in reversed(list(enumerate(class_names)))}

        def label_of(folder: str) -> int | None:
            if class_names is not None and folder in class_names:
                return list(class_names).index(folder)
            return index.get(_class_key(folder))

        paths = [parts for _, parts in candidates]
        tops = {p[0] for p in paths if len(p) > 1}
        wrapped = len(tops) == 1 and all(len(p) > 1 for p in paths)
        if wrapped and class_names is not None and label_of(next(iter(tops))) is not None:
            wrapped = any(len(p) > 2 and label_of(p[1]) is not None for p in paths)  # else the lone folder is a class
        folders = [(p[int(wrapped)] if len(p) > 1 + int(wrapped) else None) for p in paths]
        classes_found = sorted({f for f in folders if f is not None})
        if class_names is None:
            labels: dict[str, int | None] = {f: i for i, f in enumerate(classes_found)}
        else:
            labels = {f: label_of(f) for f in classes_found}
        unmatched = [f for f in classes_found if labels[f] is None]
        if classes_found and len(unmatched) == len(classes_found):
            raise ArchiveError(
                f"the folders {_few(classes_found)} are not the model's classes "
                f"({_few(list(class_names or []))}): name each folder after one of them, "
                "or zip the images without folders to use them unlabelled"
            )

        items: list[tuple[str, int | None]] = []
        first_problem = ""
        kept: list[zipfile.ZipInfo] = []
        for (info, _), folder in zip(candidates, folders):
            name = info.filename
            if info.file_size > limits.max_file_bytes:  # from the declared size: never decompressed
                problem: str | None = f"file is over the {_mb(limits.max_file_bytes)} image size limit"
            else:
                try:
                    problem = _decode_problem(_read_member(zf, info, limits.max_file_bytes), name, limits)
                except ImageError as e:
                    problem = str(e).removeprefix(f"{name}: ")
            if problem:
                skipped.append((name, problem))
                first_problem = first_problem or f"{name!r}: {problem}"
            else:
                items.append((name, None if folder is None else labels[folder]))
                kept.append(info)
        if not items:
            raise ArchiveError(f"none of the {len(candidates)} image files could be used (for example {first_problem})")
    except BaseException:
        zf.close()
        raise
    layout = "imagefolder" if classes_found else "flat"
    return ArchiveTestSet(layout, items, classes_found, skipped, unmatched, data, kept, limits, zf)


class ArchiveImages(Dataset):
    """An archive's images as the model described by ``meta`` takes them, decoded one at a time when asked for
    (``models.preprocess.to_pixels``); the label is the model's class index, -1 for an unlabelled image."""

    _reading = threading.Lock()  # an archive holds one open zip file: threads read its members one at a time

    def __init__(self, archive: ArchiveTestSet, meta: dict) -> None:
        self.archive, self.meta = archive, meta
        self.labels = torch.tensor([UNLABELLED if label is None else label for _, label in archive.items])

    def __len__(self) -> int:
        return len(self.archive)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        name = self.archive.items[i][0]
        with self._reading:
            data = self.archive.image_bytes(i)
        pixels, _, _ = to_pixels(open_image(data, name), self.meta)
        return pixels, int(self.labels[i])


def archive_test_set(archive: ArchiveTestSet, meta: dict, fingerprint: str) -> ModelImages:
    """An archive read with ``meta["classes"]`` as a test set (``stored_table``, sweeps, ...); ``fingerprint``
    identifies the archive's content (``archive_fingerprint`` of its bytes)."""
    classes = tuple(meta["classes"])
    return ModelImages(ArchiveImages(archive, meta), list(range(len(classes))), meta, fingerprint, classes)


def archive_fingerprint(data: bytes) -> str:
    """What identifies an uploaded archive: the SHA-256 of its bytes (16 hex digits, as other test sets)."""
    return hashlib.sha256(data).hexdigest()[:16]
