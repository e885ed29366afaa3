"""Build a TensorRT engine (plan) from an exported ONNX graph.

The network is strongly typed: FP16 and INT8 come from the graph itself (model.fp16.onnx,
model.int8.onnx from msmlp-export), not from builder flags. The plan is written atomically with a
metadata file <plan>.json (model, precision, TensorRT version, GPU, profile, hashes) that the runtime
checks before it deserializes anything. Needs TensorRT and an NVIDIA GPU.

examples:
  msmlp build out/s2mlpv2_small/model.fp16.onnx
  msmlp build model.int8.onnx --out int8.plan --batch 1,16,64 --timing-cache trt.cache
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from msmlp.commands import parse_batch
from msmlp.errors import InputError

HELP = "build a TensorRT engine from an ONNX graph (needs TensorRT and a GPU)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "onnx", type=Path, metavar="ONNX", help="exported graph (model.onnx / .fp16.onnx / .int8.onnx)"
    )
    p.add_argument(
        "--out", type=Path, default=None, metavar="PLAN", help="plan file (default: ONNX with .plan)"
    )
    p.add_argument(
        "--batch",
        default=None,
        metavar="MIN,OPT,MAX",
        help="optimisation profile for the batch axis (default: the graph's export profile, else 1,8,64)",
    )
    p.add_argument("--workspace", type=float, default=4.0, metavar="GIB", help="builder workspace limit (4)")
    p.add_argument(
        "--opt-level", type=int, default=3, metavar="N", help="builder optimisation level 0..5 (3)"
    )
    p.add_argument(
        "--timing-cache", type=Path, default=None, metavar="PATH", help="load and save tactic timings"
    )
    p.add_argument(
        "--plugin", type=Path, action="append", default=[], metavar="LIB", help="plugin library (repeatable)"
    )
    p.add_argument(
        "--shift-plugins",
        action="store_true",
        help="register msmlp's TensorRT shift plugins first (graphs exported with plugin shift nodes)",
    )
    p.add_argument("--json", action="store_true", help="print the plan metadata as JSON")


def run(args: argparse.Namespace) -> int:
    from msmlp.artifacts import read_artifact
    from msmlp.exporters.engine import DEFAULT_BATCH, build_engine, check_build_args

    info = read_artifact(args.onnx)
    if info.kind != "onnx":
        raise InputError(f"{str(args.onnx)!r} is a {info.kind}, not an ONNX graph; build from model.onnx")
    batch = parse_batch(args.batch) if args.batch else (info.batch or DEFAULT_BATCH)
    out = args.out or args.onnx.with_suffix(".plan")
    shape = info.input.shape[1:]
    dynamic = info.features is not None and info.features.dynamic  # H, W from the size profile
    check_build_args(args.onnx, batch, shape, args.workspace, args.opt_level, args.plugin, dynamic)
    meta = build_engine(
        args.onnx,
        out,
        batch=batch,
        input_name=info.input.name,
        input_shape=shape,
        workspace_gib=args.workspace,
        opt_level=args.opt_level,
        timing_cache=args.timing_cache,
        plugins=args.plugin,
        shift_plugins=args.shift_plugins,
        metadata={
            "model": info.model,
            "precision": info.precision,
            "config": info.config.to_dict() if info.config else None,
        },
    )
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        gpu = meta["gpu"]
        print(
            f"{out}: {meta['precision']} engine for {meta['model'] or 'an unnamed model'}, batch "
            f"{','.join(map(str, batch))}, TensorRT {meta['tensorrt_version']} on {gpu['name']} "
            f"(sm {gpu['compute_capability']}), built in {meta['build_seconds']} s; metadata in {out.name}.json"
        )
    return 0
