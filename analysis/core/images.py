"""Turn any user image into the exact tensor a model expects, or a clear ``ImageError``.

Fashion-MNIST models see 28x28 grayscale with a light object on a black background, so a photo of a
shoe on white is inverted, padded to a square with its own background and fitted to 28x28. RGB models
get a shorter-side resize and a center crop. Animated images use their first frame; 16-bit, CMYK,
palette and transparent images are converted; oversized images are refused before decoding.
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
from PIL import Image, ImageOps, UnidentifiedImageError

from models.data import normalize

MAX_PIXELS = 40_000_000  # refuse before decoding: a decompression bomb is a tiny file that inflates
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
                raise ImageError(f"{name}: {img.width}x{img.height} pixels is over the {MAX_PIXELS // 10**6}-megapixel limit")
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
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error, ZeroDivisionError) as e:
        # what Pillow's format plugins raise on a corrupt file (a missing tag, a short read, a bad header field)
        raise ImageError(f"{name}: broken or truncated image ({type(e).__name__}: {str(e)[:160]})") from None


def _to_rgb_or_gray(img: Image.Image, notes: list[str]) -> Image.Image:
    """Normalize odd modes to 'L' or 'RGB'; transparency is composited on white."""
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"animated ({img.n_frames} frames): used the first frame")
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        array = (array - lo) / (hi - lo if hi > lo else 1.0) * 255
        depth = "16-bit" if img.mode.startswith("I;16") else f"32-bit ({img.mode})"
        notes.append(f"{depth} grayscale image rescaled to 8 bits")
        return Image.fromarray(array.round().astype(np.uint8), "L")
    if img.mode == "P":  # a palette without a transparent entry is plain RGB
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] == 255:  # an alpha channel that is opaque everywhere
            return rgba.convert("RGB")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparency composited on white")
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode == "CMYK":
        notes.append("CMYK converted to RGB")
        return img.convert("RGB")
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("RGB")


def _fit_dark_background(gray: Image.Image, size: tuple[int, int], notes: list[str]) -> Image.Image:
    """Fashion-MNIST convention: invert light backgrounds, pad to square, fit to ``size``."""
    array = np.asarray(gray)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    if border.mean() > 127:
        gray = ImageOps.invert(gray)
        notes.append("light background: inverted to the data set's dark background")
    background = int(np.median(np.concatenate([np.asarray(gray)[0], np.asarray(gray)[-1]])))
    if gray.size != size:
        side = max(gray.size)
        if side * side > MAX_PIXELS:  # a strip (e.g. 1 x 60000): shrink first, or its square would be gigapixels
            scale = int(MAX_PIXELS ** 0.5) / side
            gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))), Image.BOX)
            side = max(gray.size)
        square = Image.new("L", (side, side), background)
        square.paste(gray, ((side - gray.width) // 2, (side - gray.height) // 2))
        gray = square.resize(size, Image.LANCZOS, reducing_gap=3.0)
        notes.append(f"fitted to {size[0]}x{size[1]}")
    return gray


def _center_crop(img: Image.Image, side: int, notes: list[str]) -> Image.Image:
    if img.size == (side, side):
        return img
    scale = side / min(img.size)
    img = img.resize((max(side, round(img.width * scale)), max(side, round(img.height * scale))), Image.BICUBIC)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    notes.append(f"resized and center-cropped to {side}x{side}")
    return img.crop((left, top, left + side, top + side))


def to_model_input(img: Image.Image, meta: dict) -> ModelInput:
    """Convert a decoded image for a model described by ``meta`` (input_size, mean, std, dark_background)."""
    channels, height, width = meta["input_size"]
    notes: list[str] = []
    img = _to_rgb_or_gray(img, notes)
    warnings = list(notes)  # so far only what the file held beyond 8-bit RGB/L: see ``ModelInput.warnings``
    if channels == 1:
        if img.mode != "L":
            notes.append("converted to grayscale")
        gray = img.convert("L")
        if meta.get("dark_background"):
            gray = _fit_dark_background(gray, (width, height), notes)
        elif gray.size != (width, height):
            gray = _center_crop(gray, height, notes)
        pixels = np.asarray(gray, dtype=np.uint8).copy()
        images = torch.from_numpy(pixels)[None, None]
    else:
        rgb = _center_crop(img.convert("RGB"), height, notes)
        pixels = np.asarray(rgb, dtype=np.uint8).copy()
        images = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    return ModelInput(normalize(images, meta["mean"], meta["std"]), pixels, notes, warnings)


def load_model_input(source: bytes | str | os.PathLike, meta: dict, name: str | None = None) -> ModelInput:
    """Decode and convert; a mode Pillow decodes but cannot convert (e.g. LAB) is an ``ImageError`` too."""
    name = _display_name(source, name)
    img = open_image(source, name)
    try:
        return to_model_input(img, meta)
    except (ValueError, OSError) as e:
        raise ImageError(f"{name}: cannot convert this {img.mode} image ({e})") from None
