"""What the serving install (``pip install "msmlp[serve]"``) must do without the export toolchain: load an
exported graph, predict, serve /v1 and KServe v2, bench, and name the extra a step it lacks needs."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

HEAVY = ("torch", "onnx", "modelopt", "onnxslim", "polygraphy", "onnx_graphsurgeon", "matplotlib")
WAIT_S = 120
NO_TORCH = pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None, reason="PyTorch is installed: no extra is missing here"
)

# Runs in a fresh interpreter: loads the graph, predicts, serves on a free localhost port, asks /v1 and
# v2, and reports what it computed and which heavy modules got imported.
EMBED = """
import json, sys, urllib.request
import numpy as np
import msmlp
from msmlp.data.transforms import load_image, preprocess
from msmlp.runtime import open_backend
from msmlp.serve import ServiceThread, create_app

graph, photo = sys.argv[1], sys.argv[2]
predictor = msmlp.load(graph)
x = preprocess([load_image(photo)], predictor.config)
out = {"backend": predictor.info.backend, "top1": predictor.predict([photo])[0][0].index,
       "logits": predictor.logits(x)[0].tolist()}
app = create_app(open_backend(onnx=graph), predictor.config, max_batch=4)
with ServiceThread(app) as service:
    req = urllib.request.Request(service.url + "/v1/classify", data=open(photo, "rb").read(),
                                 headers={"Content-Type": "image/jpeg"})
    out["v1"] = json.load(urllib.request.urlopen(req, timeout=120))
    name = out["v1"]["model"]
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    req = urllib.request.Request(f"{service.url}/v2/models/{name}/infer", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    out["v2"] = json.load(urllib.request.urlopen(req, timeout=120))
out["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in %r)
print(json.dumps(out))
"""


def _run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *(str(a) for a in args)], capture_output=True, text=True, timeout=timeout
    )


def _post(url: str, data: bytes, content_type: str) -> dict:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=WAIT_S) as response:
        return json.load(response)


def test_load_predict_and_serve_import_no_export_toolchain(exported, photos):
    result = _run("-c", EMBED % (HEAVY,), exported / "model.onnx", photos[0])
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["heavy"] == [], f"the runtime path imported {out['heavy']}"
    assert out["v1"]["predictions"][0]["index"] == out["top1"]
    assert len(out["v1"]["predictions"]) == 5
    (logits,) = out["v2"]["outputs"]
    assert logits["shape"] == [1, 1000] and logits["datatype"] == "FP32"
    np.testing.assert_allclose(logits["data"], out["logits"], rtol=1e-3, atol=1e-3)


def test_auto_chooses_among_installed_backends(exported):
    import msmlp

    predictor = msmlp.load(exported / "model.onnx")
    installed = {b for b in ("openvino", "onnxruntime") if importlib.util.find_spec(b) is not None}
    assert predictor.info.backend in installed


def test_predict_command_matches_the_api(exported, photos):
    import msmlp

    result = _run("-m", "msmlp.cli", "predict", "--onnx", exported / "model.onnx", "--json", *photos[:2])
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    expected = msmlp.load(exported / "model.onnx").predict(photos[:2])
    assert [r["predictions"][0]["index"] for r in rows] == [p[0].index for p in expected]
    assert all(len(r["predictions"]) == 5 for r in rows)


def test_serve_command_answers_v1_and_v2_then_drains(exported, photos):
    command = [sys.executable, "-m", "msmlp.cli", "serve", "--onnx", str(exported / "model.onnx")]
    child = subprocess.Popen(
        [*command, "--port", "0", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = child.stdout.readline()  # printed once the server listens
        assert line.startswith("serving "), line + child.stderr.read()
        url = line.split(" on ")[1].split()[0]
        v1 = _post(url + "/v1/classify", photos[1].read_bytes(), "image/jpeg")
        assert len(v1["predictions"]) == 5
        shape = [1, 3, 112, 112]
        body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": [0.0] * 37632}]}
        v2 = _post(f"{url}/v2/models/{v1['model']}/infer", json.dumps(body).encode(), "application/json")
        assert v2["outputs"][0]["shape"] == [1, 1000]
        assert np.isfinite(v2["outputs"][0]["data"]).all()
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=WAIT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(WAIT_S)
    assert child.returncode == 0, err
    assert "Traceback" not in err


def test_bench_command_on_a_graph(exported, tmp_path):
    result = _run(
        "-m", "msmlp.cli", "bench", "--onnx", exported / "model.onnx", "--batch", "1,2", "--iters", "2",
        "--warmup", "1", "--out", tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert json.dumps(report)  # a real report was written
    assert (tmp_path / "bench.png").exists() == (importlib.util.find_spec("matplotlib") is not None)


@NO_TORCH
@pytest.mark.parametrize(
    ("args", "purpose"),
    [
        (("verify", "--onnx", "{graph}"), "msmlp verify"),
        (("export", "--model", "s2mlpv2_micro"), "msmlp export"),
        (("predict", "--model", "s2mlpv2_micro", "{photo}"), "--model s2mlpv2_micro"),
        (("models",), "msmlp models"),
    ],
)
def test_a_step_of_the_export_extra_names_it_in_one_line(exported, photos, args, purpose):
    args = [a.format(graph=exported / "model.onnx", photo=photos[0]) for a in args]
    result = _run("-m", "msmlp.cli", *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 4, result.stderr  # MissingDependencyError
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert purpose in lines[0] and 'pip install "msmlp[export]"' in lines[0], lines[0]


@NO_TORCH
def test_loading_a_model_name_needs_the_export_extra():
    import msmlp
    from msmlp.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=r'pip install "msmlp\[export\]"'):
        msmlp.load("s2mlpv2_micro")
    with pytest.raises(MissingDependencyError, match=r"msmlp\.export\(\) needs the \[export\] extra"):
        msmlp.export("s2mlpv2_micro")
