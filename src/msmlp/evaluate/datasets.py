"""Labelled image sets, their layout found from what is on disk, and checked before any image is decoded.

Layouts:

- ``imagefolder``: one sub-folder per class; the sorted folder names are the class indices (as
  torchvision's ``ImageFolder``), or, with class names given, each folder is its name's index.
- ``imagenet-folders``: sub-folders named by WordNet ID (``n01440764``...), mapped to the 1000 ImageNet
  indices (the sorted order of the 1000 IDs, ``data/imagenet_synsets.txt``).
- ``imagenet-val``: a flat folder of images and a ground-truth file: ``<file> <index|wnid>`` lines, or one
  index per line for the sorted file names (the caffe ``val.txt`` order, 0-based).
- ``csv``: a ``.csv`` (``path,label``) or ``.tsv`` file; paths relative to it, labels indices or names.

Only paths and label indices are held (a few bytes per image), never pixels.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from msmlp.data.transforms import IMAGE_SUFFIXES
from msmlp.errors import InputError

GROUND_TRUTH_NAMES = ("ground_truth.txt", "val.txt", "labels.txt", "ILSVRC2012_validation_ground_truth.txt")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet IDs in index order (sorted), from timm's ``imagenet_synsets.txt``."""
    text = resources.files("msmlp.data").joinpath("imagenet_synsets.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class LabelledSet:
    """Image paths with their class index. ``num_classes`` is the size of the label space when the layout
    fixes it (folder count, 1000 for ImageNet IDs); ``None`` when labels are bare indices."""

    source: Path
    layout: str
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    num_classes: int | None
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    def check_classes(self, classes: int, where: str) -> None:
        """Refuse a model whose class count cannot hold these labels, naming both counts."""
        if self.num_classes is not None and self.num_classes != classes:
            what = (
                "ImageNet-1k WordNet IDs" if self.layout.startswith("imagenet") else f"{self.layout} classes"
            )
            raise InputError(
                f"{self.source} has {self.num_classes} {what} but {where} outputs {classes} classes; "
                "evaluate it with the model trained on these classes"
            )
        top = max(self.labels)
        if top >= classes:
            raise InputError(
                f"{self.source} holds label {top} but {where} outputs only {classes} classes (0..{classes - 1}); "
                "are the labels for another model?"
            )

    def named(self, names: Sequence[str]) -> LabelledSet:
        """The same images and indices, shown with the model's own class names (labels that are bare
        indices, or folders named by index)."""
        return LabelledSet(self.source, self.layout, self.paths, self.labels, self.num_classes, tuple(names))

    def head(self, count: int | None) -> LabelledSet:
        """The first ``count`` images (all for ``None``)."""
        if count is None or count >= len(self):
            return self
        return LabelledSet(
            self.source,
            self.layout,
            self.paths[:count],
            self.labels[:count],
            self.num_classes,
            self.class_names,
        )


def open_dataset(
    source: str | Path, *, ground_truth: str | Path | None = None, class_names: Sequence[str] | None = None
) -> LabelledSet:
    """Find the layout of ``source`` and read its labels; one clear :class:`InputError` for a bad set."""
    source = Path(source)
    names = tuple(class_names) if class_names else None
    if source.is_file():
        if source.suffix.lower() not in TABLE_SUFFIXES:
            raise InputError(
                f"{str(source)!r} is a file but not a .csv or .tsv table of path,label; give a folder or a table"
            )
        return _table(source, names)
    if not source.is_dir():
        raise InputError(
            f"{str(source)!r} does not exist; give a folder of class folders or a .csv/.tsv file"
        )
    folders = sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith("."))
    images = _images_in(source)
    if folders and images:
        raise InputError(
            f"{source} mixes layouts: {len(folders)} class folders and {len(images)} images at its top "
            f"(e.g. {images[0].name!r}); keep images in class folders, or a flat folder with --ground-truth"
        )
    if folders:
        return _folders(source, folders, names)
    if images:
        return _flat(source, images, ground_truth)
    raise InputError(f"{str(source)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no class folders")


