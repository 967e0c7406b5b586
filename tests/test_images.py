"""Every kind of image a user may bring becomes the model's input, or a clear ImageError."""

import numpy as np
import pytest
from PIL import Image

from routescope.analysis.core.catalog import sample_images
from routescope.analysis.core.images import ImageError, load_model_input, open_image, to_model_input

from helpers import encode, huge_png, shoe_on_white

FMNIST_META = {"input_size": [1, 28, 28], "mean": [0.286], "std": [0.353], "dark_background": True}
RGB_META = {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "dark_background": False}


def test_samples_are_model_ready():
    paths = sample_images()
    assert len(paths) >= 20
    for path in paths:
        model_input = load_model_input(path, FMNIST_META)
        assert model_input.tensor.shape == (1, 1, 28, 28)
        assert model_input.pixels.shape == (28, 28)


def test_photo_on_white_is_inverted_and_fitted():
    model_input = to_model_input(shoe_on_white(), FMNIST_META)
    assert any("inverted" in n for n in model_input.notes)
    corner, centre = model_input.pixels[0, 0], model_input.pixels[14, 14]
    assert corner < 30 and centre > 200, "object should be light on a dark background"


@pytest.mark.parametrize("mode", ["CMYK", "RGBA", "LA", "P", "I;16", "1"])
def test_odd_modes_convert(mode):
    img = shoe_on_white(mode="RGB" if mode == "I;16" else mode)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)
        assert img.mode == "I;16"
    data = encode(img, "TIFF" if mode == "CMYK" else "PNG")
    model_input = load_model_input(data, FMNIST_META, f"x.{mode}")
    assert model_input.tensor.shape == (1, 1, 28, 28)
    assert model_input.pixels[14, 14] > model_input.pixels[0, 0]
    assert load_model_input(data, RGB_META).tensor.shape == (1, 3, 32, 32)


def test_animated_gif_uses_first_frame():
    frames = [shoe_on_white(), Image.new("RGB", (300, 200), (0, 0, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    model_input = load_model_input(data, FMNIST_META, "anim.gif")
    assert any("first frame" in n for n in model_input.notes)
    assert model_input.pixels[14, 14] > 200


def test_not_an_image():
    with pytest.raises(ImageError, match="not an image"):
        open_image(b"%PDF-1.4 definitely not pixels", "doc.pdf")


def test_truncated_image():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageError, match="broken or truncated"):
        open_image(data[: len(data) // 2], "cut.png")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageError, match="megapixel limit|decompression bomb"):
        open_image(huge_png(), "bomb.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "nope.png")
