"""Regenerate the bundled Fashion-MNIST subset and the sample images from the full test set.

``python -m tools.make_samples [--data-dir D]``: the first 50 test images of each class go to
``models/assets/fashion-mnist-subset`` (original IDX format, read by the same code as the full set);
two per class become PNG samples in ``models/assets/samples``, plus a few photo-like variants (light background,
RGB, large) that show how uploads are converted.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageOps

from routescope.models.data import (
    BUNDLED_SUBSET,
    FASHION_MNIST,
    SAMPLE_IMAGES as SAMPLES,
    load_fashion_mnist,
    write_idx,
)

PER_CLASS = 50


def slug(label: str) -> str:
    return label.lower().replace("/", "-").replace(" ", "-")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    test = load_fashion_mnist("test", args.data_dir)
    labels = test.labels.numpy()
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in range(10)]))
    images = test.images[keep, 0].numpy()
    BUNDLED_SUBSET.mkdir(parents=True, exist_ok=True)
    write_idx(BUNDLED_SUBSET / "t10k-images-idx3-ubyte.gz", images)
    write_idx(BUNDLED_SUBSET / "t10k-labels-idx1-ubyte.gz", labels[keep].astype(np.uint8))
    SAMPLES.mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(FASHION_MNIST.classes):
        for k, i in enumerate(np.flatnonzero(labels[keep] == c)[:2]):
            Image.fromarray(images[i]).save(SAMPLES / f"{slug(name)}-{k + 1}.png")
    # photo-like variants: dark object on white, RGB, upscaled; the app converts them back
    for c, fmt in ((7, "jpg"), (8, "png"), (3, "webp")):
        i = np.flatnonzero(labels[keep] == c)[2]
        photo = ImageOps.invert(Image.fromarray(images[i])).resize((224, 224), Image.BICUBIC).convert("RGB")
        photo.save(SAMPLES / f"photo-{slug(FASHION_MNIST.classes[c])}.{fmt}")
    print(f"wrote {len(keep)} images to {BUNDLED_SUBSET} and samples to {SAMPLES}")


if __name__ == "__main__":
    main()
