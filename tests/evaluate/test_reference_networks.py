"""The suite on trained weights against labels: each reference network (reference/, trained on
scikit-learn's digits) exported to FP32, FP16, BF16 (where the CPU has it) and INT8 calibrated on its
training images, then ``msmlp eval`` on its 360 held-out images. Each precision's top-1 must stay
within a stated bound of FP32: FP16 and BF16 within 1 image (0.28 points), INT8 within 1 point
(3 of 360 images), with today's calibration defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msmlp.runtime.openvino import bf16_support

REFERENCE = Path(__file__).resolve().parents[2] / "reference"
DIGITS = REFERENCE / "digits"
BF16, WHY_NOT = bf16_support()
# candidate file@backend -> most top-1 images it may lose against FP32 (net of the ones it gains)
BOUNDS = {
    "model.onnx@onnxruntime": 0,
    "model.fp16.onnx@onnxruntime": 1,
    "model.int8.onnx@onnxruntime": 3,
    "model.int8.onnx@openvino": 3,
    **({"model.onnx@openvino-bf16": 1} if BF16 else {}),
}
# held-out top-1 of the committed checkpoints in PyTorch FP32 (reference/README.md)
TRAINED_TOP1 = {"msmlp_micro": 354, "s2mlpv2_micro": 335}


@pytest.fixture(scope="module", params=sorted(TRAINED_TOP1))
def evaluated(request, tmp_path_factory, cli) -> tuple[str, dict]:
    name = request.param
    out = tmp_path_factory.mktemp("trained") / name
    weights = REFERENCE / f"{name}_digits.pth"
    export = cli(
        "msmlp-export", "--model", name, "--weights", weights, "--labels", DIGITS / "labels.txt",
        "--out", out, "--fp16", "--int8", "--calib", DIGITS / "train", timeout=900,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    candidates = [arg for c in BOUNDS for arg in ("--candidate", f"{out / c}")]
    result = cli(
        "msmlp", "eval", "--data", DIGITS / "val", "--model", name, "--weights", weights, *candidates,
        "--threads", "1", "--workers", "1", "--out", out, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "classes: 0 zero, 1 one" in result.stdout  # the export's labels name the indexed folders
    return name, json.loads((out / "eval.json").read_text())


@pytest.mark.slow
def test_the_pytorch_reference_scores_the_trained_accuracy(evaluated):
    name, report = evaluated
    ref = report["candidates"][0]
    assert ref["reference"] and ref["label"] == f"{name}@pytorch"
    assert report["images_scored"] == 360 and report["unreadable"] == 0
    assert ref["top1_correct"] == TRAINED_TOP1[name]
    assert report["data"]["class_names"] == (DIGITS / "labels.txt").read_text().split()


@pytest.mark.slow
@pytest.mark.cpu_features
def test_each_precision_stays_within_its_bound_of_fp32(evaluated):
    _, report = evaluated
    rows = {row["label"].split("/", 1)[1]: row for row in report["candidates"][1:]}
    assert set(rows) == set(BOUNDS), (set(rows), WHY_NOT)
    fp32 = rows["model.onnx@onnxruntime"]["top1_correct"]
    assert fp32 == report["candidates"][0]["top1_correct"]
    for label, bound in BOUNDS.items():
        row = rows[label]
        flips = row["vs_reference"]
        assert fp32 - row["top1_correct"] <= bound, (label, row["top1"], flips)
        assert flips["lost"] - flips["gained"] == fp32 - row["top1_correct"]
        lo, hi = row["top1_ci95"]
        assert lo <= row["top1"] <= hi
