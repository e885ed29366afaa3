"""Triton model repositories, checked with Triton's own ModelConfig schema from tritonclient."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from google.protobuf import text_format

import msmlp
from msmlp.artifacts import write_plan_sidecar
from msmlp.cli import main
from msmlp.errors import InputError, MsmlpError
from msmlp.exporters.onnx import export_onnx
from msmlp.exporters.triton import model_config_schema, validate_repository, write_repository

MODEL = "s2mlpv2_micro"
PROFILE = (1, 4, 16)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, contributing) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(contributing(MODEL), path, config=msmlp.get_config(MODEL), batch=PROFILE)


def parse(model_dir: Path):
    """Parse config.pbtxt independently of the writer: Triton's schema, strict text format."""
    config = model_config_schema().ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(), config)
    return config


def test_onnx_repository_follows_triton_schema_and_profile(exported, tmp_path):
    model_dir = write_repository(
        tmp_path / "repo", onnx=exported, preferred=[4, 8], queue_delay_us=500, kind="cpu"
    )
    config = parse(model_dir)
    mc = model_config_schema()
    assert model_dir == tmp_path / "repo" / MODEL and config.name == MODEL
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == PROFILE[2]
    assert [(t.name, list(t.dims), t.data_type) for t in config.input] == [
        ("input", [3, 112, 112], mc.TYPE_FP32)
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("logits", [1000])]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, mc.ModelInstanceGroup.KIND_CPU)]
    assert (model_dir / "1" / "model.onnx").read_bytes() == exported.read_bytes()
    labels = (model_dir / config.output[0].label_filename).read_text().splitlines()
    assert len(labels) == 1000 and labels[0] == "tench"
    assert validate_repository(tmp_path / "repo") == config
    assert not list(model_dir.rglob(".*")), "no temporary files left behind"


def test_defaults_take_the_profile(exported, tmp_path):
    config = parse(write_repository(tmp_path, onnx=exported, version=3))
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.instance_group[0].kind == model_config_schema().ModelInstanceGroup.KIND_GPU
    assert (tmp_path / MODEL / "3" / "model.onnx").is_file()


def test_max_batch_above_the_profile_is_refused_before_writing(exported, tmp_path):
    with pytest.raises(InputError, match=r"--max-batch 32 exceeds the batch profile max 16"):
        write_repository(tmp_path / "repo", onnx=exported, max_batch=32)
    with pytest.raises(InputError, match=r"preferred batch sizes \[32\] are outside 1..max_batch_size \(8\)"):
        write_repository(tmp_path / "repo", onnx=exported, max_batch=8, preferred=[4, 32])
    assert not (tmp_path / "repo").exists()
    config = parse(write_repository(tmp_path / "repo", onnx=exported, max_batch=8))
    assert config.max_batch_size == 8  # below the profile: allowed


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("max_batch_size: 16", "max_batch_size: 64"), "exceeds the batch profile max 16"),
        (lambda t: t.replace("dims: 112", "dims: 224", 1), "do not match the model's"),
        (
            lambda t: t.replace("preferred_batch_size: 16", "preferred_batch_size: 32"),
            "outside 1..max_batch_size",
        ),
        (lambda t: t + "\nmax_batch_sizes: 4\n", "does not follow Triton's ModelConfig schema"),
        (
            lambda t: t.replace('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"'),
            "has no model.plan",
        ),
    ],
)
def test_validation_refuses_a_config_that_disagrees(exported, tmp_path, edit, message):
    model_dir = write_repository(tmp_path, onnx=exported)
    config_file = model_dir / "config.pbtxt"
    config_file.write_text(edit(config_file.read_text()))
    with pytest.raises(InputError, match=message):
        validate_repository(model_dir)


