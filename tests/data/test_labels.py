"""Class names: a labels file in each form it may take, and the names predictions carry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from msmlp.data.labels import class_names, imagenet_classes, read_labels, topk
from msmlp.errors import InputError


def test_lines_json_list_and_json_object(tmp_path):
    (tmp_path / "a.txt").write_text("cat\n dog \n\nbird\n", encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps(["cat", "dog", "bird"]), encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps({"2": "bird", "0": "cat", "1": "dog"}), encoding="utf-8")
    for name in ("a.txt", "b.json", "c.json"):
        assert read_labels(tmp_path / name) == ("cat", "dog", "bird"), name


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("dup.txt", "cat\ncat\n", "names class 'cat' twice"),
        ("empty.txt", "\n\n", "names no classes"),
        ("bad.json", "[1, 2", "is not valid JSON"),
        ("keys.json", json.dumps({"0": "cat", "2": "dog"}), "must be the class indices 0..1"),
        ("kind.json", json.dumps([1, 2]), "must hold a JSON list of names or an object"),
    ],
)
def test_bad_labels_files_are_one_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        read_labels(tmp_path / name)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="--labels '.*nope.txt' does not exist"):
        read_labels(tmp_path / "nope.txt")


def test_predictions_carry_the_models_own_names():
    logits = np.array([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]], np.float32)
    top = topk(logits, 2, ("cat", "dog", "bird"))
    assert [[p.label for p in row] for row in top] == [["dog", "bird"], ["cat", "bird"]]
    assert [p.label for p in topk(logits, 1)[0]] == ["class 1"]  # no names: indices
    assert class_names(1000) == imagenet_classes()
    assert class_names(3, ("a", "b")) == ("class 0", "class 1", "class 2")  # names of another head: unused
