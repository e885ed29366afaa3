"""A fine-tuned 10-class checkpoint of each family, through the real command line: it exports with its
own head and labels, verifies, predicts its own class names (msmlp predict and msmlp.load), and serves
them on /v1/classify and on v2 classification from a real ``msmlp serve`` on 127.0.0.1. Another input
size exports with parity at that size; bad heads, sizes and labels are one line each, before any work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

import msmlp
from msmlp.data.transforms import load_image, preprocess

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
VAL = REFERENCE / "digits" / "val"
NAMES = tuple((REFERENCE / "digits" / "labels.txt").read_text(encoding="utf-8").split())
FAMILIES = ["msmlp_micro", "s2mlpv2_micro"]
WAIT_S = 180


def first_of_each_class() -> list[tuple[Path, int]]:
    return [(sorted((VAL / str(c)).glob("*.png"))[0], c) for c in range(10)]


@pytest.fixture(scope="module", params=FAMILIES)
def fine_tuned(request, tmp_path_factory, cli) -> tuple[str, Path]:
    name = request.param
    out = tmp_path_factory.mktemp("fine_tuned") / name
    weights, labels = REFERENCE / f"{name}_digits.pth", REFERENCE / "digits" / "labels.txt"
    result = cli(
        "msmlp-export", "--model", name, "--weights", weights, "--labels", labels, "--out", out, "--no-bf16"
    )
    assert result.returncode == 0, result.stderr
    assert "fp32 passed" in result.stdout
    return name, out


def test_model_json_records_the_head_and_the_labels(fine_tuned):
    _, out = fine_tuned
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["config"]["num_classes"] == 10 and manifest["config"]["labels"] == list(NAMES)
    assert manifest["output"]["shape"] == ["batch", 10]
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 10
    assert msmlp.read_artifact(out / "model.onnx").config.labels == NAMES


def test_verify_rebuilds_the_reference_with_the_checkpoints_head(fine_tuned, cli):
    _, out = fine_tuned
    result = cli(
        "msmlp", "verify", "--onnx", out / "model.onnx", "--batch-sizes", "1,4", "--backend", "onnxruntime"
    )
    assert result.returncode == 0, result.stderr
    assert "parity fp32" in result.stdout and result.stdout.count(" ok") == 2


def test_predict_names_its_own_classes(fine_tuned, cli):
    name, out = fine_tuned
    images = first_of_each_class()
    result = cli(
        "msmlp", "predict", "--onnx", out / "model.onnx", *(p for p, _ in images), "--json", "--topk", "3"
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    for row in rows:
        assert all(p["label"] == NAMES[p["index"]] for p in row["predictions"])
    right = sum(row["predictions"][0]["label"] == NAMES[c] for row, (_, c) in zip(rows, images))
    assert right >= 8, rows  # trained: 98% (MS-MLP) and 93% (S2-MLPv2) on the held-out digits
    text = cli("msmlp", "predict", "--model", name, "--onnx", out / "model.onnx", images[3][0])
    assert text.returncode == 0, text.stderr  # --model with its own export: the recorded head is used
    assert NAMES[3] in text.stdout.splitlines()[1]
    with msmlp.load(out / "model.onnx", backend="onnxruntime") as predictor:
        api = predictor.predict([p for p, _ in images], k=3)
    assert [[p.label for p in r] for r in api] == [[p["label"] for p in r["predictions"]] for r in rows]


def test_serve_v1_and_v2_classification_carry_the_labels(fine_tuned):
    import tritonclient.http as httpclient

    name, out = fine_tuned
    command = [sys.executable, "-m", "msmlp.cli", "serve", "--onnx", str(out / "model.onnx"), "--port", "0"]
    command += ["--host", "127.0.0.1", "--threads", "1", "--backend", "onnxruntime"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    images = first_of_each_class()[:3]
    try:
        line = child.stdout.readline()
        assert line.startswith(f"serving {name}"), line + child.stderr.read()
        url = line.split(" on ")[1].split()[0]
        v1 = [
            httpx.post(
                url + "/v1/classify?topk=3",
                content=p.read_bytes(),
                timeout=WAIT_S,
                headers={"content-type": "image/png"},
            ).json()
            for p, _ in images
        ]
        config = msmlp.read_artifact(out / "model.onnx").config
        x = preprocess([load_image(p) for p, _ in images], config)
        client = httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=WAIT_S)
        tensor = httpclient.InferInput(config.input_name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        wanted = [httpclient.InferRequestedOutput(config.output_name, class_count=3)]
        v2 = client.infer(name, [tensor], outputs=wanted).as_numpy(config.output_name)
        client.close()
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=WAIT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(WAIT_S)
    assert child.returncode == 0, err
    for reply in v1:
        assert reply["model"] == name and len(reply["predictions"]) == 3
        assert all(p["label"] == NAMES[p["index"]] for p in reply["predictions"])
    assert v2.shape == (3, 3)
    for row, reply in zip(v2, v1):
        fields = [(s.decode() if isinstance(s, bytes) else s).split(":") for s in row]  # score:index:label
        assert [f[2] for f in fields] == [NAMES[int(f[1])] for f in fields]
        assert [int(f[1]) for f in fields] == [p["index"] for p in reply["predictions"]]


@pytest.mark.parametrize(("name", "size"), [("msmlp_micro", (96, 128)), ("s2mlpv2_micro", (140, 112))])
def test_another_input_size_exports_with_parity_at_that_size(name, size, tmp_path):
    result = msmlp.export(
        name,
        weights=REFERENCE / f"{name}_digits.pth",
        input_size="x".join(map(str, size)),
        out=tmp_path / name,
        bf16=False,
    )
    report = result.reports["fp32"]
    assert report.passed, report.failures()
    graph = onnx.load(str(result.artifacts["fp32"]), load_external_data=False)
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, *size]
    config = msmlp.read_artifact(result.artifacts["fp32"]).config
    assert config.input_size == (3, *size) and config.num_classes == 10
    with msmlp.load(result.artifacts["fp32"], backend="onnxruntime") as predictor:
        logits = predictor.logits(np.zeros((2, 3, *size), np.float32))
    assert logits.shape == (2, 10)


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (("--num-classes", "7"), ("--num-classes 7 disagrees with checkpoint", "head.weight has 10 rows")),
        (("--input-size", "100"), ("--input-size 100x100", "multiple of its total stride 32")),
        (("--input-size", "big"), ("--input-size 'big' must be SIDE or HEIGHTxWIDTH",)),
        (("--labels", "{three}"), ("--labels names 3 classes but the model has 10 outputs",)),
        (
            ("--labels", "{missing}"),
            ("--labels", "does not exist"),
        ),
    ],
    ids=["num-classes", "stride", "size-text", "labels-length", "labels-missing"],
)
def test_bad_head_size_or_labels_is_one_line_and_writes_nothing(extra, fragments, tmp_path, cli):
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    args = [a.format(three=three, missing=tmp_path / "none.txt") for a in extra]
    out = tmp_path / "out"
    weights = REFERENCE / "msmlp_micro_digits.pth"
    result = cli("msmlp-export", "--model", "msmlp_micro", "--weights", weights, "--out", out, *args)
    cli.assert_one_line_error(result, *fragments)
    assert not out.exists()


def test_a_triton_repository_carries_the_models_labels(fine_tuned, tmp_path):
    from msmlp.exporters.triton import validate_repository, write_repository

    _, out = fine_tuned
    model_dir = write_repository(tmp_path / "repo", onnx=out / "model.onnx")
    config = validate_repository(model_dir)
    assert [list(t.dims) for t in config.output] == [[10]]
    assert config.output[0].label_filename == "labels.txt"
    assert tuple((model_dir / "labels.txt").read_text().splitlines()) == NAMES


def test_eval_reads_the_recorded_labels(fine_tuned, tmp_path, cli):
    """Folders named by index are shown by the model's names; folders named by those names map to
    their indices, whatever their sorted order (here "three" sorts before "zero")."""
    import shutil

    _, out = fine_tuned
    indexed = cli(
        "msmlp", "eval", "--data", VAL, "--candidate", f"{out / 'model.onnx'}@onnxruntime",
        "--limit", "40", "--out", tmp_path / "indexed",
    )  # fmt: skip
    assert indexed.returncode == 0, indexed.stderr
    assert "classes: 0 zero, 1 one, 2 two" in indexed.stdout
    report = json.loads((tmp_path / "indexed" / "eval.json").read_text())
    assert report["data"]["class_names"] == list(NAMES)
    named = tmp_path / "named"
    for digit in (0, 3):
        shutil.copytree(VAL / str(digit), named / NAMES[digit])
    result = cli(
        "msmlp", "eval", "--data", named, "--candidate", f"{out / 'model.onnx'}@onnxruntime",
        "--out", tmp_path / "by_name",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "by_name" / "eval.json").read_text())["candidates"][0]
    assert row["top1"] >= 0.85, row  # by index they would be classes 0 and 1, and mostly wrong
