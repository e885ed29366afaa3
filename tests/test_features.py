"""Backbone feature exports: the size profile, dense placement, the per-output verification at several
sizes, and the runtime's named outputs, on real photographs and real ONNX Runtime / OpenVINO."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
import torch

import msmlp
from msmlp.errors import InputError
from msmlp.exporters.check import check_graph, op_counts
from msmlp.exporters.features import export_features_onnx, feature_layout
from msmlp.features import (
    FeatureLayout,
    FeatureOutput,
    SizeProfile,
    default_profile,
    parse_out_indices,
    placement,
)
from msmlp.models.features import FeatureBackbone, stage_outputs
from msmlp.runtime.ort import OnnxRuntimeBackend
from msmlp.verify.stats import compare

# (model, stride, a profile, a size inside it that is none of min/opt/max)
MICRO = [
    ("msmlp_micro", 32, "64,128,192x256", (96, 160)),
    ("s2mlpv2_micro", 14, "112,168,224x280", (126, 182)),
]


# ------------------------------------------------------------------------------------ size profile


def test_profile_parses_sides_and_pairs():
    p = SizeProfile.parse("224,512,800x1344", 32)
    assert (p.min, p.opt, p.max) == ((224, 224), (512, 512), (800, 1344))
    assert p.sizes() == [(224, 224), (512, 512), (800, 1344)]
    assert SizeProfile.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("224,500,1344", "not a multiple of the network's total stride 32"),
        ("512,224,1344", "not ordered"),
        ("224,512", "MIN,OPT,MAX"),
        ("224,abc,1344", "SIDE or HEIGHTxWIDTH"),
    ],
)
def test_bad_profiles_say_why(text, fragment):
    with pytest.raises(InputError, match=fragment):
        SizeProfile.parse(text, 32)


def test_profile_check_names_the_fix():
    p = SizeProfile.parse("224,512,1344", 32)
    p.check(800, 1344)
    with pytest.raises(InputError, match="pad it to 832x1344"):
        p.check(810, 1344)
    with pytest.raises(InputError, match="outside the size profile"):
        p.check(1376, 224)


def test_default_profile_rounds_to_the_stride():
    p = default_profile(14)
    assert p.min == (224, 224) and p.opt == (518, 518) and p.max == (1344, 1344)
    assert all(side % 14 == 0 for size in p.sizes() for side in size)


def test_out_indices():
    assert parse_out_indices(None, 4) == (0, 1, 2, 3)
    assert parse_out_indices("3,1,-1", 4) == (1, 3)
    for bad in ("4", "", "a"):
        with pytest.raises(InputError):
            parse_out_indices(bad, 4)


# ------------------------------------------------------------------------------------ placement


def _layout(profile: str | None, stride: int = 32, size=(224, 224)) -> FeatureLayout:
    out = (FeatureOutput("stage3", 3, 8, stride),)
    if profile is None:
        return FeatureLayout(out, stride, size, None)
    return FeatureLayout(out, stride, None, SizeProfile.parse(profile, stride))


def test_pad_keeps_the_scale_and_pads_to_the_stride():
    place = placement((500, 375), _layout("224,512,1344"), "pad")
    assert place.scale == 1.0 and place.resized == (500, 375) and place.input == (512, 384)
    assert place.padding == {"top": 0, "left": 0, "bottom": 12, "right": 9}


def test_pad_shrinks_only_past_the_largest_size_and_pads_up_to_the_smallest():
    big = placement((2000, 1000), _layout("224,512,1344"), "pad")
    assert big.resized == (1344, 672) and big.input == (1344, 672)
    small = placement((100, 150), _layout("224,512,1344"), "pad")
    assert small.scale == 1.0 and small.input == (224, 224)


def test_letterbox_fits_the_size_keeping_the_aspect():
    place = placement((480, 640), _layout("224,512,1344"), "letterbox", (512, 512))
    assert place.input == (512, 512) and place.resized == (384, 512) and place.scale == pytest.approx(0.8)
    fixed = placement((480, 640), _layout(None), "pad")  # a fixed-size graph always letterboxes
    assert fixed.input == (224, 224) and fixed.resized == (168, 224)


# ------------------------------------------------------------------------------------ the models


@pytest.mark.parametrize(("name", "stride", "profile", "other"), MICRO)
def test_stage_features_match_the_reference_form_at_any_size(contributing, name, stride, profile, other):
    deploy = contributing(name)
    reference = contributing(name, shift_form="reference")
    assert FeatureBackbone(deploy).stride == stride
    gen = torch.Generator().manual_seed(0)
    for size in [*SizeProfile.parse(profile, stride).sizes(), other]:
        x = torch.randn(2, 3, *size, generator=gen)
        with torch.inference_mode():
            got, want = FeatureBackbone(deploy)(x), FeatureBackbone(reference)(x)
        for out, g, w in zip(stage_outputs(deploy), got, want):
            assert g.shape == out.shape(2, *size)
            assert torch.allclose(g, w, atol=2e-5, rtol=1e-4)


def test_features_are_what_the_classifier_pools(contributing):
    """The last stage output is what the head of MS-MLP pools (its LayerNorm comes after the mean)."""
    model = contributing("msmlp_micro")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        (last,) = FeatureBackbone(model, "3")(x)
        assert torch.allclose(model.forward_head(last), model(x), atol=1e-5)


# ------------------------------------------------------------------------------------ the graph


@pytest.fixture(scope="module")
def feature_graphs(tmp_path_factory):
    from msmlp.models.weights import make_contributing

    found = {}
    for name, stride, profile, _ in MICRO:
        model = make_contributing(msmlp.create_model(name), seed=0).eval()
        config = msmlp.get_config(name)
        layout = feature_layout(model, config, None, SizeProfile.parse(profile, stride))
        path = export_features_onnx(
            model, tmp_path_factory.mktemp(name) / "model.onnx", config=config, layout=layout, model_name=name
        )
        found[name] = (model, layout, path)
    return found


def _photos(image_paths, size, config):
    from msmlp.data.dense import dense_array
    from msmlp.data.transforms import load_image

    layout = FeatureLayout((FeatureOutput("s", 0, 1, 1),), 1, tuple(size), None)
    ims = [load_image(p) for p in image_paths]
    return np.stack(
        [dense_array(im, placement((im.height, im.width), layout, "letterbox", size), config) for im in ims]
    )


@pytest.mark.parametrize(("name", "stride", "profile", "other"), MICRO)
def test_dynamic_graph_is_right_at_every_size_on_real_photos(
    feature_graphs, image_paths, name, stride, profile, other
):
    model, layout, path = feature_graphs[name]
    graph = onnx.load(path)
    assert not {"Roll", "ScatterND", "ScatterElements", "If", "Loop"} & set(op_counts(graph))
    assert check_graph(graph).ok  # dynamic H/W pass the check because the metadata declares the profile
    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output]
    assert dims[0] == ["batch", layout.outputs[0].channels, "stage0_height", "stage0_width"]
    ort = OnnxRuntimeBackend(path)
    for size in [*layout.sizes(), other]:
        x = _photos(image_paths, size, msmlp.get_config(name))
        with torch.inference_mode():
            want = FeatureBackbone(model)(torch.from_numpy(x))
        got = ort.infer({"input": x}, outputs=layout.names)
        for out, w in zip(layout.outputs, want):
            assert got[out.name].shape == out.shape(len(x), *size)
            stats = compare(w.numpy().reshape(len(x), -1), got[out.name].reshape(len(x), -1))
            assert stats.cosine > 0.99999 and stats.max_rel < 1e-4, (size, out.name, stats)


def test_a_static_trace_declared_dynamic_fails_loudly(feature_graphs, image_paths, monkeypatch, tmp_path):
    """S2-MLPv2 traced without the traced sizes keeps the trace's reshape sizes: right at that size,
    an error (not a wrong answer) at any other."""
    import contextlib

    import msmlp.exporters.features as exporter

    model, layout, _ = feature_graphs["s2mlpv2_micro"]
    monkeypatch.setattr(exporter, "dynamic_sizes", contextlib.nullcontext)
    config = msmlp.get_config("s2mlpv2_micro")
    ort = OnnxRuntimeBackend(export_features_onnx(model, tmp_path / "bad.onnx", config=config, layout=layout))
    ort.infer({"input": _photos(image_paths, layout.profile.opt, config)}, outputs=layout.names)
    with pytest.raises(Exception, match="(?i)reshape"):
        ort.infer({"input": _photos(image_paths, (112, 224), config)}, outputs=layout.names)


def test_verification_catches_a_shift_that_bakes_the_traced_size(feature_graphs, image_paths, tmp_path):
    """A roll written with the traced size (the form before dynamic sizes) is wrong at other sizes: the
    per-size verification fails the export, whether the graph gives wrong values or cannot run."""
    from msmlp.pipeline.features import _reference_features, _verify_run

    def baked_roll(x, shift, dim):
        size = int(x.shape[dim])
        shift %= size
        return (
            x
            if shift == 0
            else torch.cat((x.narrow(dim, size - shift, shift), x.narrow(dim, 0, size - shift)), dim)
        )

    model, layout, _ = feature_graphs["msmlp_micro"]
    config = msmlp.get_config("msmlp_micro")
    blocks = [m for m in model.modules() if hasattr(m, "roll")]
    correct = blocks[0].roll
    try:
        for block in blocks:
            block.roll = baked_roll
        path = export_features_onnx(model, tmp_path / "baked.onnx", config=config, layout=layout)
        reference = _reference_features(model, layout, image_paths, config)  # eager: right at every size
    finally:
        for block in blocks:
            block.roll = correct
    run = _verify_run(path, "fp32", "onnxruntime", "f32", layout, reference)
    assert not run["passed"]
    opt = next(s for s in run["sizes"] if s["size"] == list(layout.profile.opt))
    assert all(o["passed"] for o in opt["outputs"].values())  # right where it was traced
    assert any("64x64" in f for f in run["failures"]) and run["worst_cosine"] < 0.999


# ------------------------------------------------------------------------------------ the pipeline


@pytest.fixture(scope="module")
def exported_features(tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "s2"
    result = msmlp.export(
        "s2mlpv2_micro", features=True, dynamic_size="112,168,224x280", fp16=True, int8=True, out=out
    )
    return out, result


def test_export_features_verifies_every_output_at_every_size(exported_features):
    out, _result = exported_features
    report = json.loads((out / "verify_features.json").read_text())
    runs = {r["key"]: r for r in report["runs"]}
    assert runs["fp32"]["passed"] and runs["fp32_openvino"]["passed"]
    for run in runs.values():
        assert [s["size"] for s in run["sizes"]] == [[112, 112], [168, 168], [224, 280]]
        for size in run["sizes"]:
            assert set(size["outputs"]) == {"stage0", "stage1"}
            for stats in size["outputs"].values():
                held_out = run["file"] == "model.int8.onnx"  # the photos calibration did not see
                assert stats["samples"] == (2 if held_out else 5) and stats["cosine"] <= 1.0 + 1e-9
    if "bf16" in runs:  # where the CPU has BF16
        assert runs["bf16"]["worst_cosine"] < 1.0  # it really ran in reduced precision
    manifest = json.loads((out / "model.json").read_text())
    assert [o["name"] for o in manifest["outputs"]] == ["stage0", "stage1"]
    assert manifest["features"]["outputs"][1] == {
        "name": "stage1",
        "stage": 1,
        "channels": 64,
        "stride": 14,
        "module": "stages.1",
    }
    assert manifest["features"]["size_profile"]["max"] == [224, 280]
    assert manifest["verification"]["fp32"]["passed"] and "output" not in manifest


def test_load_returns_every_named_output_with_its_placement(exported_features, image_paths):
    out, _ = exported_features
    with msmlp.load(out / "model.onnx") as predictor:
        layout = predictor.feature_layout
        assert layout is not None and layout.names == ("stage0", "stage1")
        found = predictor.features(image_paths)
        for f in found:
            h, w = f.placement.input
            assert h % 14 == 0 and w % 14 == 0 and 112 <= h <= 224 and 112 <= w <= 280
            assert f.maps["stage1"].shape == (64, h // 14, w // 14)
            assert f.placement.padding["bottom"] == h - f.placement.resized[0]
        with pytest.raises(InputError, match="not a multiple of the stride 14"):
            predictor.feature_maps(np.zeros((1, 3, 120, 112), np.float32))
        with pytest.raises(InputError, match="outside the size profile"):
            predictor.feature_maps(np.zeros((1, 3, 252, 112), np.float32))
        with pytest.raises(InputError, match="feature export"):
            predictor.predict(image_paths[:1])


def test_feature_runtime_imports_no_torch(exported_features, image_paths):
    import subprocess

    out, _ = exported_features
    code = (
        "import sys, msmlp\n"
        f"p = msmlp.load({str(out / 'model.onnx')!r})\n"
        f"f = p.features([{str(image_paths[0])!r}])[0]\n"
        "assert set(f.maps) == {'stage0', 'stage1'}\n"
        "print(sorted(m for m in ('torch', 'onnx', 'modelopt') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_openvino_bounds_the_spatial_axes_to_the_profile(exported_features):
    pytest.importorskip("openvino")
    from msmlp.runtime.openvino import OpenVINOBackend

    out, _ = exported_features
    with OpenVINOBackend(out / "model.onnx") as backend:
        shape = backend._compiled.inputs[0].get_partial_shape()
        assert str(shape[2]) == "112..224" and str(shape[3]) == "112..280"


def test_bench_times_every_output_at_a_detection_size(exported_features, monkeypatch):
    from msmlp.bench.options import BenchOptions
    from msmlp.bench.run import run_benchmark
    from msmlp.bench.timing import runner

    out, _ = exported_features
    opts = BenchOptions(
        onnx=out / "model.onnx", backend="onnxruntime", batches=[1, 2], size=(224, 280), iters=3
    )
    opts.progress = False
    report = run_benchmark(opts)
    assert report["input_size"] == [224, 280]
    assert [r["batch"] for r in report["results"]] == [1, 2] and all(
        r["p50_ms"] > 0 for r in report["results"]
    )
    with OnnxRuntimeBackend(out / "model.onnx") as backend:
        got = runner(backend)(np.zeros((1, 3, 224, 280), np.float32))
        assert set(got) == {"stage0", "stage1"}  # all outputs, not the first one alone
    with pytest.raises(InputError, match="outside the size profile"):
        run_benchmark(
            BenchOptions(onnx=out / "model.onnx", backend="onnxruntime", batches=[1], size=(294, 280))
        )


def test_int8_features_are_calibrated_at_the_deployed_size_and_verified_at_every_size(exported_features):
    out, result = exported_features
    assert result.artifacts["int8"] == out / "model.int8.onnx"
    report = json.loads((out / "verify_features.json").read_text())
    int8 = [r for r in report["runs"] if r["file"] == "model.int8.onnx"]
    assert int8[0]["key"] == "int8" and int8[0]["passed"]
    for run in int8:
        assert [s["size"] for s in run["sizes"]] == [[112, 112], [168, 168], [224, 280]]
        assert 0.99 <= run["worst_cosine"] < 0.99999  # really quantized, within the INT8 gate
        assert "calibrated at 168x168" in run["note"]
    manifest = json.loads((out / "model.json").read_text())
    entry = manifest["artifacts"]["model.int8.onnx"]
    assert entry["precision"] == "int8" and entry["info"]["calibration"]["size"] == [168, 168]
    calibrated_on = set(entry["info"]["calibration"]["files"])
    held_out = {p.name for p in msmlp.data.transforms.builtin_images()} - calibrated_on
    assert held_out and report["images"]  # verification used photos the calibration never saw
    with msmlp.load(out / "model.int8.onnx") as predictor:
        assert predictor.feature_layout.names == ("stage0", "stage1")
        maps = predictor.feature_maps(np.zeros((1, 3, 224, 280), np.float32))
        assert maps["stage1"].shape == (1, 64, 16, 20)


def test_tensorrt_profile_follows_the_size_profile(exported_features):
    """What `msmlp build` gives TensorRT for a dynamic-size feature graph (the build itself needs a GPU)."""
    from msmlp.artifacts import read_artifact
    from msmlp.exporters.engine import check_build_args, profile_shapes

    out, _ = exported_features
    info = read_artifact(out / "model.onnx")
    assert info.input.shape == (-1, 3, -1, -1)
    sample = check_build_args(out / "model.onnx", (1, 1, 8), info.input.shape[1:], 4.0, 3, (), True)
    assert profile_shapes((1, 1, 8), sample, info.features.profile) == [
        (1, 3, 112, 112),
        (1, 3, 168, 168),
        (8, 3, 224, 280),
    ]
    with pytest.raises(InputError, match="positive sizes"):
        check_build_args(out / "model.onnx", (1, 1, 8), info.input.shape[1:], 4.0, 3)
    with pytest.raises(InputError, match="no size profile"):
        profile_shapes((1, 1, 8), sample)


def test_compare_layers_works_on_a_feature_export(exported_features, cli):
    """The feature graph records the family layout per node scope, as the classifier export does."""
    out, _ = exported_features
    result = cli("msmlp", "compare-layers", "--candidate", str(out / "model.int8.onnx"), timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "layers_model_int8_onnxruntime.json").read_text())
    assert report["layers"] and any("stages.1" in (row.get("name") or "") for row in report["layers"])


def test_fp16_features_are_verified_at_every_size(exported_features):
    out, result = exported_features
    assert result.artifacts["fp16"] == out / "model.fp16.onnx"
    report = json.loads((out / "verify_features.json").read_text())
    (run,) = [r for r in report["runs"] if r["file"] == "model.fp16.onnx"]
    assert run["key"] == "fp16" and run["passed"] and [s["size"] for s in run["sizes"]][-1] == [224, 280]
    assert 0.999 <= run["worst_cosine"] < 1.0 - 1e-9  # really FP16, within the FP16 gate
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["artifacts"]["model.fp16.onnx"]["precision"] == "fp16"
    assert manifest["artifacts"]["model.fp16.onnx"]["info"]["nodes_fp32"] > 0  # the LayerNorms stay FP32
    from msmlp.artifacts import read_artifact

    assert read_artifact(out / "model.fp16.onnx").features.names == ("stage0", "stage1")


def test_feature_maps_come_in_chunks_the_backend_takes(exported_features):
    """run_in_batches serves logits and named outputs alike: 11 inputs in chunks of 4, the same maps as
    one call per input."""
    from msmlp.runtime.base import run_in_batches

    out, _ = exported_features
    x = np.random.default_rng(3).standard_normal((11, 3, 112, 140), dtype=np.float32)
    with OnnxRuntimeBackend(out / "model.onnx") as backend:
        got = run_in_batches(backend, x, 4, outputs=("stage0", "stage1"))
        for i in (0, 5, 10):
            one = backend.infer({"input": x[i : i + 1]}, outputs=("stage0", "stage1"))
            for name in ("stage0", "stage1"):
                assert got[name].shape[0] == 11
                np.testing.assert_allclose(got[name][i], one[name][0], rtol=1e-5, atol=1e-5)
    with msmlp.load(out / "model.onnx", backend="onnxruntime") as predictor:
        maps = predictor.feature_maps(x)
        assert {k: v.shape for k, v in maps.items()} == {
            "stage0": (11, 32, 16, 20),
            "stage1": (11, 64, 8, 10),
        }
        with pytest.raises(InputError, match="feature export"):
            predictor.logits(x)
