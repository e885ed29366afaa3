"""Verify an exported graph (or engine) against the PyTorch FP32 model on real images.

Reports max/mean absolute and relative error (relative = abs error / range of the reference logits),
cosine similarity and top-1/top-5 agreement at each batch size, writes a JSON report, and exits 3
when a tolerance of the precision is broken (fp32: rel <= 1e-4, cosine >= 0.99999, top-1 100%;
fp16 and bf16: cosine >= 0.9995, top-1 >= 99%; int8: cosine >= 0.99, top-1 >= 95%).

The model and its weights come from model.json beside the file (synthetic weights with their seed, or
the checkpoint, checked by sha256); --model and --weights override them. An INT8 graph is verified
only on images it was not calibrated on.

examples:
  msmlp verify --onnx out/s2mlpv2_small/model.fp16.onnx
  msmlp verify --onnx out/s2mlpv2_small/model.onnx --backend openvino --precision bf16
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from msmlp.commands import parse_int_list
from msmlp.commands.args import add_backend_args

HELP = "compare an exported graph or engine with PyTorch FP32 on real images (exit 3 on a broken tolerance)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--onnx", type=Path, metavar="PATH", help="ONNX file to verify")
    src.add_argument("--engine", type=Path, metavar="PLAN", help="TensorRT plan to verify")
    p.add_argument("--model", metavar="NAME", help="registered model (default: as recorded in model.json)")
    p.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help="checkpoint for the reference (default: as in model.json)",
    )
    p.add_argument("--images", type=Path, metavar="DIR", help="images (default: the built-in sample photos)")
    p.add_argument(
        "--tolerance",
        choices=("fp32", "fp16", "bf16", "int8"),
        help="tolerances to apply (default: the precision the backend runs at)",
    )
    p.add_argument("--batch-sizes", default="1,8", metavar="B,B", help="batch sizes to run (default 1,8)")
    p.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        help="JSON report (default: verify_<precision>.json beside the file)",
    )
    add_backend_args(p)


def run(args: argparse.Namespace) -> int:
    from msmlp.extras import require_extra

    # The reference is PyTorch FP32 recomputed on the images: model.json records summaries, not logits.
    require_extra("export", "msmlp verify (its reference is PyTorch FP32)", modules=("torch",))
    from msmlp.commands.args import open_source
    from msmlp.pipeline.images import held_out_images, verification_images
    from msmlp.runtime.torch_backend import TorchBackend
    from msmlp.verify import verify, write_report

    sizes = parse_int_list(args.batch_sizes, "--batch-sizes")
    path = args.onnx or args.engine
    source = argparse.Namespace(**{**vars(args), "model": None, "weights": None})
    candidate = open_source(source).load()
    artifact = candidate.info.artifact
    model_name = args.model or candidate.info.model
    if model_name is None:
        from msmlp.errors import InputError

        raise InputError(f"{path} does not record which model it was exported from; pass --model NAME")
    from msmlp.models.registry import get_config

    # the export's own head, input size and labels where it records them for this model
    recorded = artifact.config if artifact is not None and artifact.model == model_name else None
    candidate.check_model(model_name, recorded or get_config(model_name))  # before the reference is built
    model = reference_model(model_name, args.weights, artifact, recorded)
    config = model.deploy_config
    precision = args.tolerance or candidate.precision
    images = verification_images(args.images)
    images, note = held_out_images(artifact, images) if precision == "int8" and artifact else (images, "")
    report_path = args.report or default_report(path, precision, candidate.name)
    with TorchBackend(model, config=config) as reference, candidate:
        report = verify(
            reference, candidate, images, precision, sizes, config=config, note=note, raise_on_failure=False
        )
    write_report(report, report_path)
    print(report.table())
    print(f"report: {report_path}")
    report.raise_if_failed(report_path)
    return 0


def default_report(path: Path, precision: str, backend: str) -> Path:
    """``verify_<precision>.json`` for the export's own file of that precision on its export backend;
    ``verify_<stem>_<backend>_<precision>.json`` otherwise, so the export's report is not overwritten."""
    from msmlp.artifacts import ONNX_FILES

    if ONNX_FILES.get(precision) == path.name and backend == "onnxruntime":
        return path.parent / f"verify_{precision}.json"
    return path.parent / f"verify_{path.stem.replace('.', '_')}_{backend}_{precision}.json"


def reference_model(name: str, weights: Path | None, artifact: Any, config: Any = None) -> Any:
    """The PyTorch model with the weights the export used: --weights, else what model.json records;
    built with ``config`` (the artefact's class count and input size) when given."""
    from msmlp.errors import InputError
    from msmlp.fileio import file_sha256
    from msmlp.log import logger
    from msmlp.models.weights import load_for_deploy

    if weights is not None:
        return load_for_deploy(name, weights, config=config)
    recorded = dict(artifact.weights) if artifact is not None else {}
    if recorded.get("source") == "checkpoint":
        path = Path(str(recorded.get("path", "")))
        if not path.is_file() or file_sha256(path) != recorded.get("sha256"):
            raise InputError(
                f"the graph was exported from checkpoint {str(path)!r}, which is no longer there (or changed); "
                "pass it with --weights"
            )
        return load_for_deploy(name, path, config=config)
    if not recorded:
        logger.info(
            "no model.json beside the file: assuming synthetic weights with seed 0 (pass --weights otherwise)"
        )
    return load_for_deploy(name, None, int(recorded.get("seed", 0)), quiet=True, config=config)
