"""``msmlp eval`` through the real command line: a full run's table, eval.json and eval.png; the PyTorch
reference on an ImageNet layout; Ctrl-C's partial report; and each bad input as one line, exit 2, no
traceback and no eval.json left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from msmlp.cli import main

from .conftest import unreadable, write_views


def test_a_full_run_writes_the_table_json_and_plot(tmp_path, cli, imagefolder, micro3):
    out = tmp_path / "out"
    result = cli(
        "msmlp", "eval", "--data", imagefolder, "--candidate", f"{micro3['fp16']}@onnxruntime",
        "--candidate", micro3["fp32"], "--batch", "5", "--workers", "2", "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "eval.json").read_text())
    fp16, fp32 = report["candidates"]
    assert fp32["reference"] and fp32["precision"] == "fp32" and fp16["precision"] == "fp16"
    assert (
        report["images_scored"] == 12 and report["data"]["layout"] == "imagefolder" and not report["partial"]
    )
    for row in (fp16, fp32):
        lo, hi = row["top1_ci95"]
        assert lo <= row["top1"] <= hi and row["top1"] == row["top1_correct"] / 12
        assert row["inference_images_per_s"] > 0 and row["classes"] == 3
    assert report["decode"]["images_per_s_per_worker"] > 0
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(ref)" in result.stdout and "top-1 % (95% CI)" in result.stdout and "12 images" in result.stdout
    assert not list(out.glob(".*.tmp"))


def test_imagenet_folders_against_the_pytorch_reference(tmp_path, cli, photos, micro1000):
    data = tmp_path / "val"
    for wnid, photo in (("n01440764", "coffee"), ("n09999999", "rocket")):
        write_views(photos[photo], data / wnid, count=2)
    (data / "n09999999").rename(data / "n04552348")
    out = tmp_path / "out"
    result = cli(
        "msmlp", "eval", "--data", data, "--candidate", f"{micro1000}@openvino", "--model", "s2mlpv2_micro",
        "--batch", "4", "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "eval.json").read_text())
    torch_row, ov_row = report["candidates"]
    assert torch_row["reference"] and torch_row["backend"] == "pytorch" and ov_row["backend"] == "openvino"
    assert report["data"] == {"source": str(data), "layout": "imagenet-folders", "images": 4, "classes": 1000}
    assert ov_row["classes"] == 1000 and 0 <= ov_row["vs_reference"]["agreement"] <= 1
    assert "synthetic weights" in result.stderr


def test_ctrl_c_writes_a_partial_report_and_exits_130(tmp_path, imagefolder, micro3, monkeypatch):
    """The interrupt arrives while the second batch is reported, as a Ctrl-C mid-run would."""
    import msmlp.commands.eval as command

    class Bar:
        calls = 0

        def update(self, count: int) -> None:
            Bar.calls += 1
            if Bar.calls == 2:
                raise KeyboardInterrupt

        def close(self) -> None:
            pass

    monkeypatch.setattr(command, "_progress_bar", lambda total: Bar())
    out = tmp_path / "out"
    code = main(["eval", "--data", str(imagefolder), "--candidate", f"{micro3['fp32']}@onnxruntime",
                 "--batch", "3", "--out", str(out)])  # fmt: skip
    assert code == 130
    report = json.loads((out / "eval.json").read_text())
    assert report["partial"] and report["images_scored"] == 6 and (out / "eval.png").is_file()


@pytest.fixture(scope="module")
def bad(tmp_path_factory, photos, imagefolder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    mixed = root / "mixed"
    shutil.copytree(imagefolder, mixed)
    write_views(photos["grass"], mixed, count=1)
    (root / "empty").mkdir()
    flat = root / "flat"
    write_views(photos["coffee"], flat, count=3)
    (root / "gt.txt").write_text("0\n1\n")
    (root / "names.txt").write_text("astronaut\ncoffee\n")
    broken = root / "broken"
    shutil.copytree(imagefolder, broken)
    unreadable(broken / "rocket" / "zz_notes.jpg")
    return {"mixed": mixed, "empty": root / "empty", "flat": flat, "gt": root / "gt.txt", "names": root / "names.txt",
            "broken": broken}  # fmt: skip


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("mixed", ("mixes layouts: 3 class folders and 1 images",)),
        ("empty", ("holds no images",)),
        ("classes", ("has 3 imagefolder classes but", "outputs 1000 classes")),
        ("labels", ("lists 2 class names but", "outputs 3 classes")),
        ("gt", ("ground truth gt.txt has 2 lines but", "holds 3 images")),
        ("strict", ("zz_notes.jpg", "--strict")),
        ("missing", ("candidate", "does not exist")),
    ],
)
def test_bad_inputs_are_one_line_exit_2_and_leave_nothing(tmp_path, cli, bad, imagefolder, micro3, micro1000,
                                                          case, fragments):  # fmt: skip
    out = tmp_path / "out"
    cand = f"{micro3['fp32']}@onnxruntime"
    args = {
        "mixed": ["--data", bad["mixed"], "--candidate", cand],
        "empty": ["--data", bad["empty"], "--candidate", cand],
        "classes": ["--data", imagefolder, "--candidate", f"{micro1000}@onnxruntime"],
        "labels": ["--data", imagefolder, "--candidate", cand, "--labels", bad["names"]],
        "gt": ["--data", bad["flat"], "--ground-truth", bad["gt"], "--candidate", cand],
        "strict": ["--data", bad["broken"], "--candidate", cand, "--strict", "--batch", "4"],
        "missing": ["--data", imagefolder, "--candidate", tmp_path / "nope.onnx"],
    }[case]
    result = cli("msmlp", "eval", *args, "--out", out)
    cli.assert_one_line_error(result, "msmlp: error:", *fragments)
    assert not (out / "eval.json").exists() and not (out / "eval.png").exists()
