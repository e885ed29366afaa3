"""Which files an image folder option (--images, --calib) takes: its own images, else those of its class
subfolders (a labelled set's ImageFolder layout), so training images can calibrate as they lie."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from msmlp.data.transforms import list_images
from msmlp.errors import InputError

TRAIN = Path(__file__).resolve().parents[2] / "reference" / "digits" / "train"


def test_class_subfolders_are_read_when_the_folder_holds_no_images_itself(tmp_path):
    files = list_images(TRAIN)
    assert len(files) == 1437 and {f.parent.name for f in files} == {str(c) for c in range(10)}
    flat = tmp_path / "flat"
    (flat / "sub").mkdir(parents=True)
    shutil.copy(files[0], flat / "a.png")
    shutil.copy(files[1], flat / "sub" / "b.png")
    assert list_images(flat) == [flat / "a.png"]  # a folder with images of its own: those only


def test_a_folder_without_images_anywhere_is_one_line(tmp_path):
    (tmp_path / "empty" / "class").mkdir(parents=True)
    with pytest.raises(InputError, match="holds no images .* directly or in subfolders"):
        list_images(tmp_path / "empty")
