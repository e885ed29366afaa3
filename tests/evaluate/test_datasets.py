"""Every layout read from real files, and each bad set refused with one clear message before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msmlp.data.labels import imagenet_classes
from msmlp.errors import InputError
from msmlp.evaluate.datasets import imagenet_synsets, open_dataset, read_class_names

from .conftest import CLASSES, write_views


def test_the_synset_list_is_imagenet_in_index_order():
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and len(set(synsets)) == 1000 and list(synsets) == sorted(synsets)
    assert synsets[0] == "n01440764" and imagenet_classes()[0] == "tench"
    rows = Path(__file__).parents[2].joinpath("src/msmlp/data/imagenet_classes.txt").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows if r] == list(synsets)


def test_imagefolder_sorted_folder_names_are_the_indices(imagefolder):
    data = open_dataset(imagefolder)
    assert data.layout == "imagefolder" and data.num_classes == 3 and data.class_names == CLASSES
    assert len(data) == 12
    for path, label in zip(data.paths, data.labels):
        assert CLASSES[label] == path.parent.name


def test_imagefolder_with_class_names_maps_each_folder_by_name(imagefolder):
    names = ("rocket", "grass", "coffee", "astronaut")
    data = open_dataset(imagefolder, class_names=names)
    assert data.num_classes == 4
    assert {names[label] for label in data.labels} == set(CLASSES)
    assert all(names[label] == p.parent.name for p, label in zip(data.paths, data.labels))


def test_wordnet_folders_map_to_the_imagenet_indices(tmp_path, photos):
    synsets = imagenet_synsets()
    for wnid, photo in (("n01443537", "coffee"), ("n04552348", "rocket")):
        write_views(photos[photo], tmp_path / wnid, count=2)
    data = open_dataset(tmp_path)
    assert data.layout == "imagenet-folders" and data.num_classes == 1000
    assert sorted(set(data.labels)) == [synsets.index("n01443537"), synsets.index("n04552348")]
    assert data.labels[0] == 1  # goldfish is index 1


@pytest.fixture
def flat(tmp_path, photos) -> tuple[Path, list[Path]]:
    folder = tmp_path / "val"
    images = write_views(photos["coffee"], folder, count=3) + write_views(photos["rocket"], folder, count=2)
    return folder, sorted(images)


def test_flat_folder_with_file_index_lines(flat):
    folder, images = flat
    gt = folder.parent / "gt.txt"
    gt.write_text("".join(f"{p.name} {i * 7}\n" for i, p in enumerate(reversed(images))))
    data = open_dataset(folder, ground_truth=gt)
    assert data.layout == "imagenet-val" and data.num_classes is None
    assert dict(zip(data.paths, data.labels)) == {p: i * 7 for i, p in enumerate(reversed(images))}


def test_flat_folder_with_wordnet_ids_found_beside_the_images(flat):
    folder, images = flat
    (folder.parent / "val.txt").write_text("".join(f"{p.name} n01440764\n" for p in images))
    data = open_dataset(folder)
    assert data.num_classes == 1000 and set(data.labels) == {0}


def test_flat_folder_with_one_index_per_line_follows_sorted_names(flat):
    folder, images = flat
    (folder / "ground_truth.txt").write_text("4\n3\n2\n1\n0\n")
    data = open_dataset(folder)
    assert list(data.paths) == images and list(data.labels) == [4, 3, 2, 1, 0]


def test_devkit_ids_are_refused_with_the_reason(tmp_path, photos):
    folder = tmp_path / "val"
    images = write_views(photos["coffee"], folder, count=1)
    for i in range(1, 1000):  # hard links: 1000 image files without 1000 encodes
        (folder / f"v{i:04d}.jpg").hardlink_to(images[0])
    (tmp_path / "gt.txt").write_text("".join(f"{1 + i % 1000}\n" for i in range(1000)))
    with pytest.raises(InputError, match="ILSVRC2012_IDs"):
        open_dataset(folder, ground_truth=tmp_path / "gt.txt")


def test_csv_and_tsv_with_indices_or_names(tmp_path, imagefolder):
    files = sorted(imagefolder.rglob("*.jpg"))
    table = tmp_path / "set.csv"
    table.write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    data = open_dataset(table)
    assert data.layout == "csv" and data.class_names == CLASSES and data.num_classes == 3
    assert [CLASSES[i] for i in data.labels] == [f.parent.name for f in files]
    tsv = tmp_path / "set.tsv"
    tsv.write_text(
        "".join(f"{f.relative_to(tmp_path.parent)}\t{CLASSES.index(f.parent.name)}\n" for f in files)
    )
    moved = tmp_path.parent / tsv.name
    tsv.rename(moved)
    data = open_dataset(moved)
    assert data.num_classes is None and [CLASSES[i] for i in data.labels] == [f.parent.name for f in files]


def test_labels_file_lines_or_json(tmp_path):
    (tmp_path / "names.txt").write_text("cat\ndog\n\nbird\n")
    (tmp_path / "names.json").write_text(json.dumps(["cat", "dog"]))
    assert read_class_names(tmp_path / "names.txt") == ("cat", "dog", "bird")
    assert read_class_names(tmp_path / "names.json") == ("cat", "dog")
    (tmp_path / "dup.txt").write_text("cat\ncat\n")
    with pytest.raises(InputError, match="distinct"):
        read_class_names(tmp_path / "dup.txt")


def test_check_classes_names_both_counts(imagefolder):
    data = open_dataset(imagefolder)
    data.check_classes(3, "model.onnx")
    with pytest.raises(InputError, match="has 3 imagefolder classes but model.onnx outputs 1000 classes"):
        data.check_classes(1000, "model.onnx")


def test_index_labels_beyond_the_head_are_refused(tmp_path, imagefolder):
    files = sorted(imagefolder.rglob("*.jpg"))
    table = tmp_path / "set.csv"
    table.write_text("".join(f"{f},{i}\n" for i, f in enumerate(files)))
    with pytest.raises(InputError, match="label 11 but m outputs only 3 classes"):
        open_dataset(table).check_classes(3, "m")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("mixed", "mixes layouts: 1 class folders and 1 images"),
        ("mixed_wnids", "mixes layouts: 1 folders are ImageNet WordNet IDs but 'cats' is not"),
        ("empty", "holds no images"),
        ("empty_class", "class folder"),
        ("no_labels", "flat folder of 1 images without labels"),
        ("short_gt", "has 3 lines but .* holds 2 images"),
        ("unlisted", "labels 1 of the 2 images"),
        ("not_a_table", "not a .csv or .tsv"),
    ],
)
def test_bad_sets_are_one_clear_error(tmp_path, photos, make, message):
    root = tmp_path / "set"
    root.mkdir()
    gt = None
    if make == "mixed":
        write_views(photos["coffee"], root / "cats", count=1)
        write_views(photos["rocket"], root, count=1)
    elif make == "mixed_wnids":
        write_views(photos["coffee"], root / "cats", count=1)
        write_views(photos["rocket"], root / "n01440764", count=1)
    elif make == "empty_class":
        write_views(photos["coffee"], root / "cats", count=1)
        (root / "dogs").mkdir()
    elif make == "no_labels":
        write_views(photos["coffee"], root, count=1)
    elif make in ("short_gt", "unlisted"):
        images = write_views(photos["coffee"], root, count=2)
        gt = tmp_path / "gt.txt"
        gt.write_text("0\n1\n2\n" if make == "short_gt" else f"{images[0].name} 0\n")
    elif make == "not_a_table":
        root = tmp_path / "set.txt"
        root.write_text("x")
    with pytest.raises(InputError, match=message):
        open_dataset(root, ground_truth=gt)
