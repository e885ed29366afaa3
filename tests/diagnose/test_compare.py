"""Layer comparison on real graphs: a planted broken Q/DQ is named first, FP16 and OpenVINO candidates
are matched layer for layer, memory stays bounded, and the command writes its JSON and PNG."""

from __future__ import annotations

import argparse
import json
import tracemalloc
from dataclasses import asdict

import onnx
import pytest

from msmlp.diagnose.compare import compare_layers
from msmlp.diagnose.graph import corrupt_scale, load_model
from msmlp.diagnose.runners import Target
from msmlp.errors import InputError

BROKEN = "/stages.1/blocks/blocks.0/mlp/fc1/MatMul"  # its input Q/DQ gets a 50x too small scale (clipping)
BROKEN_TAP = "/stages.1/blocks/blocks.0/mlp/fc1/Add_output_0"


@pytest.fixture(scope="module")
def broken(micro, tmp_path_factory):
    paths = micro("s2mlpv2_micro")
    model = load_model(paths["int8"])
    corrupt_scale(model, BROKEN, 0.02)
    path = tmp_path_factory.mktemp("broken") / "model.int8.onnx"
    onnx.save(model, str(path))
    return path


def test_a_corrupted_scale_is_named_as_the_first_layer_that_breaks(micro, broken):
    paths = micro("s2mlpv2_micro")
    report = compare_layers(paths["fp32"], Target(broken), paths["held_out"], threshold=0.99)
    assert report.first_crossing is not None and report.first_crossing.name == BROKEN_TAP
    assert report.entry_points()[0].name == BROKEN_TAP  # the largest error added over its inputs
    healthy = compare_layers(paths["fp32"], Target(paths["int8"]), paths["held_out"], threshold=0.99)
    assert healthy.first_crossing is None and not healthy.unmatched
    assert report.growth()["last_error"] > 10 * healthy.growth()["last_error"]
    assert BROKEN_TAP in report.table(rows=10) and "first layer with cosine < 0.99" in report.table()


@pytest.mark.parametrize("candidate", ["fp16", "openvino"])
def test_fp16_graph_and_openvino_are_matched_layer_for_layer(micro, candidate):
    pytest.importorskip("openvino")
    paths = micro("msmlp_micro")
    target = Target(paths["fp16"]) if candidate == "fp16" else Target(paths["fp32"], "openvino")
    report = compare_layers(paths["fp32"], target, paths["held_out"][:8], batch=4)
    assert not report.unmatched and len(report.layers) > 50 and report.samples == 8
    assert report.layers[-1].name == "logits" and report.first_crossing is None
    assert min(s.cosine for s in report.layers) > 0.9999
    assert all(s.samples == 8 for s in report.layers)


def test_memory_is_bounded_by_running_fewer_inputs_and_keeping_only_statistics(micro):
    paths = micro("s2mlpv2_micro")
    x = paths["held_out"]

    def peak(memory_mb: float):
        tracemalloc.start()
        try:
            report = compare_layers(paths["fp32"], Target(paths["int8"]), x, batch=16, memory_mb=memory_mb)
            return report, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, small_peak = peak(0.001)  # one input per run
    large, large_peak = peak(4096)  # all 16 inputs in one run
    assert small.chunk == 1 and large.chunk == 16
    assert small_peak < large_peak / 2
    for a, b in zip(small.layers, large.layers):
        assert a.name == b.name and a.cosine == pytest.approx(
            b.cosine, abs=1e-4
        )  # ORT INT8 kernels vary with batch
    # what is kept per layer is a handful of scalars, never a tensor
    assert all(isinstance(v, (str, int, float)) for s in small.layers for v in asdict(s).values())


def test_bad_requests_fail_in_one_line(micro):
    paths = micro("s2mlpv2_micro")
    with pytest.raises(InputError, match="threshold cosine 1.5 must be in"):
        compare_layers(paths["fp32"], Target(paths["int8"]), paths["held_out"], threshold=1.5)
    with pytest.raises(InputError, match="candidate backend 'tpu' in .* is not one of onnxruntime"):
        Target.parse(f"{paths['int8']}@tpu")


def test_command_writes_a_table_json_and_a_depth_plot(micro, broken, tmp_path, capsys):
    from msmlp.commands import compare_layers as command

    paths = micro("s2mlpv2_micro")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    candidates = ["--candidate", str(broken), "--candidate", str(paths["fp16"])]
    options = ["--samples", "8", "--out", str(tmp_path), "--threshold", "0.99", "--sensitivity"]
    args = parser.parse_args([*candidates, "--reference", str(paths["fp32"]), *options])
    assert command.run(args) == 0
    out = capsys.readouterr().out
    assert "first layer with cosine < 0.99: " + BROKEN_TAP in out and "plot:" in out
    data = json.loads((tmp_path / "layers_model_int8_onnxruntime.json").read_text())
    assert data["first_crossing"]["name"] == BROKEN_TAP and data["samples"] == 8
    assert data["sensitivity"][0]["group"] == "stages.1.blocks.0/mlp"  # ranked first: it gains the most
    assert (tmp_path / "layers_model_fp16_onnxruntime.json").is_file()
    assert (tmp_path / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
