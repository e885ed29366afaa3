"""The Python API a service embeds (``msmlp.export``, ``msmlp.load``), the README's snippet, and a
package import that stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import msmlp
from msmlp.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.cpu_features
def test_export_then_load_predicts_like_the_cli(tmp_path, image_paths, cli):
    from msmlp.runtime.openvino import bf16_support

    bf16, why_not = bf16_support()
    result = msmlp.export("s2mlpv2_micro", out=tmp_path / "out")
    assert result.reports["fp32"].passed and (result.out / "model.onnx").is_file()
    with msmlp.load(result.out / "model.onnx", backend="onnxruntime") as predictor:
        assert predictor.info.backend == "onnxruntime" and predictor.info.synthetic
        top = predictor.predict([image_paths[2]], k=3)[0]
        logits = predictor.logits(np.zeros((3, 3, 112, 112), np.float32))
    assert len(top) == 3 and logits.shape == (3, 1000)
    by_cli = cli("msmlp", "predict", "--onnx", result.out / "model.onnx", image_paths[2], "--json", "--topk", "3",
                 "--backend", "onnxruntime")  # fmt: skip
    assert by_cli.returncode == 0, by_cli.stderr
    assert [p["index"] for p in json.loads(by_cli.stdout)[0]["predictions"]] == [p.index for p in top]
    auto = msmlp.load(result.out / "model.onnx")  # the fastest verified CPU backend for this file
    if bf16:
        assert (auto.info.backend, auto.info.precision) == ("openvino", "bf16")
    else:  # BF16 verification skipped with the reason; ONNX Runtime FP32 is the fastest verified
        assert result.skipped["bf16"] == why_not and "bf16" not in result.reports
        assert (auto.info.backend, auto.info.precision) == ("onnxruntime", "fp32")
    auto.close()


def test_load_by_name_runs_pytorch_and_reads_image_bytes(image_paths):
    predictor = msmlp.load("msmlp_micro")
    assert predictor.info.backend == "pytorch" and predictor.info.synthetic
    by_path = predictor.predict([image_paths[0]])[0]
    by_bytes = predictor.predict([image_paths[0].read_bytes()])[0]
    assert [p.index for p in by_path] == [p.index for p in by_bytes] and len(by_path) == 5


def test_load_refuses_clearly(tmp_path):
    with pytest.raises(InputError, match="unknown model 'nope'"):
        msmlp.load("nope")
    with pytest.raises(InputError, match="does not exist"):
        msmlp.load(tmp_path / "missing.onnx")


def test_the_readme_python_snippet_runs(tmp_path):
    """The README's API example, with the micro model and a packaged photo instead of photo.jpg."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    photo = str(ROOT / "src" / "msmlp" / "data" / "images" / "coffee.jpg")
    code = block.replace('"s2mlpv2_small"', '"s2mlpv2_micro"').replace('"photo.jpg"', repr(photo))
    code = code.replace("(batch)", "(np.zeros((2, 3, 112, 112), np.float32))")
    scope = {"np": np}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)  # msmlp.export writes out/<model> under the working directory
    try:
        exec(compile(code, "README.md", "exec"), scope)
    finally:
        os.chdir(cwd)
    assert scope["top5"][0].label and scope["logits"].shape == (2, 1000)


def test_import_and_help_stay_light():
    """`import msmlp` and building every command's --help import neither torch nor onnxruntime."""
    code = (
        "import sys, msmlp, msmlp.cli; msmlp.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'onnx', 'modelopt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
