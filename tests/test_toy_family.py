"""A third model family, defined only here, works end to end through its own declaration.

Its names share nothing with MS-MLP or S2-MLPv2: blocks live in ``trunk`` (not ``blocks.N``), the
groups are ``tokens`` and ``channels`` (not ``mix``/``mlp``), the layer scale is ``ls`` (not
``gamma``) and its norm is an RMS norm written out op by op under ``rms_a``/``rms_b``/``final`` (no
``norm`` scope). Export, graph check, FP16 (its norms stay FP32), INT8, compare-layers, sensitivity
groups and synthetic weights all read its :class:`FamilySpec`; nothing outside this file changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto

import msmlp
from msmlp.data.transforms import augmented, load_image, preprocess
from msmlp.diagnose.compare import compare_layers
from msmlp.diagnose.graph import load_model, quantized_groups, select_taps
from msmlp.diagnose.runners import Target
from msmlp.diagnose.sensitivity import Evaluator, sensitivity
from msmlp.errors import InputError
from msmlp.exporters.check import check_graph
from msmlp.exporters.onnx import export_onnx
from msmlp.exporters.onnx_io import read_layout
from msmlp.exporters.precision import convert_fp16, written_out_norm_nodes
from msmlp.exporters.quantize import quantize_int8
from msmlp.models.family import BlockSpec, FamilySpec
from msmlp.models.registry import (
    DeployConfig,
    register_family,
    register_model,
    unregister_family,
    unregister_model,
)
from msmlp.models.weights import block_contributions, make_contributing
from msmlp.runtime.ort import OnnxRuntimeBackend
from msmlp.verify import compare, tolerance_for

NAME = "toyshift_micro"
DIM = 24


class RMS(nn.Module):
    """RMS norm over the channels, written out (Mul, ReduceMean, Add, Sqrt, Div, Mul)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * self.scale


