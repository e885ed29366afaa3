"""Export a registered model to ONNX, check it for TensorRT / ONNX Runtime, and verify it against PyTorch.

Writes model.onnx (weights inline, dynamic batch axis), model.json (config, I/O, batch profile, hashes,
versions, verification summary) and verify_<precision>.json in --out (default out/<model>). With
--fp16 / --int8 also model.fp16.onnx / model.int8.onnx, each verified against PyTorch FP32 (INT8 on
held-out images). A TensorRT engine is built last where TensorRT is installed.

Without --weights the model gets synthetic weights (seed 0) in which every block contributes: the
graph and the parity checks are real, the predictions are not.

examples:
  msmlp-export --model s2mlpv2_small
  msmlp-export --model msmlp_tiny --weights msmlp_tiny_ckpt_epoch299.pth --fp16 --int8
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a model to ONNX (+FP16/INT8, engine), check it and verify it against PyTorch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, metavar="NAME", help="registered model name (`msmlp models` lists them)"
    )
    p.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help="checkpoint file (state dict, or under 'model'/'state_dict')",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: out/<model>)")
    p.add_argument(
        "--batch",
        metavar="MIN,OPT,MAX",
        help="batch profile for the graph metadata and the engine (default 1,8,64)",
    )
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset, 17..20 (default 17)")
    p.add_argument(
        "--images", type=Path, metavar="DIR", help="verification images (default: the built-in sample photos)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed for synthetic weights and augmented views (default 0)",
    )
    p.add_argument(
        "--shift",
        choices=("slice", "plugin"),
        default="slice",
        help="how shifts are written: slice (Slice/Concat, runs everywhere; default) or plugin (one TensorRT "
        "plugin node per shift, for GPU engines; verified here through its Slice/Concat lowering)",
    )
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="re-export model.onnx even when an identical verified one is already in --out",
    )
    q = p.add_argument_group("reduced precision")
    bf = q.add_mutually_exclusive_group()
    bf.add_argument(
        "--bf16",
        dest="bf16",
        action="store_true",
        default=None,
        help="require BF16 verification on OpenVINO (default: done where OpenVINO and the CPU support it)",
    )
    bf.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the BF16 verification")
    q.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (ModelOpt AutoCast)")
    q.add_argument(
        "--int8", action="store_true", help="also write model.int8.onnx (ModelOpt PTQ, explicit Q/DQ)"
    )
    q.add_argument(
        "--calib", type=Path, metavar="DIR", help="calibration images (default: the built-in sample photos)"
    )
    q.add_argument("--calib-size", type=int, default=32, metavar="N", help="calibration inputs (default 32)")
    q.add_argument(
        "--calib-method", default="max", metavar="max|entropy", help="INT8 calibration method (default max)"
    )
    q.add_argument(
        "--int8-target",
        choices=("cpu", "tensorrt"),
        help="where the INT8 graph runs: cpu places Q/DQ only on MatMul/Gemm/Conv inputs (fastest on "
        "OpenVINO and ONNX Runtime); tensorrt places them as ModelOpt does for TensorRT (default: tensorrt "
        "when an engine is built here, else cpu)",
    )
    q.add_argument(
        "--keep-fp32",
        action="append",
        default=[],
        metavar="NAME_OR_OPTYPE",
        help="node name or op type to keep in FP32 (repeatable)",
    )
    q.add_argument(
        "--target-cosine",
        type=float,
        metavar="COS",
        help="with --int8: keep the layer groups INT8 hurts most in high precision until the held-out cosine "
        "(worst sample vs FP32) reaches COS, e.g. 0.9995; greedy by accuracy gained per GMAC, at most 8 "
        "configurations tried (each timed at batch 8 on ONNX Runtime CPU), one calibration reused; the "
        "choice and the trade-off table go into model.json, the plot into int8_tradeoff.png",
    )
    e = p.add_argument_group("TensorRT engine")
    e.add_argument(
        "--engine", action="store_true", help="require the engine: fail if TensorRT is unavailable"
    )
    e.add_argument(
        "--workspace", type=float, default=4.0, metavar="GIB", help="builder workspace limit (default 4)"
    )
    e.add_argument(
        "--opt-level", type=int, default=3, metavar="N", help="builder optimisation level 0..5 (default 3)"
    )
    e.add_argument("--timing-cache", type=Path, metavar="PATH", help="timing cache file to load and save")
    e.add_argument(
        "--plugin",
        action="append",
        default=[],
        type=Path,
        metavar="LIB",
        help="plugin library to load (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from msmlp.extras import require_extra

    require_extra("export", "msmlp export")
    from msmlp.commands import parse_batch
    from msmlp.pipeline import ExportOptions, run_export
    from msmlp.verify import summary_line

    options = ExportOptions(
        model=args.model,
        weights=args.weights,
        out=args.out,
        batch=parse_batch(args.batch) if args.batch else None,
        opset=args.opset,
        images=args.images,
        fp16=args.fp16,
        int8=args.int8,
        calib=args.calib,
        calib_size=args.calib_size,
        calib_method=args.calib_method,
        keep_fp32=tuple(args.keep_fp32),
        int8_target=args.int8_target,
        target_cosine=args.target_cosine,
        engine=args.engine,
        workspace_gib=args.workspace,
        opt_level=args.opt_level,
        timing_cache=args.timing_cache,
        plugins=tuple(args.plugin),
        seed=args.seed,
        bf16=args.bf16,
        shift=args.shift,
        reuse=not args.no_reuse,
    )
    result = run_export(options)
    print(f"{'artefact':<22} {'MB':>8}  {'backend':<12} verification")
    extra = [k for k in result.reports if k not in result.artifacts]  # e.g. bf16: model.onnx on OpenVINO
    rows = [(result.artifacts[k], result.reports.get(k)) for k in result.artifacts]
    rows += [(result.artifacts["fp32"], result.reports[k]) for k in extra]
    for path, report in rows:
        verdict = "reused (verified earlier)" if path.name in result.reused and report is None else "-"
        backend = "-"
        if report is not None:
            s = report.summary()
            backend = str(s.get("backend") or "-")
            verdict = f"{s['precision']} {summary_line(s)}"
        print(f"{path.name:<22} {path.stat().st_size / 1e6:>8.1f}  {backend:<12} {verdict}")
    for step, why in result.skipped.items():
        print(f"{step} skipped: {why}")
    print(f"written to {result.out}/ (model.json has the metadata, verify_*.json the parity reports)")
    return 0
