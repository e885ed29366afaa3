"""Compare a reduced-precision graph (or the same graph on another backend) with the FP32 graph layer by
layer, on real images: where error enters, and how it grows with depth.

Every linear layer, LayerNorm, Softmax and block boundary of the FP32 graph is watched; the candidate's
tensors are matched by name through the Q/DQ and Cast nodes converters insert. Per layer: cosine (worst
and mean sample), max/mean relative error (abs error / range of the reference tensor), the error it
adds over its inputs; then the first layer below --threshold and the growth of error with depth.
Writes layers_<candidate>.json per candidate and one layers.png (error against depth, one line each).

A candidate is PATH or PATH@BACKEND, BACKEND one of onnxruntime (default), openvino, openvino-bf16,
tensorrt or cuda (ONNX Runtime's execution providers, where present). An INT8 candidate is compared on
images it was not calibrated on. --sensitivity adds, for INT8 candidates, the held-out accuracy each
layer group gains when only it stays in high precision, next to its profiled share of the time.

examples:
  msmlp compare-layers --candidate out/s2mlpv2_small/model.int8.onnx
  msmlp compare-layers --candidate out/m/model.int8.onnx --candidate out/m/model.onnx@openvino-bf16
  msmlp compare-layers --candidate out/m/model.int8.onnx --sensitivity
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "layer-by-layer error of an FP16/INT8 graph or another backend against FP32, with a depth plot"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--candidate",
        action="append",
        required=True,
        metavar="PATH[@BACKEND]",
        help="graph to compare (repeatable; one line each in the plot)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        metavar="PATH",
        help="FP32 graph (default: model.onnx beside the first candidate)",
    )
    p.add_argument("--images", type=Path, metavar="DIR", help="images (default: the built-in sample photos)")
    p.add_argument(
        "--samples",
        type=int,
        default=16,
        metavar="N",
        help="inputs: the images, then augmented views (default 16)",
    )
    p.add_argument("--batch", type=int, default=8, metavar="N", help="inputs per run (default 8)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.999,
        metavar="COS",
        help="cosine that counts as crossed (default 0.999)",
    )
    p.add_argument(
        "--memory-mb",
        type=float,
        default=1024,
        metavar="MB",
        help="bound on the watched tensors held at once; fewer inputs per run when needed (default 1024)",
    )
    p.add_argument("--threads", type=int, metavar="N", help="intra-op threads (default: one per core)")
    p.add_argument(
        "--sensitivity", action="store_true", help="also rank INT8 layer groups by accuracy gained"
    )
    p.add_argument(
        "--rows", type=int, default=40, metavar="N", help="table rows per candidate (default 40; 0: all)"
    )
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="where the JSON and PNG go (default: beside the reference)"
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the augmented views (default 0)")


def run(args: argparse.Namespace) -> int:
    from msmlp.extras import require_extra

    require_extra("export", "msmlp compare-layers")
    from msmlp.commands import check_positive
    from msmlp.diagnose.compare import compare_layers
    from msmlp.diagnose.plot import plot_depth
    from msmlp.diagnose.runners import Target
    from msmlp.errors import InputError

    for value, option in ((args.samples, "--samples"), (args.batch, "--batch")):
        check_positive(value, option)
    if args.memory_mb <= 0:
        raise InputError(f"--memory-mb {args.memory_mb!r} must be a positive number of MB")
    targets = [Target.parse(c) for c in args.candidate]
    reference = args.reference or targets[0].path.parent / "model.onnx"
    if not reference.is_file():
        raise InputError(f"FP32 reference {str(reference)!r} does not exist; pass --reference PATH")
    out = Path(args.out or reference.parent)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for target in targets:
        inputs, note = _inputs(args, reference, target)
        report = compare_layers(
            reference,
            target,
            inputs,
            batch=args.batch,
            threshold=args.threshold,
            memory_mb=args.memory_mb,
            threads=args.threads,
        )
        path = out / f"layers_{target.path.stem.replace('.', '_')}_{target.backend}.json"
        data = {**report.to_dict(), "images_note": note}
        if args.sensitivity:
            data["sensitivity"] = _sensitivity(reference, target, inputs, args)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(report.table(rows=args.rows or None))
        if note:
            print(note)
        print(f"report: {path}\n")
        reports.append(report)
    png = plot_depth(reports, out / "layers.png")
    print(f"plot: {png}")
    return 0


def _inputs(args: argparse.Namespace, reference: Path, target: Any) -> tuple[Any, str]:
    """Preprocessed inputs for one candidate: held-out images for an INT8 graph, then augmented views."""
    from msmlp.artifacts import read_artifact
    from msmlp.data.transforms import augmented, load_image, preprocess
    from msmlp.errors import InputError
    from msmlp.models.registry import get_config
    from msmlp.pipeline.images import held_out_images, verification_images

    ref = read_artifact(reference)
    config = ref.config or (get_config(ref.model) if ref.model else None)
    if config is None:
        raise InputError(f"{reference} does not record its model; export it with msmlp-export")
    images = verification_images(args.images)
    cand = read_artifact(target.path)
    note = ""
    if cand.precision == "int8":
        images, note = held_out_images(cand, images)
    views = augmented([load_image(p) for p in images], max(args.samples, len(images)), seed=args.seed)
    return preprocess(views, config), note


def _sensitivity(reference: Path, target: Any, inputs: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from msmlp.diagnose.graph import load_model
    from msmlp.diagnose.sensitivity import Evaluator, sensitivity, sensitivity_table

    int8 = load_model(target.path)
    if not any(n.op_type == "DequantizeLinear" for n in int8.graph.node):
        print(f"sensitivity: {target.path.name} has no Q/DQ nodes; nothing to rank")
        return []
    fp32 = load_model(reference)
    ev = Evaluator(fp32, inputs, args.batch, args.threads)
    base = ev.parity(int8)
    rows = sensitivity(fp32, int8, ev, base)
    print(sensitivity_table(rows, base.cosine))
    return [r.to_dict() for r in rows]
