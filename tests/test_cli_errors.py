"""Bad input through the real command line, one row each: the exit code, one line on stderr that says what
was wrong and how to fix it, no traceback, and nothing half-written left behind."""

from __future__ import annotations

import socket
import struct
import zlib
from pathlib import Path

import pytest
import torch

import msmlp
from msmlp.models.weights import make_contributing


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG file whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory, image_paths) -> dict[str, Path]:
    """Bad inputs of every kind, made once."""
    root = tmp_path_factory.mktemp("bad")
    found = {
        "text_pth": root / "five.pth",
        "other_ckpt": root / "s2.pth",
        "a_file": root / "a-file",
        "empty_dir": root / "empty",
        "notes": root / "notes.jpg",
        "bomb": root / "bomb.png",
        "tiny": root / "tiny.png",
        "corrupt_onnx": root / "model.onnx",
        "photo": image_paths[0],
    }
    found["text_pth"].write_text("hello")
    torch.save(
        {"model": make_contributing(msmlp.create_model("s2mlpv2_micro")).state_dict()}, found["other_ckpt"]
    )
    found["a_file"].write_text("x")
    found["empty_dir"].mkdir()
    found["notes"].write_text("shopping list: eggs, milk")
    found["bomb"].write_bytes(png_declaring(30000, 30000))
    from PIL import Image

    Image.new("RGB", (4, 4)).save(found["tiny"])
    found["corrupt_onnx"].write_bytes(b"PK\x03\x04 not a graph")
    return found


EXPORT = ("msmlp-export", "--model", "msmlp_micro")
# (id, argv with {placeholders}, exit code, fragments of the one error line)
CASES = [
    (
        "unknown-model",
        ("msmlp-export", "--model", "s2mlpv2-smal"),
        2,
        ["unknown model", "did you mean s2mlpv2_small"],
    ),
    ("batch-order", (*EXPORT, "--batch", "8,1,64"), 2, ["--batch '8,1,64' is invalid"]),
    ("batch-huge", (*EXPORT, "--batch", "1,8,100000"), 2, ["--batch MAX 100000 is above 1024"]),
    ("batch-superscript", (*EXPORT, "--batch", "²,8,64"), 2, ["--batch '²,8,64' is invalid"]),
    ("opset", (*EXPORT, "--opset", "16"), 2, ["opset 16"]),
    ("calib-size", (*EXPORT, "--int8", "--calib-size", "0"), 2, ["--calib-size 0"]),
    ("calib-method", (*EXPORT, "--int8", "--calib-method", "minmax"), 2, ["--calib-method 'minmax'"]),
    (
        "weights-text",
        (*EXPORT, "--weights", "{text_pth}"),
        2,
        ["cannot read checkpoint", "state dict of tensors"],
    ),
    ("weights-missing", (*EXPORT, "--weights", "{empty_dir}/nope.pth"), 2, ["--weights", "does not exist"]),
    ("weights-other-model", (*EXPORT, "--weights", "{other_ckpt}"), 2, ["does not fit model 'msmlp_micro'"]),
    ("out-is-a-file", (*EXPORT, "--out", "{a_file}"), 2, ["--out", "is a file, not a folder"]),
    ("out-unwritable", (*EXPORT, "--out", "/proc/msmlp-out"), 2, ["--out '/proc/msmlp-out' is not writable"]),
    ("calib-empty", (*EXPORT, "--int8", "--calib", "{empty_dir}"), 2, ["holds no images"]),
    ("images-not-a-folder", (*EXPORT, "--images", "{a_file}"), 2, ["--images", "is not a folder of images"]),
    ("plugin-fp16", (*EXPORT, "--shift", "plugin", "--fp16"), 2, ["--fp16/--int8", "plugin nodes"]),
    ("features-engine", (*EXPORT, "--features", "--engine"), 2, ["--features", "--engine is not supported"]),
    ("out-indices-alone", (*EXPORT, "--out-indices", "1,2"), 2, ["--out-indices '1,2'", "add --features"]),
    (
        "dynamic-size-stride",
        (*EXPORT, "--features", "--dynamic-size", "64,100,256"),
        2,
        ["size profile opt 100x100", "stride 32", "128x128"],
    ),
    ("dynamic-size-form", (*EXPORT, "--features", "--dynamic-size", "64,128"), 2, ["MIN,OPT,MAX"]),
    ("out-indices-range", (*EXPORT, "--features", "--out-indices", "0,7"), 2, ["4 stages", "0..3"]),
    (
        "engine-without-tensorrt",
        (*EXPORT, "--engine"),
        5,
        ["--engine was given but the engine cannot be built"],
    ),
    (
        "predict-non-image",
        ("msmlp", "predict", "--model", "msmlp_micro", "{notes}"),
        2,
        ["cannot read", "notes.jpg"],
    ),
    ("predict-bomb", ("msmlp", "predict", "--model", "msmlp_micro", "{bomb}"), 2, ["bomb.png", "pixels"]),
    ("predict-tiny", ("msmlp", "predict", "--model", "msmlp_micro", "{tiny}"), 2, ["is 4x4", ">= 8 px"]),
    (
        "predict-missing",
        ("msmlp", "predict", "--model", "msmlp_micro", "{empty_dir}/x.jpg"),
        2,
        ["does not exist"],
    ),
    (
        "predict-corrupt-onnx",
        ("msmlp", "predict", "--onnx", "{corrupt_onnx}", "{photo}"),
        5,
        ["not a readable ONNX model"],
    ),
    (
        "predict-topk",
        ("msmlp", "predict", "--model", "msmlp_micro", "--topk", "0", "{photo}"),
        2,
        ["--topk 0"],
    ),
    (
        "predict-threads",
        ("msmlp", "predict", "--onnx", "{corrupt_onnx}", "--threads", "0", "{photo}"),
        2,
        ["--threads 0"],
    ),
    (
        "predict-backend-for-model",
        ("msmlp", "predict", "--model", "msmlp_micro", "--backend", "openvino", "{photo}"),
        2,
        ["runs exported files"],
    ),
    (
        "verify-missing-onnx",
        ("msmlp", "verify", "--onnx", "{empty_dir}/model.onnx"),
        2,
        ["--onnx", "does not exist"],
    ),
    (
        "verify-batch-sizes",
        ("msmlp", "verify", "--onnx", "{corrupt_onnx}", "--batch-sizes", "0"),
        2,
        ["--batch-sizes '0'"],
    ),
    ("models-no-match", ("msmlp", "models", "zzz*"), 2, ["no registered model matches 'zzz*'"]),
    (
        "serve-port",
        ("msmlp", "serve", "--model", "msmlp_micro", "--port", "70000"),
        2,
        ["--port", "'70000' is not a port number"],
    ),
    (
        "triton-repo-is-a-file",
        ("msmlp", "triton-repo", "--onnx", "{corrupt_onnx}", "--repo", "{a_file}"),
        2,
        ["{a_file}"],
    ),
    (
        "bench-dead-url",
        ("msmlp", "bench", "--url", "http://127.0.0.1:{dead_port}", "--concurrency", "1"),
        6,
        ["127.0.0.1"],
    ),
]


