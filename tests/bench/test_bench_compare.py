"""`msmlp bench --compare`: every installed backend x precision on one real-image batch, interleaved; rows
carry latency, throughput, speed-up over eager, GFLOP/s against the measured matmul peaks, and parity with
eager FP32 (so a fast wrong path cannot be named fastest). Micro models, few rounds: this checks the
machinery and the report, not speed."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

import msmlp
from msmlp.bench import BenchOptions, matmul_peak, run_benchmark
from msmlp.cli import main
from msmlp.exporters.onnx import export_onnx
from msmlp.hostcpu import FEATURES, host_cpu
from msmlp.runtime.openvino import bf16_support

MODEL = "s2mlpv2_micro"
BF16, WHY_NOT = bf16_support() if __import__("importlib").util.find_spec("openvino") else (False, "")


def check_rows(compare: dict, batch: int, int8: bool) -> dict[str, dict]:
    rows = {r["label"]: r for r in compare["rows"]}
    expected = {"pytorch fp32 (eager)", "pytorch bf16 autocast", "onnxruntime fp32", "openvino fp32"}
    if BF16:
        expected.add("openvino bf16")
    elif WHY_NOT:  # OpenVINO installed, the CPU without BF16: the row is skipped with the reason
        assert compare["skipped"]["openvino bf16"] == WHY_NOT and "openvino bf16" not in {
            r["label"] for r in compare["rows"]
        }
    if int8:
        expected |= {"onnxruntime int8", "openvino int8 (bf16 hint)" if BF16 else "openvino int8"}
    assert expected <= set(rows), sorted(rows)
    eager = rows["pytorch fp32 (eager)"]
    assert eager["speedup_vs_eager"] == 1.0 and eager["cosine"] == pytest.approx(1.0, abs=1e-12)
    gflop, peaks = compare["gflop_per_image"], compare["peaks_gflops"]
    assert 0 < gflop < 1 and peaks["bf16"] > 0 and peaks["fp32"] > 0
    for r in rows.values():
        assert r["batch"] == batch and r["p50_ms"] <= r["p99_ms"] and r["iters"] == compare["rounds"]
        assert r["gflops"] == pytest.approx(gflop * batch / (r["p50_ms"] / 1e3))
        assert r["passed"], (r["label"], r["cosine"], r["top1_decisive"])
    for label in ("onnxruntime fp32", "openvino fp32"):  # same precision as the reference: exact
        assert rows[label]["cosine"] > 0.99999 and rows[label]["top1"] == 1.0
    assert compare["fastest"] in rows
    return rows


@pytest.mark.cpu_features
def test_compare_model_with_int8_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = f"bench --compare --model {MODEL} --int8 --batch 4 --warmup 1 --iters 2 --threads 2 --no-progress"
    assert main([*argv.split(), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "matmul peak measured in this run" in text and "onnxruntime int8" in text
    report = json.loads((out / "bench.json").read_text())
    rows = check_rows(report["compare"], 4, int8=True)
    cpu = report["host"]["cpu"]  # the CPU behind the figures, and the mask where one was set
    assert cpu["model"] == host_cpu().model and set(cpu["flags"]) <= set(FEATURES)
    assert not BF16 or set(cpu["flags"]) & {"avx512_bf16", "amx_bf16"}  # a BF16 row: a BF16 CPU
    assert cpu.get("masked", []) == sorted(host_cpu().masked)
    assert report["target"] == {"kind": "model", "model": MODEL, "onnx": "temporary export", "int8": True}
    assert rows["onnxruntime int8"]["precision"] == "int8" and rows["onnxruntime int8"]["cosine"] < 1.0
    with Image.open(out / "bench.png") as png:
        assert png.format == "PNG" and png.width >= 1000 and png.height >= 300
        assert len(np.unique(np.asarray(png.convert("L")))) > 20, "the plot is not blank"


@pytest.mark.cpu_features
def test_compare_an_export_folder_rebuilds_the_same_reference(tmp_path, contributing):
    folder = tmp_path / "export"
    folder.mkdir()
    export_onnx(contributing(MODEL), folder / "model.onnx", config=msmlp.get_config(MODEL), batch=(1, 4, 8))
    report = run_benchmark(
        BenchOptions(onnx_dir=folder, compare=True, batches=[1, 2], warmup=1, iters=2, progress=False)
    )
    compare = report["compare"]
    assert report["target"]["model"] == MODEL and "int8 rows" in compare["skipped"]
    assert sorted({r["batch"] for r in compare["rows"]}) == [1, 2]
    check_rows({**compare, "rows": [r for r in compare["rows"] if r["batch"] == 2]}, 2, int8=False)


def test_compare_needs_an_export_folder_with_a_graph(tmp_path, capsys):
    code = main(["bench", "--compare", "--onnx-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "holds no model.onnx" in err


def test_matmul_peak_is_positive_and_checks_its_dtype():
    assert matmul_peak("fp32", n=256, seconds=0.05) > 0
    with pytest.raises(msmlp.errors.InputError, match="'fp16' is not one of bf16, fp32"):
        matmul_peak("fp16")


def test_interleaved_rounds_rotate_the_order_and_time_every_call():
    """Each round calls every entry once, starting one entry later than the round before, so a slow
    spell on shared cores is spread over all entries; a slow entry shows in its own samples only."""
    from msmlp.bench.timing import interleaved_samples

    order: list[str] = []

    def call(name: str, seconds: float = 0.0):
        def run(x: np.ndarray) -> None:
            order.append(name)
            if seconds:
                time.sleep(seconds)

        return run

    calls = {"a": call("a"), "b": call("b", 0.01), "c": call("c")}
    samples = interleaved_samples(calls, np.zeros(1), rounds=4)
    assert order == list("abcbcacababc")
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4, "c": 4}
    assert min(samples["b"]) >= 0.01 > max(samples["a"] + samples["c"])


@pytest.fixture
def labelled(tmp_path, contributing, image_paths):
    """A CSV of 8 crops of the packaged photos labelled with eager PyTorch FP32's own top-1 (synthetic
    weights, seed 0, as bench builds them): the eager row scores 100 % and the others what they change."""
    import torch

    from msmlp.data.transforms import augmented, load_image, preprocess

    paths = []
    for i, view in enumerate(augmented([load_image(p) for p in image_paths], 8, seed=5)):
        paths.append(tmp_path / f"v{i}.jpg")
        view.resize((max(64, view.width // 4), max(64, view.height // 4))).save(paths[-1], quality=90)
    model = contributing(MODEL)
    with torch.no_grad():
        labels = model(torch.from_numpy(preprocess(paths, msmlp.get_config(MODEL)))).argmax(1).tolist()
    (tmp_path / "val.csv").write_text("".join(f"{p.name},{y}\n" for p, y in zip(paths, labels)))
    return tmp_path / "val.csv"


@pytest.mark.cpu_features
def test_compare_with_data_adds_accuracy_columns_to_every_row(tmp_path, capsys, labelled):
    out = tmp_path / "cmp"
    argv = f"bench --compare --model {MODEL} --batch 4 --warmup 1 --iters 2 --threads 2 --no-progress"
    assert main([*argv.split(), "--data", str(labelled), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "acc@1 %" in text and "top-1/top-5 on 8 labelled images (csv" in text
    compare = json.loads((out / "bench.json").read_text())["compare"]
    assert compare["accuracy"]["images_scored"] == 8 and compare["accuracy"]["layout"] == "csv"
    rows = {r["label"]: r for r in compare["rows"]}
    eager = rows["pytorch fp32 (eager)"]
    assert eager["accuracy_top1"] == 1.0 and eager["accuracy_top1_delta_points"] == 0
    for r in rows.values():
        lo, hi = r["accuracy_top1_ci95"]
        assert lo <= r["accuracy_top1"] <= hi and r["accuracy_top1"] <= r["accuracy_top5"]
        assert r["accuracy_top1_delta_points"] == pytest.approx(100 * (r["accuracy_top1"] - 1.0))
    assert rows["onnxruntime fp32"]["accuracy_top1"] == 1.0  # FP32 like the reference: the same decisions


def test_compare_data_is_checked_before_any_work(tmp_path, capsys, image_paths):
    folder = tmp_path / "val"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(image_paths[0].read_bytes())
    (folder / "b.jpg").write_text("not an image")
    (folder / "val.txt").write_text("a.jpg 1\nb.jpg 2\n")
    for extra, fragment in (([], "adds accuracy columns to --compare; add --compare"),
                            (["--compare"], "--data: cannot read")):  # fmt: skip
        code = main(["bench", "--model", MODEL, *extra, "--data", str(folder), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and fragment in err, err
        assert not (tmp_path / "o").exists()


def test_compare_has_a_torch_compile_row_with_its_compile_time(tmp_path, monkeypatch):
    """--torch-compile adds what a PyTorch user tries next (inductor, freezing, BF16 autocast); its compile
    time is reported apart, and its logits pass the BF16 gate against eager FP32."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    opts = BenchOptions(
        model=MODEL, compare=True, torch_compile=True, batches=[1], warmup=1, iters=2, threads=2
    )
    opts.progress = False
    report = run_benchmark(opts)
    rows = {r["label"]: r for r in report["compare"]["rows"]}
    row = rows["pytorch bf16 torch.compile"]
    assert row["precision"] == "bf16" and row["passed"] and row["cosine"] > 0.9995
    assert row["details"]["torch_compile"] == "inductor, freezing" and row["details"]["compile_s"] > 0
    assert row["p50_ms"] < row["details"]["compile_s"] * 1e3  # the compile is not in the timings
    assert (tmp_path / "inductor").is_dir()  # inductor's caches went where it was told