def test_plan_uses_its_sidecar_profile(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"opaque engine bytes")  # Triton loads it; here only the metadata is read
    sidecar = {
        "model": "s2mlpv2_small",
        "profile": {
            "input": "input",
            "min": [1, 3, 224, 224],
            "opt": [8, 3, 224, 224],
            "max": [32, 3, 224, 224],
        },
    }
    write_plan_sidecar(plan, sidecar)
    model_dir = write_repository(tmp_path / "repo", engine=plan)
    config = parse(model_dir)
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    assert list(config.input[0].dims) == [3, 224, 224] and list(config.output[0].dims) == [1000]
    assert (model_dir / "1" / "model.plan.json").is_file()
    with pytest.raises(InputError, match="runs only on a GPU"):
        write_repository(tmp_path / "repo2", engine=plan, kind="cpu")
    sidecar["profile"]["min"] = [2, 3, 224, 224]
    write_plan_sidecar(plan, sidecar)
    with pytest.raises(InputError, match="starts at 2, but Triton sends batches from 1"):
        write_repository(tmp_path / "repo3", engine=plan)
    Path(f"{plan}.json").unlink()
    with pytest.raises(MsmlpError, match="no metadata file model.plan.json"):
        write_repository(tmp_path / "repo4", engine=plan)


@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter's deprecation and tracer notes
def test_fixed_batch_graph_gets_no_batching(tmp_path, contributing):
    path = tmp_path / "fixed.onnx"
    model = contributing("msmlp_micro")
    torch.onnx.export(
        model,
        torch.randn(1, 3, 64, 64),
        path,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
    )
    config = parse(write_repository(tmp_path / "repo", onnx=path))
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 3, 64, 64]
    with pytest.raises(InputError, match="fixed batch of 1, so Triton cannot batch it"):
        write_repository(tmp_path / "repo2", onnx=path, max_batch=8)


def test_external_weights_are_copied(exported, tmp_path):
    graph = onnx.load(str(exported))
    split = tmp_path / "split" / "model.onnx"
    split.parent.mkdir()
    onnx.save_model(
        graph, str(split), save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    model_dir = write_repository(tmp_path / "repo", onnx=split)
    assert (model_dir / "1" / "model.onnx.data").read_bytes() == (
        split.parent / "model.onnx.data"
    ).read_bytes()
    (model_dir / "1" / "model.onnx.data").unlink()
    with pytest.raises(InputError, match="which do not exist"):
        validate_repository(model_dir)


def test_cli(exported, tmp_path, capsys):
    assert main(["triton-repo", "--onnx", str(exported), "--repo", str(tmp_path), "--preferred", "2,4"]) == 0
    assert "max_batch_size: 16" in capsys.readouterr().out
    assert main(["triton-repo", "--onnx", str(exported), "--repo", str(tmp_path), "--max-batch", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exceeds the batch profile max 16" in err
    assert main(["triton-repo", "--onnx", str(exported), "--repo", str(tmp_path), "--preferred", "4,x"]) == 2
    assert "--preferred '4,x' must be positive integers" in capsys.readouterr().err


def test_openvino_backend_reads_the_onnx_file_on_cpu(exported, tmp_path, capsys):
    model_dir = write_repository(tmp_path / "repo", onnx=exported, kind="cpu", target="openvino")
    config = parse(model_dir)
    mc = model_config_schema()
    assert (config.platform, config.backend, config.default_model_filename) == ("", "openvino", "model.onnx")
    assert (
        config.max_batch_size == PROFILE[2]
        and config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    )
    assert (model_dir / "1" / "model.onnx").read_bytes() == exported.read_bytes()
    with pytest.raises(InputError, match="openvino backend runs on cpu only; use --kind cpu"):
        write_repository(tmp_path / "repo2", onnx=exported, kind="gpu", target="openvino")
    with pytest.raises(InputError, match="tensorrt backend cannot run an ONNX graph"):
        write_repository(tmp_path / "repo2", onnx=exported, target="tensorrt")
    for spelling in (["--platform", "openvino"], ["--kind", "cpu", "--backend", "openvino"]):
        repo = tmp_path / spelling[-1] / spelling[0].strip("-")
        assert main(["triton-repo", "--onnx", str(exported), "--repo", str(repo), *spelling]) == 0
        assert 'backend: "openvino"' in capsys.readouterr().out
        assert parse(repo / MODEL) == config


def test_repo_naming_a_file_is_one_clear_line(exported, tmp_path, capsys):
    file = tmp_path / "repo.txt"
    file.write_text("not a folder")
    for repo in (file, file / "sub"):
        assert main(["triton-repo", "--onnx", str(exported), "--repo", str(repo)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{str(file)!r} is a file, not a folder" in err