class TokenShift(nn.Module):
    """Half the channels move one token down H (edge replicated), by Slice/Concat."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        moved = x[..., :half]
        moved = torch.cat((moved[:, :1], moved[:, :-1]), 1)
        return torch.cat((moved, x[..., half:]), -1)


class ToyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.rms_a = RMS(dim)
        self.shift = TokenShift()
        self.mixer = nn.Linear(dim, dim)
        self.rms_b = RMS(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ls = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.shift(self.rms_a(x)))
        return x + self.ls * self.ffn(self.rms_b(x))


class ToyNet(nn.Module):
    def __init__(self, dim: int = DIM, depth: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, kernel_size=8, stride=8)
        self.trunk = nn.ModuleList(ToyBlock(dim) for _ in range(depth))
        self.final = RMS(dim)
        self.classifier = nn.Linear(dim, num_classes)
        for m in self.modules():  # small init, as trained-from-scratch families start
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)
        for block in self.trunk:
            x = block(x)
        return self.classifier(self.final(x).mean((1, 2)))


TOY = FamilySpec(
    name="toyshift",
    blocks=(
        BlockSpec(
            ToyBlock,
            groups={"tokens": ("rms_a", "shift", "mixer"), "channels": ("rms_b", "ffn")},
            own="tokens",
            layer_scales=("ls",),
        ),
    ),
    fp32_norms=(RMS,),
    shift_forms=(),  # the builder takes no shift_form: one form only
    plugin_shifts=(),
    classifier="classifier",  # not "head": the class count is read from what the family declares
    input_stride=8,
)
CONFIG = DeployConfig(input_size=(3, 32, 32), num_classes=10, max_batch=8, family=TOY.name)


def toyshift_micro(**kw) -> ToyNet:
    return ToyNet(**kw)


@pytest.fixture(scope="module")
def toy():
    """The toy family and its model in the public registry for this module only."""
    register_family(TOY)
    register_model(CONFIG)(toyshift_micro)
    try:
        yield NAME
    finally:
        unregister_model(NAME)
        unregister_family(TOY.name)
    assert NAME not in msmlp.list_models()


def _views(paths: list[Path], count: int, seed: int) -> np.ndarray:
    return preprocess(augmented([load_image(p) for p in paths], count, seed=seed), CONFIG)


@pytest.fixture(scope="module")
def graphs(toy, tmp_path_factory, image_paths) -> dict:
    folder = tmp_path_factory.mktemp("toy")
    model = make_contributing(msmlp.create_model(toy), seed=0).eval()
    fp32 = export_onnx(model, folder / "model.onnx", config=msmlp.get_config(toy), batch=(1, 4, 8))
    int8, fp16 = folder / "model.int8.onnx", folder / "model.fp16.onnx"
    return {
        "model": model,
        "fp32": fp32,
        "int8": int8,
        "int8_info": quantize_int8(fp32, int8, _views(image_paths[:3], 16, seed=0)),
        "fp16": fp16,
        "fp16_info": convert_fp16(fp32, fp16),
        "held_out": _views(image_paths[3:], 8, seed=1),
    }


def test_synthetic_weights_make_every_declared_block_contribute(toy):
    model = msmlp.create_model(toy)
    x = torch.randn(2, 3, 32, 32)
    fresh = block_contributions(model, x)
    assert sorted(fresh) == ["trunk.0", "trunk.1"]
    make_contributing(model, seed=0)
    contributing = block_contributions(model, x)
    assert all(v > 0.05 for v in contributing.values()), contributing
    assert all(float(b.ls.detach().min()) >= 0.1 for b in model.trunk)  # the declared layer scale was redrawn


def test_export_checks_and_records_the_declared_groups(graphs):
    report = check_graph(graphs["fp32"])
    assert report.ok and report.op_counts.get("Sqrt", 0) == 5  # five RMS norms, written out
    layout = read_layout(onnx.load(str(graphs["fp32"])))
    assert layout.family == "toyshift"
    assert layout.group("/trunk.1/ffn/ffn.0/MatMul") == "trunk.1/channels"
    assert layout.group("/trunk.0/mixer/MatMul") == "trunk.0/tokens"
    assert layout.group("/stem/Conv") == "stem" and layout.group("/classifier/Gemm") == "classifier"
    taps = select_taps(load_model(graphs["fp32"]))
    assert {t.group for t in taps} >= {"trunk.0/tokens", "trunk.0/channels", "trunk.1/channels", "classifier"}


def test_fp16_keeps_the_declared_norms_fp32_and_meets_its_tolerance(graphs):
    info = graphs["fp16_info"]
    src = onnx.load(str(graphs["fp32"]))
    norms = written_out_norm_nodes(src)
    assert norms and all("/rms_" in n or n.startswith("/final/") for n in norms)
    assert info["written_out_norm_nodes_fp32"] == len(norms) and info["nodes_fp32"] == len(norms)
    converted = onnx.load(str(graphs["fp16"]))
    g = onnx.shape_inference.infer_shapes(converted).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.output]}
    by_name = {n.name: n for n in converted.graph.node}
    assert all(types[by_name[n].output[0]] == TensorProto.FLOAT for n in norms)
    assert info["nodes_fp16"] >= 8  # every Conv/MatMul/Gemm, and the rest outside the norms
    x = graphs["held_out"]
    with torch.inference_mode():
        ref = graphs["model"](torch.from_numpy(x)).numpy()
    with OnnxRuntimeBackend(graphs["fp16"]) as backend:
        stats = compare(ref, backend(x))
    assert tolerance_for("fp16").failures(stats) == [], stats


def test_int8_compare_layers_and_sensitivity_use_the_declared_groups(graphs):
    fp32, int8 = load_model(graphs["fp32"]), load_model(graphs["int8"])
    groups = quantized_groups(int8)
    assert {"trunk.0/tokens", "trunk.0/channels", "trunk.1/tokens", "trunk.1/channels"} <= set(groups)
    assert all(g.startswith(("trunk.", "stem", "classifier", "final")) for g in groups)
    report = compare_layers(graphs["fp32"], Target(graphs["int8"]), graphs["held_out"], batch=4)
    assert not report.unmatched and report.layers[-1].name == "logits"
    assert min(s.cosine for s in report.layers) > 0.9
    evaluator = Evaluator(fp32, graphs["held_out"], 4, 1)
    rows = sensitivity(fp32, int8, evaluator, evaluator.parity(int8))
    assert {r.group for r in rows} == set(groups)
    assert all(r.cosine >= 0.9 and r.gmacs > 0 for r in rows if r.group.endswith("/channels"))


def test_plugin_export_is_refused_for_a_family_without_plugin_shifts(graphs, toy, tmp_path):
    with pytest.raises(InputError, match=r"family 'toyshift' declares plugin shifts \[\].*shift='slice'"):
        export_onnx(graphs["model"], tmp_path / "p.onnx", config=msmlp.get_config(toy), shift="plugin")
    assert not list(tmp_path.iterdir())


def test_declarations_that_do_not_fit_fail_loudly(toy, tmp_path):
    with pytest.raises(InputError, match="model family 'nosuch' has no registered FamilySpec"):
        register_model(DeployConfig(family="nosuch"))(toyshift_micro)
    partial = FamilySpec(
        name="toyshift_partial",
        blocks=(BlockSpec(ToyBlock, groups={"tokens": ("rms_a", "mixer")}, own="tokens"),),
        fp32_norms=(RMS,),
        shift_forms=(),
        plugin_shifts=(),
        classifier="classifier",
    )
    model = msmlp.create_model(toy)
    with pytest.raises(InputError, match=r"child 'shift' of block trunk.0 \(ToyBlock\) is in none"):
        make_contributing(model, family=partial)
    with pytest.raises(ValueError, match="declares no block types"):
        FamilySpec(
            name="empty", blocks=(), fp32_norms=(), shift_forms=(), plugin_shifts=(), classifier="head"
        )
    with pytest.raises(InputError, match="carries no deploy_config"):
        block_contributions(ToyNet(), torch.zeros(1, 3, 32, 32))


def test_a_fine_tuned_checkpoint_keeps_the_head_its_family_declares(toy, tmp_path):
    """The class count is read from the declared classifier (``classifier``, not ``head``); the input
    size is checked against the declared stride."""
    from msmlp.models.variant import check_input_size
    from msmlp.models.weights import load_for_deploy

    tuned = ToyNet(num_classes=4)
    torch.save({"model": tuned.state_dict()}, tmp_path / "tuned.pth")
    model = load_for_deploy(toy, tmp_path / "tuned.pth")
    assert model.deploy_config.num_classes == 4 and model.classifier.out_features == 4
    torch.testing.assert_close(model.classifier.weight, tuned.classifier.weight)
    assert check_input_size(toy, (48, 40)) == (48, 40)
    with pytest.raises(InputError, match="multiple of its total stride 8"):
        check_input_size(toy, (36, 36))
