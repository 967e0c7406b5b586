"""How far an input is from the images a model was trained on: a few pixel statistics of what the model saw
(brightness, contrast, dark background, bright pixels) against their spread over the model's test images, and
the colour of the original picture where the model's data are grey. Flags the inputs whose prediction deserves
less trust, with one line that says why."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

STATS = {  # name -> (what a sentence calls it, how it reads)
    "mean": "brightness",
    "std": "contrast",
    "dark": "dark background",
    "light": "bright pixels",
}
DARK, LIGHT = 0.1, 0.9  # a pixel under 10% of full scale is background-dark, over 90% bright
FAR = 4.0  # a statistic this many standard deviations from the test images' mean: unlike them whatever the confidence
NEAR = 2.5  # this far and predicted with low confidence: flagged too
LOW_CONFIDENCE = 0.6
COLOUR = 0.15  # mean saturation over which a picture is a colour photo (grey data sets: 0)


def pixel_stats(pixels: np.ndarray) -> dict[str, float]:
    """The statistics of ``STATS`` of one picture as the model saw it ((H, W) or (H, W, 3) uint8), each in 0..1."""
    grey = np.asarray(pixels, dtype=np.float64) / 255.0
    grey = grey.mean(axis=2) if grey.ndim == 3 else grey
    return {
        "mean": float(grey.mean()),
        "std": float(grey.std()),
        "dark": float((grey < DARK).mean()),
        "light": float((grey > LIGHT).mean()),
    }


def colourfulness(img: Image.Image) -> float:
    """Mean HSV saturation (0..1) of a picture, on a small copy: 0 for a grey one."""
    small = img.convert("RGB")
    small.thumbnail((64, 64))
    return float(np.asarray(small.convert("HSV"), dtype=np.float64)[..., 1].mean() / 255.0)


@dataclass(frozen=True)
class Reference:
    """The spread of ``pixel_stats`` over a model's test images, and whether those images have colour."""

    name: str  # e.g. "Fashion-MNIST"
    mean: dict[str, float]
    std: dict[str, float]
    coloured: bool
    n: int


def reference(pictures, name: str, coloured: bool) -> Reference:
    """``Reference`` of an iterable of pictures as the model takes them (uint8 (H, W) or (H, W, 3))."""
    rows = [pixel_stats(p) for p in pictures]
    if not rows:
        raise ValueError("no reference images")
    table = {k: np.array([r[k] for r in rows]) for k in STATS}
    return Reference(
        name,
        {k: float(v.mean()) for k, v in table.items()},
        {k: float(max(v.std(), 0.02)) for k, v in table.items()},  # a floor: a statistic that never varies
        coloured,
        len(rows),
    )


@dataclass(frozen=True)
class Familiarity:
    """How far one input is from the reference: ``distance`` (the largest |z| of its statistics), the statistic
    that is furthest, the original's colour, and whether it is ``flagged`` with the one-line ``reason``."""

    distance: float
    furthest: str
    colour: float
    flagged: bool
    reason: str


def familiarity(pixels: np.ndarray, colour: float, confidence: float, ref: Reference) -> Familiarity:
    """Flag an input whose statistics lie ``FAR`` from the reference, ``NEAR`` and with a confidence under
    ``LOW_CONFIDENCE``, or a colour photo shown to a model of grey images."""
    stats = pixel_stats(pixels)
    z = {k: (stats[k] - ref.mean[k]) / ref.std[k] for k in STATS}
    furthest = max(z, key=lambda k: abs(z[k]))
    distance = abs(z[furthest])
    colour_photo = colour > COLOUR and not ref.coloured
    low = confidence < LOW_CONFIDENCE
    flagged = colour_photo or distance > FAR or (distance > NEAR and low)
    parts = []
    if colour_photo:
        parts.append(f"a colour photo far from {ref.name}'s grey images (the model saw a grey copy)")
    if distance > NEAR:
        word = STATS[furthest]
        parts.append(
            f"its {word} is {stats[furthest]:.0%} where {ref.name}'s test images have {ref.mean[furthest]:.0%} "
            f"± {ref.std[furthest]:.0%} ({distance:.1f} standard deviations away)"
        )
    if low:
        parts.append(f"the model is only {confidence:.0%} confident")
    reason = "; ".join(parts) if flagged else ""
    return Familiarity(distance, furthest, colour, flagged, reason[:1].upper() + reason[1:])