def with_model_labels(
    data: LabelledSet, labels: Sequence[str], ground_truth: str | Path | None = None
) -> LabelledSet:
    """The labelled set as a model with its own class names (``msmlp-export --labels``) reads it, the same
    for ``msmlp eval`` and the export's accuracy gate. Class folders named by the model's own labels map
    by name; labels that are indices (a table, a ground-truth file, folders named 0..N-1) keep their
    indices and are shown by the model's names."""
    folders = set(data.class_names) if data.layout == "imagefolder" else set()
    if folders and folders <= set(labels):
        return open_dataset(data.source, ground_truth=ground_truth, class_names=tuple(labels))
    if data.layout == "imagefolder" and set(data.class_names) != {
        str(i) for i in range(len(data.class_names))
    }:
        return data  # folders named by something else: their names are the classes
    return data.named(labels)


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """``--labels FILE``: one class name per line, a JSON list, or a JSON ``{index: name}`` (as export reads it)."""
    from msmlp.data.labels import read_labels

    return read_labels(path)


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _folders(source: Path, folders: list[Path], names: tuple[str, ...] | None) -> LabelledSet:
    synsets = imagenet_synsets()
    wnids = [d.name in synsets for d in folders]
    if any(wnids) and not all(wnids):
        odd = next(d.name for d, w in zip(folders, wnids) if not w)
        raise InputError(
            f"{source} mixes layouts: {sum(wnids)} folders are ImageNet WordNet IDs but {odd!r} is not; "
            "name every class folder by its WordNet ID, or none"
        )
    if all(wnids) and names is None:
        layout, index, space = "imagenet-folders", {w: i for i, w in enumerate(synsets)}, len(synsets)
        class_names = synsets
    elif names is not None:
        unknown = [d.name for d in folders if d.name not in names]
        if unknown:
            raise InputError(
                f"class folder {unknown[0]!r} in {source} is not among the {len(names)} names in --labels; "
                "name folders by their class, or drop --labels to use the sorted folder order"
            )
        layout, index, space, class_names = (
            "imagefolder",
            {n: i for i, n in enumerate(names)},
            len(names),
            names,
        )
    else:
        class_names = tuple(d.name for d in folders)
        layout, index, space = "imagefolder", {n: i for i, n in enumerate(class_names)}, len(folders)
    paths: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        files = _images_in(folder, recursive=True)
        if not files:
            raise InputError(f"class folder {str(folder)!r} holds no images; remove it or add its images")
        paths += files
        labels += [index[folder.name]] * len(files)
    return LabelledSet(source, layout, tuple(paths), tuple(labels), space, class_names)


