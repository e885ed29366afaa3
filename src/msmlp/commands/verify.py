"""Verify an ONNX graph against the PyTorch FP32 model on real images.

Reports max/mean absolute and relative error (relative = abs error / range of the reference logits),
cosine similarity and top-1/top-5 agreement at each batch size, writes a JSON report, and exits 3
when a tolerance of the precision is broken (fp32: rel <= 1e-4, cosine >= 0.99999, top-1 100%;
fp16: cosine >= 0.9995, top-1 >= 99%; int8: cosine >= 0.99, top-1 >= 95%).

Without --weights the reference gets the weights the export used, as recorded in model.json
(synthetic weights with their seed, or the checkpoint file, checked by sha256).

example:
  msmlp verify --model s2mlpv2_small --onnx out/s2mlpv2_small/model.fp16.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from msmlp.commands import parse_int_list

HELP = "compare an ONNX graph with PyTorch FP32 on real images (exit 3 on a broken tolerance)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, metavar="NAME", help="registered model the graph was exported from"
    )
    p.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help="checkpoint for the reference (default: as in model.json)",
    )
    p.add_argument("--onnx", required=True, type=Path, metavar="PATH", help="ONNX file to verify")
    p.add_argument("--images", type=Path, metavar="DIR", help="images (default: the built-in sample photos)")
    p.add_argument(
        "--precision", metavar="fp32|fp16|int8", help="tolerances to apply (default: the graph's precision)"
    )
    p.add_argument("--batch-sizes", default="1,8", metavar="B,B", help="batch sizes to run (default 1,8)")
    p.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        help="JSON report (default: verify_<precision>.json beside the ONNX)",
    )
    p.add_argument(
        "--threads", type=int, metavar="N", help="ONNX Runtime intra-op threads (default: one per core)"
    )


def run(args: argparse.Namespace) -> int:
    from msmlp.models.registry import get_config
    from msmlp.runtime.ort import OnnxRuntimeBackend
    from msmlp.data.transforms import builtin_images, list_images
    from msmlp.runtime.torch_backend import TorchBackend
    from msmlp.verify import tolerance_for, verify

    config = get_config(args.model)
    sizes = parse_int_list(args.batch_sizes, "--batch-sizes")
    if args.precision is not None:
        tolerance_for(args.precision)
    candidate = OnnxRuntimeBackend(args.onnx, threads=args.threads).load()
    candidate.check_model(args.model, config)
    precision = args.precision or candidate.precision
    images = list_images(args.images) if args.images else builtin_images()
    images, note = (
        held_out(images, candidate.metadata, args.onnx.name) if precision == "int8" else (images, "")
    )
    model = reference_model(args.model, args.weights, candidate.metadata)
    report_path = args.report or default_report(args.onnx, precision)
    with TorchBackend(model, config=config) as reference, candidate:
        report = verify(
            reference, candidate, images, precision, sizes, config=config, note=note, raise_on_failure=False
        )
    from msmlp.verify import write_report

    write_report(report, report_path)
    print(report.table())
    print(f"report: {report_path}")
    report.raise_if_failed(report_path)
    return 0


def default_report(onnx: Path, precision: str) -> Path:
    """``verify_<precision>.json`` for the export's own file of that precision (as msmlp-export writes
    it); ``verify_<stem>_<precision>.json`` otherwise, so the export's report is not overwritten."""
    from msmlp.export.pipeline import FILES

    if FILES.get(precision) == onnx.name:
        return onnx.parent / f"verify_{precision}.json"
    return onnx.parent / f"verify_{onnx.stem.replace('.', '_')}_{precision}.json"


def reference_model(name: str, weights: Path | None, metadata: dict[str, Any]) -> Any:
    """The PyTorch model with the weights the export used: --weights, else what model.json records."""
    from msmlp.errors import InputError
    from msmlp.log import logger
    from msmlp.models.registry import create_model
    from msmlp.models.weights import make_contributing
    from msmlp.runtime.ort import file_sha256

    if weights is not None:
        return create_model(name, pretrained=str(weights))
    recorded = metadata.get("weights") or {}
    if recorded.get("source") == "checkpoint":
        path = Path(str(recorded.get("path", "")))
        if not path.is_file() or file_sha256(path) != recorded.get("sha256"):
            raise InputError(
                f"the graph was exported from checkpoint {str(path)!r}, which is no longer there (or changed); "
                "pass it with --weights"
            )
        return create_model(name, pretrained=str(path))
    seed = int(recorded.get("seed", 0))
    if not recorded:
        logger.info(
            "no model.json beside the graph: assuming synthetic weights with seed 0 (pass --weights otherwise)"
        )
    return make_contributing(create_model(name), seed=seed)


def held_out(images: list[Path], metadata: dict[str, Any], onnx_name: str) -> tuple[list[Path], str]:
    """Drop images the INT8 graph was calibrated on (by content), as recorded in model.json."""
    from msmlp.errors import InputError
    from msmlp.runtime.ort import file_sha256

    entry = metadata.get("artifacts", {}).get(onnx_name, {})
    used = set(entry.get("info", {}).get("calibration", {}).get("sha256", []))
    if not used:
        return images, "calibration images unknown (no model.json entry): held-out status not checked"
    kept = [p for p in images if file_sha256(p) not in used]
    if not kept:
        raise InputError(
            "every verification image was used to calibrate this INT8 graph; pass --images DIR with others"
        )
    return kept, f"INT8 held-out: {len(images) - len(kept)} calibration image(s) left out"
