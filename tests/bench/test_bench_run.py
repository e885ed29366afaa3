"""`msmlp bench`: real timings on a micro model's ONNX graph in ONNX Runtime, OpenVINO and PyTorch, the
JSON report, the PNG plot, the per-layer profiles and the concurrency modes. Small counts: this checks
the machinery and the report's internal consistency, not speed."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import msmlp
from msmlp.bench import BenchOptions, load_service, run_benchmark, summarize, write_report
from msmlp.cli import main
from msmlp.exporters.onnx import export_onnx
from msmlp.runtime.torch_backend import TorchBackend
from msmlp.serve.app import create_app
from msmlp.serve.server import ServiceThread

MODEL = "msmlp_micro"


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, contributing) -> Path:
    path = tmp_path_factory.mktemp("bench") / "model.onnx"
    return export_onnx(contributing(MODEL), path, config=msmlp.get_config(MODEL), batch=(1, 4, 8))


def assert_consistent(row: dict, batch: int, iters: int) -> None:
    assert row["batch"] == batch and row["iters"] == iters and row["timing"] == "wall"
    order = [row[k] for k in ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")]
    assert all(a <= b for a, b in itertools.pairwise(order)), order
    assert row["min_ms"] <= row["mean_ms"] <= row["max_ms"] and row["std_ms"] >= 0
    assert row["throughput_ips"] == pytest.approx(batch / (row["mean_ms"] / 1e3), rel=1e-6)


def test_summarize_percentiles():
    stats = summarize([i / 1e3 for i in range(1, 101)], batch=4)  # 1..100 ms
    assert (stats.p50_ms, stats.p90_ms, stats.p99_ms) == pytest.approx((50.5, 90.1, 99.01))
    assert stats.mean_ms == pytest.approx(50.5) and stats.throughput_ips == pytest.approx(4 / 0.0505)


def test_bench_onnx_report_profile_and_batcher_load(onnx_file, tmp_path):
    opts = BenchOptions(
        onnx=str(onnx_file),
        backend="onnxruntime",
        batches=[4, 1, 2],
        warmup=1,
        iters=5,
        threads=1,
        profile=True,
        concurrency=8,
        requests=32,
        progress=False,
    )
    report = run_benchmark(opts)
    assert [r["batch"] for r in report["results"]] == [1, 2, 4]
    for row in report["results"]:
        assert_consistent(row, row["batch"], 5)
    assert report["backend"]["backend"] == "onnxruntime" and report["backend"]["threads"] == 1
    assert report["backend"]["file"] == str(onnx_file)
    profile = report["profile"]
    assert profile["available"] and profile["source"] == "onnxruntime" and profile["batch"] == 4
    ops = {r["op"]: r for r in profile["top_ops"]}
    assert {"Conv", "Gemm"} <= set(ops) and sum(r["percent"] for r in ops.values()) <= 100.0 + 1e-6
    assert profile["top_nodes"] and all(r["ms_per_run"] > 0 for r in profile["top_nodes"])
    conc = report["concurrency"]
    assert conc["requests"] == conc["answered"] == 32 and conc["errors"] == {}
    assert 1 <= conc["batcher"]["mean_batch"] <= 4 and sum(conc["batcher"]["batch_sizes"].values()) >= 8

    json_path, png_path = write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report))
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png_path) as png:
        assert png.format == "PNG" and 1000 <= png.width <= 2000 and 400 <= png.height <= 1000
        assert len(np.unique(np.asarray(png.convert("L")))) > 20, "the plot is not blank"


def test_cli_model_exports_a_temporary_onnx(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = f"bench --model {MODEL} --batch 1,2 --warmup 1 --iters 3 --threads 1 --no-progress".split()
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "p50 ms" in text and "p99 ms" in text and "img/s" in text and "bench.png" in text
    report = json.loads((out / "bench.json").read_text())
    # auto on an unverified graph: the fastest CPU backend at the graph's own precision, never bf16
    assert (
        report["backend"]["backend"] in ("openvino", "onnxruntime")
        and report["backend"]["precision"] == "fp32"
    )
    assert "temporary export" in report["target"]["onnx"]
    assert report["target"]["weights"].startswith("synthetic")
    assert [r["batch"] for r in report["results"]] == [1, 2]
    assert (out / "bench.png").stat().st_size > 10_000


def test_cli_pytorch_backend_with_torch_profiler(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = f"bench --model {MODEL} --backend pytorch --batch 2 --threads 1 --warmup 1 --iters 3 --profile"
    assert main([*argv.split(), "--no-progress", "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["backend"]["backend"] == "pytorch"
    assert report["profile"]["source"] == "pytorch" and report["profile"]["top_ops"]
    assert "per-layer profile (pytorch" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "0,2"], "--batch '0,2' must be positive integers"),
        (["--backend", "pytorch"], "--backend pytorch runs a registered model: pass --model NAME"),
        (["--backend", "tensorrt"], "--backend tensorrt runs a plan: build one with msmlp build"),
        (["--compare"], r"give exactly one of --model or --onnx-dir with --compare"),
        (["--batch", "16"], r"batch sizes \[16\] are outside the backend's supported range 1..8"),
        (["--iters", "0"], "--iters must be >= 1"),
    ],
)
def test_cli_bad_options_are_one_line_errors(onnx_file, tmp_path, capsys, argv, message):
    code = main(["bench", "--onnx", str(onnx_file), "--out", str(tmp_path), "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert re.search(message, err), err
    assert not (tmp_path / "bench.json").exists()


def test_concurrency_against_a_running_service(contributing, tmp_path):
    app = create_app(TorchBackend(contributing(MODEL)), msmlp.get_config(MODEL), max_batch=4)
    with ServiceThread(app) as service:
        conc = load_service(service.url, clients=4, requests=12, progress=False)
    assert conc.answered == conc.requests == 12 and conc.errors == {}
    assert conc.latency is not None and conc.latency.p50_ms <= conc.latency.p99_ms
    assert conc.target.endswith("/v1/classify") and len(conc.samples_ms) == 12
    report = {
        "target": {"kind": "url", "url": service.url},
        "results": [],
        "settings": {},
        "host": {},
        "concurrency": {**conc.__dict__, "latency": conc.latency.__dict__, "latencies_ms": conc.samples_ms},
    }
    _, png = write_report(report, tmp_path)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 500


@pytest.mark.cpu_features
def test_cli_openvino_profile_shows_kernel_precisions(onnx_file, tmp_path, capsys):
    pytest.importorskip("openvino")
    from msmlp.runtime.openvino import bf16_support

    precision = "bf16" if bf16_support()[0] else "f32"
    out = tmp_path / "bench"
    argv = ["bench", "--onnx", str(onnx_file), "--backend", "openvino", "--precision", precision]
    argv += ["--batch", "2", "--warmup", "1", "--iters", "3", "--profile", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "bench.json").read_text())
    backend, profile = report["backend"], report["profile"]
    cpu = report["host"]["cpu"]  # the CPU behind the figures
    assert cpu["model"] and (precision == "f32" or {"avx512_bf16", "amx_bf16"} & set(cpu["flags"]))
    assert backend["backend"] == "openvino" and backend["inference_precision_hint"] == precision
    want = "bf16" if precision == "bf16" else "fp32"
    assert backend["precision"] == want and profile["source"] == "openvino" and profile["batch"] == 2
    assert next(iter(profile["ms_by_precision"])) == want, profile["ms_by_precision"]
    assert any(r["op"].startswith("FullyConnected") for r in profile["top_ops"])
    assert all(r["exec_type"] for r in profile["top_nodes"])
    assert "by kernel precision" in capsys.readouterr().out


def test_cli_url_with_no_service_is_one_line(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["bench", "--url", f"http://127.0.0.1:{port}", "--concurrency", "2", "--out", str(tmp_path)]
    assert main([*argv, "--no-progress"]) == 6  # ServiceError
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no service answers" in err and "msmlp serve" in err
    assert not (tmp_path / "bench.json").exists()
