"""A zip of test images becomes labelled or unlabelled items, skips what is no image, and refuses what is unsafe."""

import io
import pickle
import stat
import struct
import zipfile

import pytest
from PIL import Image

from routescope.analysis.core.archive import ArchiveError, ArchiveLimits, read_image_archive
from routescope.models.data import CIFAR10, FASHION_MNIST

from helpers import encode, huge_png

CLASSES = ("airplane", "cat", "dog")
RED, GREEN, BLUE = (220, 20, 20), (20, 220, 20), (20, 20, 220)


def img(color=RED, fmt="PNG", size=(6, 5)) -> bytes:
    return encode(Image.new("RGB", size, color), fmt)


def make_zip(members: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """members: name -> bytes, or name -> ZipInfo-ready (info, bytes) for odd attributes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, content in members.items():
            if isinstance(content, tuple):
                zf.writestr(*content)
            else:
                zf.writestr(name, content)
    return buffer.getvalue()


def patch_central_directory(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Overwrite one field of the (first) central-directory entry: the part of a zip that readers trust."""
    end = data.rindex(b"PK\x05\x06")
    start = struct.unpack_from("<I", data, end + 16)[0]
    assert data[start : start + 4] == b"PK\x01\x02"
    out = bytearray(data)
    struct.pack_into(fmt, out, start + offset, value)
    return bytes(out)


def pixel(data: bytes) -> tuple:
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0))


def test_imagefolder_labels_follow_class_names_and_bytes_load_lazily():
    data = make_zip({"cat/1.png": img(RED), "cat/2.jpg": img(GREEN, "JPEG"), "dog/3.png": img(BLUE)})
    archive = read_image_archive(data, CLASSES)
    assert archive.layout == "imagefolder"
    assert dict(archive.items) == {"cat/1.png": 1, "cat/2.jpg": 1, "dog/3.png": 2}
    assert archive.classes_found == ["cat", "dog"]
    assert archive.skipped == [] and archive.unmatched_folders == []
    by_name = {name: i for i, (name, _) in enumerate(archive.items)}
    assert pixel(archive.image_bytes(by_name["cat/1.png"])) == RED
    assert pixel(archive.image_bytes(by_name["dog/3.png"])) == BLUE
    copy = pickle.loads(pickle.dumps(archive))  # e.g. a cache: reopens the archive on demand
    assert pixel(copy.image_bytes(by_name["dog/3.png"])) == BLUE


def test_wrapped_tree_from_a_path_skips_hidden_files(tmp_path):
    path = tmp_path / "mydata.zip"
    path.write_bytes(
        make_zip(
            {
                "top/": b"",
                "top/cat/x.png": img(RED),
                "top/dog/y.png": img(BLUE),
                "top/.DS_Store": b"\0\0",
                "__MACOSX/top/cat/._x.png": b"\0\5\26\7",
            }
        )
    )
    with read_image_archive(path, CLASSES) as archive:
        assert archive.layout == "imagefolder"
        assert dict(archive.items) == {"top/cat/x.png": 1, "top/dog/y.png": 2}
        assert archive.classes_found == ["cat", "dog"]
        assert {name for name, _ in archive.skipped} == {"top/.DS_Store", "__MACOSX/top/cat/._x.png"}
        assert all("hidden" in reason for _, reason in archive.skipped)
        assert pixel(archive.image_bytes(0)) in (RED, BLUE)


def test_without_class_names_labels_index_the_folders_found():
    archive = read_image_archive(make_zip({"zebra/1.png": img(), "ant/2.png": img(), "ant/sub/3.png": img()}), None)
    assert archive.classes_found == ["ant", "zebra"]
    assert dict(archive.items) == {"zebra/1.png": 1, "ant/2.png": 0, "ant/sub/3.png": 0}


@pytest.mark.parametrize("prefix", ["", "photos/"])
def test_flat_folder_is_unlabelled(prefix):
    data = make_zip({f"{prefix}a.png": img(), f"{prefix}b.jpeg": img(GREEN, "JPEG")})
    archive = read_image_archive(data, CIFAR10.classes)  # flat: no class folders, so no mismatch either
    assert archive.layout == "flat"
    assert dict(archive.items) == {f"{prefix}a.png": None, f"{prefix}b.jpeg": None}
    assert archive.classes_found == [] and archive.unmatched_folders == []


def test_a_lone_folder_named_after_a_class_is_that_class():
    data = make_zip({"cat/1.png": img(), "cat/2.png": img()})
    assert dict(read_image_archive(data, CLASSES).items) == {"cat/1.png": 1, "cat/2.png": 1}
    assert read_image_archive(data, None).layout == "flat"  # without class names it is just a wrapper


def test_images_beside_class_folders_are_unlabelled():
    archive = read_image_archive(make_zip({"loose.png": img(), "dog/1.png": img()}), CLASSES)
    assert archive.layout == "imagefolder"
    assert dict(archive.items) == {"loose.png": None, "dog/1.png": 2}


def test_folder_names_match_classes_loosely():
    data = make_zip({"t-shirt_top/1.png": img(), "Ankle boot/2.png": img(), "SNEAKER/3.png": img()})
    archive = read_image_archive(data, FASHION_MNIST.classes)
    assert dict(archive.items) == {"t-shirt_top/1.png": 0, "Ankle boot/2.png": 9, "SNEAKER/3.png": 7}


