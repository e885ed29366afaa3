"""The real command line in a subprocess: msmlp-export, msmlp predict, msmlp verify. User mistakes give
one line on stderr, a non-zero exit, no traceback and no half-written artefact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch

import msmlp
from msmlp.exporters.onnx import export_onnx
from msmlp.models.weights import make_contributing
from msmlp.runtime.openvino import bf16_support

BF16, WHY_NOT = bf16_support()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cli) -> Path:
    """``msmlp-export --model msmlp_micro`` run once for the module."""
    out = tmp_path_factory.mktemp("cli") / "micro"
    result = cli("msmlp-export", "--model", "msmlp_micro", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "[1/6] build msmlp_micro" in result.stderr and "[6/6] TensorRT engine" in result.stderr
    assert "[5/6] verify BF16 against PyTorch (OpenVINO" in result.stderr
    assert "synthetic weights (seed 0)" in result.stderr and "engine step skipped" in result.stderr
    assert "model.onnx" in result.stdout and "fp32 passed" in result.stdout
    if BF16:
        assert "bf16 passed" in result.stdout
    else:  # the step is shown, skipped with its reason, in the progress and the summary
        assert f"bf16 skipped: {WHY_NOT}" in result.stdout and "skipped: the CPU" in result.stderr
    return out


def test_unknown_model_is_one_line(cli):
    result = cli("msmlp-export", "--model", "nope")
    cli.assert_one_line_error(result, "msmlp-export: error: unknown model 'nope'", "msmlp models")
    assert result.stdout == ""


def test_bad_batch_profile_is_one_line_and_writes_nothing(tmp_path, cli):
    result = cli("msmlp-export", "--model", "msmlp_micro", "--batch", "8,1,64", "--out", tmp_path / "out")
    cli.assert_one_line_error(result, "--batch '8,1,64' is invalid", "1 <= MIN <= OPT <= MAX")
    assert not (tmp_path / "out").exists()


def test_failure_mid_export_leaves_no_artefact(tmp_path, image_paths, cli):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(image_paths[0], images / "a.jpg")
    (images / "b.jpg").write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    result = cli("msmlp-export", "--model", "msmlp_micro", "--out", out, "--images", images)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(errors) == 1 and "cannot read" in errors[0] and "b.jpg" in errors[0]
    assert not out.exists()  # the images are decoded before any export work: nothing is written


def test_predict_prints_top5_for_onnx_and_pytorch_alike(exported, image_paths, cli):
    image = image_paths[2]
    by_onnx = cli(
        "msmlp", "predict", "--onnx", exported / "model.onnx", image, "--json", "--backend", "onnxruntime"
    )
    by_torch = cli("msmlp", "predict", "--model", "msmlp_micro", image, "--json")
    assert by_onnx.returncode == 0 and by_torch.returncode == 0, by_onnx.stderr + by_torch.stderr
    onnx_rows, torch_rows = json.loads(by_onnx.stdout), json.loads(by_torch.stdout)
    assert [p["index"] for p in onnx_rows[0]["predictions"]] == [
        p["index"] for p in torch_rows[0]["predictions"]
    ]
    assert len(onnx_rows[0]["predictions"]) == 5
    assert "meaningless" in by_onnx.stderr  # synthetic weights are said to be synthetic
    text = cli("msmlp", "predict", "--onnx", exported / "model.onnx", *image_paths[:2], "--topk", "3")
    assert text.returncode == 0
    ranked = [line for line in text.stdout.splitlines() if line.startswith("  ")]
    assert len(ranked) == 6 and ranked[0].lstrip().startswith("1.")


def test_predict_refuses_a_non_image(exported, tmp_path, cli):
    notes = tmp_path / "notes.jpg"
    notes.write_text("shopping list: eggs, milk")
    result = cli("msmlp", "predict", "--onnx", exported / "model.onnx", notes)
    cli.assert_one_line_error(result, "msmlp: error: cannot read", "notes.jpg", "give a JPEG or PNG file")


def test_onnx_of_another_model_is_refused(tmp_path, image_paths, cli):
    config = msmlp.get_config("s2mlpv2_micro")
    model = make_contributing(msmlp.create_model("s2mlpv2_micro"))
    other = export_onnx(model, tmp_path / "s2.onnx", config=config)
    for command in ("predict", "verify"):
        extra = [image_paths[0]] if command == "predict" else []
        result = cli("msmlp", command, "--model", "msmlp_micro", "--onnx", other, *extra)
        cli.assert_one_line_error(result, "from model 's2mlpv2_micro', not 'msmlp_micro'")
    bare_graph = onnx.load(other)
    del bare_graph.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(bare_graph, bare)
    result = cli("msmlp", "predict", "--model", "msmlp_micro", "--onnx", bare, image_paths[0])
    cli.assert_one_line_error(
        result, "takes input (N, 3, 112, 112) but model 'msmlp_micro' takes (N, 3, 64, 64)"
    )


def test_corrupt_onnx_is_one_line(tmp_path, image_paths, cli):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"PK\x03\x04 not a graph")
    result = cli("msmlp", "predict", "--onnx", broken, image_paths[0])
    cli.assert_one_line_error(result, "is not a readable ONNX model", "model.onnx", code=5)


@pytest.mark.cpu_features
def test_verify_passes_with_recorded_weights_and_fails_with_others(exported, tmp_path, cli):
    onnx = exported / "model.onnx"
    ok = cli("msmlp", "verify", "--onnx", onnx, "--batch-sizes", "1,4", "--backend", "onnxruntime")
    assert ok.returncode == 0, ok.stderr
    assert "parity fp32" in ok.stdout and ok.stdout.count(" ok") == 2
    auto = cli("msmlp", "verify", "--onnx", onnx, "--batch-sizes", "1,4")  # the fastest verified CPU backend
    assert auto.returncode == 0, auto.stderr
    if BF16:
        assert "parity bf16: openvino" in auto.stdout and "backend auto: openvino bf16" in auto.stderr
    else:
        assert "parity fp32: onnxruntime" in auto.stdout and "backend auto: onnxruntime fp32" in auto.stderr
    other = tmp_path / "other.pth"
    torch.save(
        {"state_dict": make_contributing(msmlp.create_model("msmlp_micro"), seed=1).state_dict()}, other
    )
    report = tmp_path / "report.json"
    bad = cli("msmlp", "verify", "--model", "msmlp_micro", "--onnx", exported / "model.onnx", "--weights", other,
              "--report", report, "--batch-sizes", "1", "--backend", "onnxruntime")  # fmt: skip
    assert bad.returncode == 3 and "Traceback" not in bad.stderr
    assert "fp32 parity check failed" in bad.stderr.strip().splitlines()[-1]
    assert json.loads(report.read_text())["passed"] is False


def test_predict_chunks_batches_within_the_backend_range():
    """In process: predict splits many images into batches the backend takes, padding a short last one."""
    import numpy as np

    from msmlp.runtime.base import run_in_batches

    class Recorder:
        batch_range = (4, 6)

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def __call__(self, batch: np.ndarray) -> np.ndarray:
            self.sizes.append(len(batch))
            return batch.reshape(len(batch), -1)[:, :3] * 2

    backend = Recorder()
    inputs = np.arange(13 * 3, dtype=np.float32).reshape(13, 3, 1, 1)
    out = run_in_batches(backend, inputs)
    assert backend.sizes == [6, 6, 4]  # the last chunk of 1 image was padded up to the minimum batch
    np.testing.assert_array_equal(out, inputs.reshape(13, 3) * 2)
