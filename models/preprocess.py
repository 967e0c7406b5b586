"""The pixels a model sees, from a decoded picture: one conversion for training, analysis and uploads.

What the model expects comes from its meta (``input_size`` (C, H, W), ``dark_background``, ``crop_pct``):
Fashion-MNIST models see 28x28 grayscale with a light object on a black background, so a photo of a shoe on
white is inverted, padded to a square with its own background and fitted to 28x28. Other models get a resize of
the shorter side to ``H / crop_pct`` (1.0: to H; ImageNet evaluation uses 0.875) and a center crop. Odd modes
(16-bit, palette, CMYK, transparency) are converted and the conversion says so.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

MAX_PIXELS = 40_000_000  # refuse before decoding: a decompression bomb is a tiny file that inflates


def to_rgb_or_gray(img: Image.Image, notes: list[str]) -> Image.Image:
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


def fit_dark_background(gray: Image.Image, size: tuple[int, int], notes: list[str]) -> Image.Image:
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
            scale = int(MAX_PIXELS**0.5) / side
            gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))), Image.BOX)
            side = max(gray.size)
        square = Image.new("L", (side, side), background)
        square.paste(gray, ((side - gray.width) // 2, (side - gray.height) // 2))
        gray = square.resize(size, Image.LANCZOS, reducing_gap=3.0)
        notes.append(f"fitted to {size[0]}x{size[1]}")
    return gray


def center_crop(img: Image.Image, side: int, notes: list[str], crop_pct: float = 1.0) -> Image.Image:
    """Resize the shorter side to ``side / crop_pct``, then cut the centered ``side`` x ``side`` square."""
    if img.size == (side, side):
        return img
    short = max(side, round(side / crop_pct))
    scale = short / min(img.size)
    img = img.resize((max(short, round(img.width * scale)), max(short, round(img.height * scale))), Image.BICUBIC)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    notes.append(f"resized and center-cropped to {side}x{side}")
    return img.crop((left, top, left + side, top + side))


def to_pixels(img: Image.Image, meta: dict) -> tuple[torch.Tensor, list[str], list[str]]:
    """``img`` as the uint8 tensor (C, H, W) a model described by ``meta`` takes, before normalization; with the
    notes of what was done and the warnings (what the file held beyond 8-bit RGB/L: frames, alpha, depth)."""
    channels, height, width = meta["input_size"]
    notes: list[str] = []
    img = to_rgb_or_gray(img, notes)
    warnings = list(notes)
    if channels == 1:
        if img.mode != "L":
            notes.append("converted to grayscale")
        gray = img.convert("L")
        if meta.get("dark_background"):
            gray = fit_dark_background(gray, (width, height), notes)
        elif gray.size != (width, height):
            gray = center_crop(gray, height, notes, meta.get("crop_pct", 1.0))
        return torch.from_numpy(np.asarray(gray, dtype=np.uint8).copy())[None], notes, warnings
    if channels != 3:
        raise ValueError(f"a picture gives 1 or 3 channels, not the {channels} this model takes")
    rgb = center_crop(img.convert("RGB"), height, notes, meta.get("crop_pct", 1.0))
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1), notes, warnings
