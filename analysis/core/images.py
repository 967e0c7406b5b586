"""Turn any user image into the exact tensor a model expects, or a clear ``ImageError``.

Decoding is here (animated images use their first frame; oversized images are refused before decoding); the
conversion to what the model sees is ``models.preprocess``, the same code the training and test-set readers use.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from routescope.models.data import normalize
from routescope.models.preprocess import MAX_PIXELS, to_pixels

MAX_BYTES = 20 * 1024 * 1024  # refuse before reading: an upload or file larger than any image the app needs


class ImageError(ValueError):
    """The input cannot be used as an image; the message is meant for the user."""


@dataclass
class ModelInput:
    """The normalized tensor (1, C, H, W), the uint8 picture of it, and what was done to get there."""

    tensor: torch.Tensor
    pixels: np.ndarray  # (H, W) or (H, W, 3), uint8: what the model saw, before normalization
    notes: list[str] = field(default_factory=list)
    # the notes that say the file held more than the model sees (frames, alpha, bit depth, colour space):
    # the app shows them as warnings, the routine fitting steps only as captions
    warnings: list[str] = field(default_factory=list)


def _display_name(source: bytes | str | os.PathLike, name: str | None) -> str:
    return name or (Path(source).name if not isinstance(source, bytes) else "image")


def open_image(source: bytes | str | os.PathLike, name: str | None = None) -> Image.Image:
    """Decode fully (first frame), so every failure surfaces here as an ``ImageError``."""
    name = _display_name(source, name)
    try:
        if isinstance(source, bytes):
            data = source
        else:
            if not Path(source).is_file():
                raise ImageError(f"{name}: no such file")
            if Path(source).stat().st_size > MAX_BYTES:
                raise ImageError(f"{name}: file is over the {MAX_BYTES // 2**20} MB image size limit")
            data = Path(source).read_bytes()
        if len(data) == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
        if len(data) > MAX_BYTES:
            raise ImageError(f"{name}: file is over the {MAX_BYTES // 2**20} MB image size limit")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(
                    f"{name}: {img.width}x{img.height} pixels is over the {MAX_PIXELS // 10**6}-megapixel limit"
                )
            img.seek(0)
            img.load()
            # what later steps read lazily from the file, read now (Pillow caches both), so a broken frame
            # table or EXIF block fails here: the frame count and the EXIF orientation
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.getexif()
        return img
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: image is too large to decode safely (decompression bomb guard)") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        KeyError,
        TypeError,
        struct.error,
        ZeroDivisionError,
    ) as e:
        # what Pillow's format plugins raise on a corrupt file (a missing tag, a short read, a bad header field)
        raise ImageError(f"{name}: broken or truncated image ({type(e).__name__}: {str(e)[:160]})") from None


def to_model_input(img: Image.Image, meta: dict) -> ModelInput:
    """Convert a decoded image for a model described by ``meta`` (``models.preprocess.to_pixels``), normalized."""
    pixels, notes, warnings = to_pixels(img, meta)
    picture = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    return ModelInput(normalize(pixels[None], meta["mean"], meta["std"]), picture, notes, warnings)


def load_model_input(source: bytes | str | os.PathLike, meta: dict, name: str | None = None) -> ModelInput:
    """Decode and convert; a mode Pillow decodes but cannot convert (e.g. LAB) is an ``ImageError`` too."""
    name = _display_name(source, name)
    img = open_image(source, name)
    try:
        return to_model_input(img, meta)
    except (ValueError, OSError) as e:
        raise ImageError(f"{name}: cannot convert this {img.mode} image ({e})") from None
