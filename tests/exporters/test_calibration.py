"""Calibration batches: real images of every kind, preprocessed exactly like inference, cached by key."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import msmlp
import msmlp.exporters.calibration as calibration
from msmlp.data.transforms import list_images, preprocess
from msmlp.errors import InputError
from msmlp.exporters.calibration import calibration_batch, calibration_summary, split_calibration

CONFIG = msmlp.get_config("msmlp_micro")


@pytest.fixture
def mixed_folder(tmp_path: Path, image_paths: list[Path]) -> Path:
    """The real photos saved as RGB JPEG, PNG, greyscale JPEG and RGBA PNG (with transparency)."""
    folder = tmp_path / "calib"
    folder.mkdir()
    astronaut, brick, coffee, _grass, rocket = (Image.open(p) for p in image_paths)
    astronaut.convert("RGB").save(folder / "a_rgb.jpg", quality=92)
    coffee.convert("RGB").save(folder / "b_rgb.png")
    brick.convert("L").save(folder / "c_grey.jpg")
    rgba = rocket.convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, np.uint8)
    alpha[:, : rgba.width // 3] = 64  # a translucent band, composited on white by load_image
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "d_rgba.png")
    return folder


def test_mixed_formats_are_preprocessed_like_inference(mixed_folder: Path) -> None:
    files = list_images(mixed_folder)
    batch = calibration_batch(CONFIG, files, len(files))
    assert batch.shape == (4, *CONFIG.input_size) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, preprocess(files, CONFIG))
    # the four images are distinct inputs, and the greyscale one has equal channels before normalising
    assert len({row.tobytes() for row in batch}) == 4
    grey = (
        batch[2] * np.asarray(CONFIG.std, np.float32)[:, None, None] + np.asarray(CONFIG.mean)[:, None, None]
    )
    np.testing.assert_allclose(grey[0], grey[1], atol=1e-5)


def test_subset_is_seeded_and_drawn_from_the_folder(mixed_folder: Path) -> None:
    files = list_images(mixed_folder)
    singles = {preprocess([f], CONFIG)[0].tobytes(): f for f in files}
    a = calibration_batch(CONFIG, files, 2, seed=3)
    assert np.array_equal(a, calibration_batch(CONFIG, files, 2, seed=3))
    assert all(row.tobytes() in singles for row in a)
    assert len({row.tobytes() for row in a}) == 2
    picks = {tuple(calibration_summary(files, 2, seed=s)["files"]) for s in range(8)}
    assert len(picks) > 1  # the seed changes the subset


def test_small_folder_is_stretched_with_crops_and_said_so(
    mixed_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = list_images(mixed_folder)[:2]
    with caplog.at_level(logging.INFO, logger="msmlp"):
        batch = calibration_batch(CONFIG, files, 6, seed=0)
    assert batch.shape[0] == 6
    np.testing.assert_array_equal(batch[:2], preprocess(files, CONFIG))  # originals first
    originals = {row.tobytes() for row in batch[:2]}
    assert all(row.tobytes() not in originals for row in batch[2:])  # then new views
    assert "4 random crops/flips" in caplog.text
    summary = calibration_summary(files, 6)
    assert summary["distinct_images"] == 2 and summary["augmented_views"] == 4


def test_cache_is_reused_without_recomputing(
    mixed_folder: Path, tmp_out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, cache = list_images(mixed_folder), tmp_out / "calib.npy"
    first = calibration_batch(CONFIG, files, 8, cache=cache)
    side = json.loads((tmp_out / "calib.npy.json").read_text())
    assert side["shape"] == [8, *CONFIG.input_size] and side["augmented_views"] == 4
    assert sorted(p.name for p in tmp_out.iterdir()) == ["calib.npy", "calib.npy.json"]  # no temp files

    def fail(*a, **k):
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(calibration, "preprocess", fail)
    np.testing.assert_array_equal(calibration_batch(CONFIG, files, 8, cache=cache), first)


@pytest.mark.parametrize(
    "change",
    ["size", "seed", "config", "image_content", "file_added"],
)
def test_cache_is_invalidated_by_what_the_batch_depends_on(
    change: str, mixed_folder: Path, tmp_out: Path, image_paths: list[Path]
) -> None:
    files, cache = list_images(mixed_folder), tmp_out / "calib.npy"
    first = calibration_batch(CONFIG, files, 6, cache=cache)
    size, seed, config = 6, 0, CONFIG
    if change == "size":
        size = 7
    elif change == "seed":
        seed = 1
    elif change == "config":
        config = replace(CONFIG, crop_pct=1.0)
    elif change == "image_content":
        Image.open(image_paths[3]).convert("RGB").save(files[0], quality=92)  # same name, other photo
    else:
        Image.open(image_paths[3]).convert("RGB").save(mixed_folder / "e_new.jpg")
        files = list_images(mixed_folder)
    again = calibration_batch(config, files, size, seed=seed, cache=cache)
    fresh = calibration_batch(config, files, size, seed=seed)
    np.testing.assert_array_equal(again, fresh)  # rebuilt, not the stale batch
    assert again.shape != first.shape or not np.array_equal(again, first)


def test_corrupt_cache_is_rebuilt(
    mixed_folder: Path, tmp_out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files, cache = list_images(mixed_folder), tmp_out / "calib.npy"
    expected = calibration_batch(CONFIG, files, 4, cache=cache)
    cache.write_bytes(b"not a numpy file")
    with caplog.at_level(logging.WARNING, logger="msmlp"):
        np.testing.assert_array_equal(calibration_batch(CONFIG, files, 4, cache=cache), expected)
    assert "unreadable" in caplog.text


def test_bad_requests_are_clear_errors(mixed_folder: Path, tmp_out: Path) -> None:
    files = list_images(mixed_folder)
    with pytest.raises(InputError, match="calibration size 0 is not an integer in 1..4096"):
        calibration_batch(CONFIG, files, 0)
    with pytest.raises(InputError, match="no calibration images"):
        calibration_batch(CONFIG, [], 4)
    with pytest.raises(InputError, match="must be a path ending in .npy"):
        calibration_batch(CONFIG, files, 4, cache=tmp_out / "calib.txt")
    with pytest.raises(InputError, match="does not exist"):
        calibration_batch(CONFIG, [mixed_folder / "missing.jpg"], 4)
    (mixed_folder / "z_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(InputError, match="cannot read"):
        calibration_batch(CONFIG, list_images(mixed_folder), 5)


def test_split_keeps_held_out_images_apart(image_paths: list[Path]) -> None:
    calib, held = split_calibration(reversed(image_paths))
    assert [p.name for p in calib] == ["astronaut.jpg", "brick.jpg", "coffee.jpg"]
    assert [p.name for p in held] == ["grass.jpg", "rocket.jpg"]
    with pytest.raises(InputError, match="at least 2 images"):
        split_calibration(image_paths[:1])