@pytest.mark.parametrize(("argv", "code", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_with_its_exit_code(cli, files, tmp_path, argv, code, fragments):
    values = {k: str(v) for k, v in files.items()} | {"dead_port": str(dead_port())}
    args = [a.format(**values) for a in argv]
    if args[0] == "msmlp-export" and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    result = cli(*args, timeout=180)
    cli.assert_one_line_error(result, *(f.format(**values) for f in fragments), code=code)
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith("verify_")]


def test_there_are_at_least_thirty_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 30


def test_verbose_shows_the_traceback(cli, files):
    result = cli("msmlp", "-v", "predict", "--onnx", str(files["corrupt_onnx"]), str(files["photo"]))
    assert result.returncode == 5 and "Traceback" in result.stderr and "DecodeError" in result.stderr


@pytest.mark.parametrize(("signum", "code"), [(15, 143), (2, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_export_leaves_no_staging_file(cli, tmp_path, signum, code):
    """Stopped while the staged graph exists (export, check or verification), the export removes it."""
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    command = [
        str(type(cli).bin / "msmlp-export"),
        "--model",
        "s2mlpv2_micro",
        "--out",
        str(out),
        "--no-bf16",
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stage = out / ".model.unverified.onnx"
    deadline = time.monotonic() + 120
    while not stage.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stage.exists(), "the staged graph never appeared"
    child.send_signal(signal.Signals(signum))
    _, err = child.communicate(timeout=120)
    assert child.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith(
        "terminated" if signum == 15 else "interrupted"
    )
    assert sorted(p.name for p in out.iterdir()) == []  # nothing staged, nothing half-written
