"""ONNX export: dynamic batch, fixed spatial size, opset, names, metadata, atomic save, cleanup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import msmlp
from msmlp.errors import ExportError, InputError
from msmlp.exporters import onnx as onnx_export
from msmlp.exporters.check import op_counts
from msmlp.exporters.onnx import check_batch, clean_graph, export_onnx, trace_to_onnx
from msmlp.plugins import lower_plugin_nodes
from msmlp.verify import compare

MICRO = msmlp.list_models(test=True)


def run_onnx(path_or_bytes: Path | bytes, x: np.ndarray) -> np.ndarray:
    source = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, contributing) -> dict[str, tuple[Path, torch.nn.Module]]:
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in MICRO:
        model = contributing(name)
        out[name] = (export_onnx(model, folder / f"{name}.onnx", config=msmlp.get_config(name)), model)
    return out


@pytest.mark.parametrize("name", MICRO)
def test_graph_has_named_dynamic_batch_and_fixed_spatial_size(exported, name):
    path, _ = exported[name]
    graph = onnx.load(path)
    config = msmlp.get_config(name)
    assert [i.name for i in graph.graph.input] == [config.input_name]
    assert [o.name for o in graph.graph.output] == [config.output_name]
    assert dims(graph.graph.input[0]) == ["batch", *config.input_size]
    assert dims(graph.graph.output[0]) == ["batch", config.num_classes]
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["msmlp.model"] == name and meta["msmlp.batch"] == "1,8,64"


@pytest.mark.parametrize("name", MICRO)
def test_exported_graph_matches_pytorch_at_several_batch_sizes(exported, name):
    path, model = exported[name]
    config = msmlp.get_config(name)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):
        x = np.random.default_rng(batch).standard_normal((batch, *config.input_size), dtype=np.float32)
        out = session.run(None, {"input": x})[0]
        stats = compare(torch_logits(model, x), out)
        assert out.shape == (batch, config.num_classes)
        assert stats.max_rel <= 1e-4 and stats.top1 == 1.0, stats


def test_layernorm_is_one_node_and_cleanup_leaves_no_shape_noise(exported):
    counts = op_counts(onnx.load(exported["s2mlpv2_micro"][0]))
    # 2 blocks x 2 stages x 2 norms + the final norm: each one LayerNormalization node
    assert counts["LayerNormalization"] == 9
    assert not {"Shape", "Gather", "Identity", "Constant", "ScatterND", "ReduceSum"} & set(counts)


def test_cleanup_keeps_outputs_and_drops_nodes(contributing):
    name = "s2mlpv2_micro"
    config = msmlp.get_config(name)
    raw = trace_to_onnx(contributing(name), config=config, opset=17)
    cleaned = clean_graph(onnx.ModelProto.FromString(raw.SerializeToString()))
    before, after = op_counts(raw), op_counts(cleaned)
    assert sum(after.values()) < sum(before.values()) / 2
    assert before["Shape"] > 0 and after["Shape"] == 0
    x = np.random.default_rng(0).standard_normal((4, *config.input_size), dtype=np.float32)
    np.testing.assert_allclose(
        run_onnx(cleaned.SerializeToString(), x), run_onnx(raw.SerializeToString(), x), atol=1e-5
    )


def test_opset_20_exports_and_runs(contributing, tmp_path):
    config = msmlp.get_config("msmlp_micro")
    path = export_onnx(contributing("msmlp_micro"), tmp_path / "m.onnx", config=config, opset=20)
    assert [o.version for o in onnx.load(path).opset_import if o.domain == ""] == [20]
    x = np.zeros((2, *config.input_size), np.float32)
    assert run_onnx(path, x).shape == (2, 1000)


@pytest.mark.parametrize("opset", [13, 21, "17"])
def test_unsupported_opset_is_refused(contributing, tmp_path, opset):
    with pytest.raises(InputError, match=r"opset .* is not supported; use 17\.\.20"):
        export_onnx(
            contributing("msmlp_micro"),
            tmp_path / "m.onnx",
            config=msmlp.get_config("msmlp_micro"),
            opset=opset,
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("batch", [(0, 1, 8), (8, 1, 64), (1, 8), (1, 2.0, 4)])
def test_bad_batch_profile_is_quoted(batch):
    with pytest.raises(InputError, match="MIN,OPT,MAX"):
        check_batch(batch)


def test_failed_export_leaves_nothing_behind(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("this model cannot be traced")

    target = tmp_path / "model.onnx"
    with pytest.raises(
        ExportError, match="torch.onnx.export failed: RuntimeError: this model cannot be traced"
    ):
        export_onnx(Broken(), target, config=msmlp.get_config("msmlp_micro"))
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic_over_an_existing_file(exported, tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous artefact")
    graph = onnx.load(exported["msmlp_micro"][0])

    def disk_full(self: Path, data: bytes) -> int:
        self.open("wb").write(data[:100])  # a partial write, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="disk full"):
        onnx_export.save_onnx(graph, target)
    assert target.read_bytes() == b"previous artefact"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_graph_over_the_protobuf_limit_gets_one_data_file(exported, tmp_path, monkeypatch):
    path, model = exported["msmlp_micro"]
    monkeypatch.setattr(onnx_export, "PROTOBUF_LIMIT", 1000)
    target = onnx_export.save_onnx(onnx.load(path), tmp_path / "big.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    assert compare(torch_logits(model, x), run_onnx(target, x)).max_rel <= 1e-4


def test_split_attention_exports_without_a_stacked_reduction(exported):
    """The model's deployment form adds the branches where they are: no stack (Concat of Unsqueeze)
    and no ReduceSum over a branch axis reach the graph."""
    graph = onnx.load(exported["s2mlpv2_micro"][0])
    assert "ReduceSum" not in op_counts(graph)
    producers = {o: n for n in graph.graph.node for o in n.output}
    for node in graph.graph.node:
        if node.op_type == "Concat":
            assert not any(producers.get(i) and producers[i].op_type == "Unsqueeze" for i in node.input)


def test_msmlp_exports_channels_first_without_transposes(exported, contributing, tmp_path):
    """MS-MLP's deployment form keeps N,C,H,W throughout: no Transpose, each block's MLP is two 1x1
    convolutions, its LayerNorm written out over C; the reference form (official code) has a
    Transpose pair and one LayerNormalization per block and patch embed, and the same logits."""
    graph = onnx.load(exported["msmlp_micro"][0])
    counts = op_counts(graph)
    blocks, embeds = 4, 4  # msmlp_micro: one block per stage, stem + 3 downsamples
    assert "Transpose" not in counts
    assert counts["LayerNormalization"] == 1  # only the head's, on pooled vectors
    inits = {t.name: t for t in graph.graph.initializer}
    pointwise = [
        n
        for n in graph.graph.node
        if n.op_type == "Conv" and n.input[1] in inits and list(inits[n.input[1]].dims[2:]) == [1, 1]
    ]
    assert len(pointwise) >= 2 * blocks
    means = [n for n in graph.graph.node if n.op_type == "ReduceMean" and "/norm/" in n.name]
    assert len(means) == 2 * (blocks + embeds)  # mean and variance of each written-out LayerNorm

    reference = contributing("msmlp_micro", shift_form="reference")
    ref_path = export_onnx(reference, tmp_path / "ref.onnx", config=msmlp.get_config("msmlp_micro"))
    ref_counts = op_counts(onnx.load(ref_path))
    assert ref_counts["Transpose"] == 2 * (blocks + embeds)
    assert ref_counts["LayerNormalization"] == blocks + embeds + 1
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    stats = compare(run_onnx(ref_path, x), run_onnx(exported["msmlp_micro"][0], x))
    assert stats.cosine > 1 - 1e-9 and stats.max_rel < 1e-5, stats


PLUGIN_NODES = {"msmlp_micro": ("GroupRoll", 8), "s2mlpv2_micro": ("EdgeShift", 8)}


@pytest.mark.parametrize("name", MICRO)
def test_plugin_export_writes_one_plugin_node_per_shift(contributing, tmp_path, name):
    config = msmlp.get_config(name)
    graph = onnx.load(export_onnx(contributing(name), tmp_path / "p.onnx", config=config, shift="plugin"))
    op, count = PLUGIN_NODES[name]
    nodes = [n for n in graph.graph.node if n.domain == "msmlp"]
    assert len(nodes) == count and {n.op_type for n in nodes} == {op}
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["plugin_namespace"] == b"msmlp" and attrs["aot"] == 1
    if op == "GroupRoll":
        assert attrs["chunks"] == [4] * 5 and attrs["shifts"] == [-2, -1, 0, 1, 2] and attrs["axis"] in (2, 3)
    else:
        assert attrs["pattern"] in (1, 2)
    assert {(o.domain, o.version) for o in graph.opset_import} == {("", 17), ("msmlp", 1)}
    assert {p.key: p.value for p in graph.metadata_props}["msmlp.shift"] == "plugin"
    assert not {"Slice", "ScatterND"} & set(op_counts(graph)) or op == "EdgeShift"


@pytest.mark.parametrize("name", MICRO)
def test_lowered_plugin_graph_equals_the_slice_graph(contributing, tmp_path, exported, image_paths, name):
    """Plugin nodes lowered back to Slice/Concat give the slice export's outputs exactly (for S2-MLPv2
    its op counts but Slice; MS-MLP's lowering rolls the whole tensor, the slice form group by group)."""
    config = msmlp.get_config(name)
    plugin = onnx.load(export_onnx(contributing(name), tmp_path / "p.onnx", config=config, shift="plugin"))
    lowered = lower_plugin_nodes(plugin)
    sliced = onnx.load(exported[name][0])
    assert not any(n.domain == "msmlp" for n in lowered.graph.node)
    counts = op_counts(lowered)
    del counts["Constant"]
    if name.startswith("s2mlpv2"):  # the export's channel and row Slices are merged into two-axis ones
        want = op_counts(sliced)
        assert counts["Slice"] >= want["Slice"] > 0
        assert {k: v for k, v in counts.items() if k != "Slice"} == {
            k: v for k, v in want.items() if k != "Slice"
        }
    from PIL import Image

    size = config.input_size[1:]
    photos = [np.asarray(Image.open(p).convert("RGB").resize(size), np.float32) / 255 for p in image_paths]
    x = np.stack(photos).transpose(0, 3, 1, 2).copy()
    x = (x - 0.45) / 0.25
    for batch in (x[:1], x):
        np.testing.assert_array_equal(
            run_onnx(lowered.SerializeToString(), batch), run_onnx(exported[name][0], batch)
        )


def test_unknown_shift_export_is_refused(contributing, tmp_path):
    with pytest.raises(InputError, match="shift export 'trt' is unknown; use 'slice'"):
        export_onnx(
            contributing("msmlp_micro"),
            tmp_path / "m.onnx",
            config=msmlp.get_config("msmlp_micro"),
            shift="trt",
        )
    assert not list(tmp_path.iterdir())
