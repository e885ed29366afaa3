"""Image folders are checked before the long work: real photos pass, a text file named .jpg, a truncated
JPEG and a PNG with a broken chunk fail with the file named, at both depths where the format allows."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from msmlp.data.imagecheck import require_decodable, undecodable
from msmlp.errors import InputError


@pytest.fixture
def folder(tmp_path, image_paths):
    for p in image_paths[:2]:
        shutil.copy(p, tmp_path / p.name)
    return tmp_path


def test_real_photos_decode_at_both_depths(image_paths):
    assert undecodable(image_paths, full=True) == []
    assert undecodable(image_paths, full=False) == []
    require_decodable(image_paths, "--calib")  # no error


def test_a_text_file_named_jpg_is_found_at_both_depths(folder):
    (folder / "notes.jpg").write_text("not an image")
    files = sorted(folder.iterdir())
    for full in (True, False):
        bad = undecodable(files, full=full)
        assert [p.name for p, _ in bad] == ["notes.jpg"] and "identify" in bad[0][1]
    with pytest.raises(
        InputError, match=r"--calib: cannot read '.*notes.jpg' as an image .*remove or replace"
    ):
        require_decodable(files, "--calib")


def test_a_truncated_jpeg_fails_the_full_decode(folder, image_paths):
    data = image_paths[0].read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 3])
    bad = undecodable(sorted(folder.iterdir()), full=True)
    assert [p.name for p, _ in bad] == ["cut.jpg"] and "OSError" in bad[0][1]


def test_a_png_with_a_broken_chunk_fails_the_header_check_too(tmp_path):
    path = tmp_path / "broken.png"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(path)
    raw = bytearray(path.read_bytes())
    raw[40] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    path.write_bytes(bytes(raw))
    for full in (True, False):
        assert [p.name for p, _ in undecodable([path], full=full)] == ["broken.png"]


def test_the_count_of_bad_files_is_in_the_one_line(folder):
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match=r"\(2 of 4 files fail\)"):
        require_decodable(sorted(folder.iterdir()), "--images")
