"""The INT8 accuracy gate's pieces on real data: the decision taken from a real ``msmlp eval`` report (two
real graphs, labels from one of them), the paired-drop interval, and the --val/--calib overlap check."""

from __future__ import annotations

import shutil

import pytest
import torch

import msmlp
from msmlp.data.transforms import augmented, load_image, preprocess
from msmlp.evaluate.datasets import open_dataset
from msmlp.evaluate.report import build_report
from msmlp.evaluate.stats import paired_drop_interval, wilson
from msmlp.evaluate.stream import Candidate, evaluate
from msmlp.exporters.onnx import export_onnx
from msmlp.pipeline.accuracy import gate_record, summary_line
from msmlp.pipeline.images import val_overlap
from msmlp.runtime.ort import OnnxRuntimeBackend


@pytest.fixture(scope="module")
def report(tmp_path_factory, image_paths, contributing) -> dict:
    """Two msmlp_micro graphs (seeds 0 and 1) on 12 views labelled with seed 0's PyTorch predictions."""
    root = tmp_path_factory.mktemp("gate")
    config = msmlp.get_config("msmlp_micro")
    models = [contributing("msmlp_micro", seed=s) for s in (0, 1)]
    graphs = [export_onnx(m, root / f"seed{s}.onnx", config=config) for s, m in enumerate(models)]
    paths = []
    for i, view in enumerate(augmented([load_image(p) for p in image_paths], 12, seed=3)):
        paths.append(root / f"v{i:02d}.jpg")
        view.save(paths[-1], quality=92)
    with torch.no_grad():
        labels = models[0](torch.from_numpy(preprocess(paths, config))).argmax(1).tolist()
    (root / "val.csv").write_text("".join(f"{p.name},{y}\n" for p, y in zip(paths, labels)))
    data = open_dataset(root / "val.csv")
    backends = [OnnxRuntimeBackend(g) for g in graphs]
    with backends[0], backends[1]:
        cands = [
            Candidate(g.name, b, config, 1000, {"backend": "onnxruntime"}) for g, b in zip(graphs, backends)
        ]
        progress, tallies = evaluate(data, cands, batch=4, workers=2, strict=True)
    return build_report(data, cands, tallies, progress, reference=0, batch=4, workers=2)


def test_the_gate_passes_at_the_measured_drop_and_fails_just_below_it(report):
    ref, other = report["candidates"]
    measured = gate_record(report, None)
    expected = 100 * (ref["top1_correct"] - other["top1_correct"]) / report["images_scored"]
    assert measured["drop_points"] == pytest.approx(expected) and measured["drop_points"] > 0
    assert measured["passed"] is None and "measured (no budget)" in summary_line(measured)
    assert gate_record(report, measured["drop_points"])["passed"] is True
    below = gate_record(report, measured["drop_points"] - 1e-3)
    assert below["passed"] is False and "ABOVE --max-accuracy-drop" in summary_line(below)
    lo, hi = measured["drop_ci95_points"]
    assert lo <= measured["drop_points"] <= hi
    assert measured["fp32"]["top1_correct"] == ref["top1_correct"] and measured["lost"] >= 1


def test_paired_drop_interval_properties():
    n = 200
    for ref, cand, lost, gained in ((180, 170, 15, 5), (200, 197, 3, 0), (100, 100, 0, 0), (50, 80, 10, 40)):
        lo, hi = paired_drop_interval(ref, cand, lost, gained, n)
        drop = (ref - cand) / n
        assert -1 <= lo <= drop <= hi <= 1
        flip = paired_drop_interval(cand, ref, gained, lost, n)  # the same comparison the other way round
        assert flip == pytest.approx((-hi, -lo))
    wide = paired_drop_interval(18, 17, 2, 1, 20)
    narrow = paired_drop_interval(180, 170, 20, 10, 200)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    # identical predictions: the interval is no wider than either accuracy's own Wilson interval
    lo, hi = paired_drop_interval(150, 150, 0, 0, n)
    w = wilson(150, n)
    assert lo < 0 < hi and hi - lo <= 2 * (w[1] - w[0])


def test_val_images_found_in_the_calibration_set_are_named(tmp_path, image_paths):
    calib, val = tmp_path / "calib", tmp_path / "val"
    calib.mkdir()
    val.mkdir()
    for p in image_paths[:3]:
        shutil.copy(p, calib / p.name)
    shutil.copy(image_paths[1], val / "renamed.jpg")
    shutil.copy(image_paths[4], val / image_paths[4].name)
    found = val_overlap(sorted(val.iterdir()), calib)
    assert [(a.name, b.name) for a, b in found] == [("renamed.jpg", image_paths[1].name)]
    assert val_overlap([val / image_paths[4].name], None) != []  # the default calibration: built-in photos