def test_non_images_broken_and_empty_files_are_skipped_not_fatal():
    good, noisy = img(), encode(Image.effect_noise((32, 32), 80).convert("RGB"))
    data = make_zip(
        {
            "cat/ok.png": good,
            "cat/notes.txt": b"hello",
            "cat/broken.png": noisy[: len(noisy) // 2],
            "cat/empty.png": b"",
            "cat/fake.jpg": b"this is text, not a JPEG",
        }
    )
    archive = read_image_archive(data, CLASSES)
    assert archive.items == [("cat/ok.png", 1)]
    reasons = dict(archive.skipped)
    assert set(reasons) == {"cat/notes.txt", "cat/broken.png", "cat/empty.png", "cat/fake.jpg"}
    assert reasons["cat/notes.txt"] == "not an image file (.txt)"
    assert "broken or truncated" in reasons["cat/broken.png"]
    assert "empty file" in reasons["cat/empty.png"]
    assert "not an image file" in reasons["cat/fake.jpg"]


def test_oversize_and_too_many_pixels_are_skipped():
    noisy = encode(Image.effect_noise((64, 64), 80).convert("RGB"))
    data = make_zip(
        {
            "cat/small.png": img(size=(4, 4)),
            "cat/big.png": noisy,
            "cat/wide.png": img(size=(40, 40)),
            "cat/bomb.png": huge_png(),
        }
    )
    limits = ArchiveLimits(max_file_bytes=len(noisy) - 1, max_megapixels=0.001)
    archive = read_image_archive(data, CLASSES, limits)
    assert archive.items == [("cat/small.png", 1)]
    reasons = dict(archive.skipped)
    assert "size limit" in reasons["cat/big.png"]
    assert "40x40 pixels is over the 0.001-megapixel limit" == reasons["cat/wide.png"]
    assert "decompression bomb" in reasons["cat/bomb.png"]


@pytest.mark.parametrize("name", ["../evil.png", "/etc/x.png", "cat/../../evil.png", "C:\\evil.png"])
def test_paths_that_escape_are_refused(name):
    data = make_zip({"cat/ok.png": img(), name: img()})
    assert name in [info.filename for info in zipfile.ZipFile(io.BytesIO(data)).infolist()]
    with pytest.raises(ArchiveError, match="points outside the archive"):
        read_image_archive(data, CLASSES)


def test_symlink_member_is_refused():
    link = zipfile.ZipInfo("cat/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    data = make_zip({"cat/ok.png": img(), "link": (link, "/etc/passwd")})
    with pytest.raises(ArchiveError, match="symbolic link"):
        read_image_archive(data, CLASSES)


def test_encrypted_member_is_refused():
    data = patch_central_directory(make_zip({"cat/ok.png": img()}), 8, "<H", 0x1)
    with pytest.raises(ArchiveError, match="is encrypted; zip the images without a password"):
        read_image_archive(data, CLASSES)


def test_zip_bomb_is_refused_from_its_declared_ratio():
    data = make_zip({"cat/ok.png": img(), "cat/zeros.png": bytes(50 * 2**20)})
    assert len(data) < 100_000
    with pytest.raises(ArchiveError, match="zip bomb"):
        read_image_archive(data, CLASSES, ArchiveLimits(max_ratio=100))


def test_a_lying_declared_size_is_never_exceeded():
    # 20 MB of zeros that declare 1000 bytes: the ratio check sees nothing, the bounded read stops at 1000 bytes
    data = make_zip({"cat/zeros.png": bytes(20 * 2**20)})
    data = patch_central_directory(data, 24, "<I", 1000)
    assert zipfile.ZipFile(io.BytesIO(data)).infolist()[0].file_size == 1000
    with pytest.raises(ArchiveError, match="none of the 1 image files") as refused:
        read_image_archive(data, CLASSES)
    assert "damaged" in str(refused.value)


def test_too_many_files_and_too_large_in_total_are_refused():
    data = make_zip({f"cat/{i}.png": img() for i in range(4)})
    assert len(read_image_archive(data, CLASSES, ArchiveLimits(max_files=4))) == 4
    with pytest.raises(ArchiveError, match="holds 4 files, over the limit of 3"):
        read_image_archive(data, CLASSES, ArchiveLimits(max_files=3))
    with pytest.raises(ArchiveError, match="unpacks to .* over the"):
        read_image_archive(data, CLASSES, ArchiveLimits(max_total_bytes=4 * len(img()) - 1))


def test_folders_that_are_no_class_are_a_clear_error():
    data = make_zip({"kitty/1.png": img(), "doggo/2.png": img()})
    with pytest.raises(ArchiveError) as refused:
        read_image_archive(data, CIFAR10.classes)
    message = str(refused.value)
    assert "'doggo', 'kitty' are not the model's classes" in message
    assert "'airplane', 'automobile', 'bird', 'cat' and 6 more" in message


def test_partly_matching_folders_keep_unmatched_images_unlabelled():
    archive = read_image_archive(make_zip({"cat/1.png": img(), "kitty/2.png": img()}), CLASSES)
    assert archive.unmatched_folders == ["kitty"]
    assert dict(archive.items) == {"cat/1.png": 1, "kitty/2.png": None}


@pytest.mark.parametrize("content", [b"not a zip at all", img(), b""])
def test_a_file_that_is_not_a_zip_is_refused(tmp_path, content):
    with pytest.raises(ArchiveError, match="not a zip archive"):
        read_image_archive(content, CLASSES)
    path = tmp_path / "upload.zip"
    path.write_bytes(content)
    with pytest.raises(ArchiveError, match="not a zip archive"):
        read_image_archive(path, CLASSES)
    with pytest.raises(ArchiveError, match="no such file"):
        read_image_archive(tmp_path / "missing.zip", CLASSES)


def test_an_archive_without_images_is_refused():
    with pytest.raises(ArchiveError, match="no image files"):
        read_image_archive(make_zip({"readme.txt": b"hi", "cat/": b""}), CLASSES)