def _flat(source: Path, images: list[Path], ground_truth: str | Path | None) -> LabelledSet:
    gt = Path(ground_truth) if ground_truth else _find_ground_truth(source)
    if gt is None:
        raise InputError(
            f"{source} is a flat folder of {len(images)} images without labels; give --ground-truth FILE "
            f"(<file> <index> lines or one index per line), or put one of {', '.join(GROUND_TRUTH_NAMES)} in it"
        )
    if not gt.is_file():
        raise InputError(f"--ground-truth {str(gt)!r} does not exist or is not a file")
    rows = [line.split() for line in gt.read_text(encoding="utf-8").splitlines() if line.strip()]
    widths = {len(r) for r in rows}
    if widths == {1}:
        if len(rows) != len(images):
            raise InputError(
                f"ground truth {gt.name} has {len(rows)} lines but {source} holds {len(images)} images; "
                "one index per image, in the sorted order of the file names"
            )
        values = [_label(r[0], gt, n + 1) for n, r in enumerate(rows)]
        _refuse_devkit_ids(values, gt)
        return LabelledSet(source, "imagenet-val", tuple(images), tuple(values), None)
    if widths != {2}:
        raise InputError(
            f"ground truth {gt.name} must hold '<file> <index>' lines or one index per line; "
            f"found lines of {sorted(widths)} fields"
        )
    by_name = {p.name: p for p in images}
    paths, labels, wnid = [], [], False
    for n, (name, value) in enumerate(rows, 1):
        path = by_name.get(Path(name).name)
        if path is None:
            raise InputError(
                f"ground truth {gt.name} line {n} names {name!r}, which is not an image in {source}"
            )
        wnid = wnid or value in imagenet_synsets()
        paths.append(path)
        labels.append(
            imagenet_synsets().index(value) if value in imagenet_synsets() else _label(value, gt, n)
        )
    if len(set(paths)) != len(paths):
        raise InputError(f"ground truth {gt.name} lists an image twice; one line per image")
    if len(paths) != len(images):
        missing = sorted(set(images) - set(paths))[0].name
        raise InputError(
            f"ground truth {gt.name} labels {len(paths)} of the {len(images)} images in {source} "
            f"(no label for {missing!r}); label every image or remove the others"
        )
    return LabelledSet(source, "imagenet-val", tuple(paths), tuple(labels), 1000 if wnid else None)


def _find_ground_truth(source: Path) -> Path | None:
    for folder in (source, source.parent):
        for name in GROUND_TRUTH_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def _refuse_devkit_ids(values: list[int], gt: Path) -> None:
    """The devkit's ILSVRC2012_IDs (1..1000) follow meta.mat's order, not the sorted WordNet IDs."""
    if len(values) >= 1000 and min(values) == 1 and max(values) == 1000:
        raise InputError(
            f"ground truth {gt.name} holds 1..1000: the devkit's ILSVRC2012_IDs, whose order (meta.mat) is not "
            "the sorted WordNet order models use; give '<file> <wnid>' lines or 0-based indices (caffe val.txt)"
        )


def _label(text: str, where: Path, line: int) -> int:
    if not (text.isascii() and text.isdigit()):
        raise InputError(
            f"{where.name} line {line}: label {text!r} is not a class index (0, 1, ...) or an ImageNet WordNet ID"
        )
    return int(text)


def _table(path: Path, names: tuple[str, ...] | None) -> LabelledSet:
    delimiter = TABLE_SUFFIXES[path.suffix.lower()]
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise InputError(f"{str(path)!r} lists no images; one 'path{delimiter}label' row per image")
    bad = next((n for n, r in enumerate(rows, 1) if len(r) != 2), None)
    if bad is not None:
        raise InputError(
            f"{path.name} row {bad} has {len(rows[bad - 1])} fields; each row is path{delimiter}label"
        )
    files = [(path.parent / r[0].strip()).resolve() for r in rows]
    missing = next((f for f in files if not f.is_file()), None)
    if missing is not None:
        raise InputError(
            f"{path.name} lists {str(missing)!r}, which does not exist; paths are relative to the table"
        )
    raw = [r[1].strip() for r in rows]
    if all(v.isascii() and v.isdigit() for v in raw):
        return LabelledSet(path, "csv", tuple(files), tuple(int(v) for v in raw), None)
    if names is None and all(v in imagenet_synsets() for v in raw):
        names = imagenet_synsets()
    if names is not None:
        unknown = next((v for v in raw if v not in names), None)
        if unknown is not None:
            raise InputError(
                f"{path.name}: label {unknown!r} is not among the {len(names)} class names given"
            )
        index = {n: i for i, n in enumerate(names)}
        return LabelledSet(path, "csv", tuple(files), tuple(index[v] for v in raw), len(names), names)
    ordered = tuple(sorted(set(raw)))  # names without a list: sorted order, as ImageFolder does
    index = {n: i for i, n in enumerate(ordered)}
    return LabelledSet(path, "csv", tuple(files), tuple(index[v] for v in raw), len(ordered), ordered)
