"""Write a Triton Inference Server model repository for an exported model.

Creates <repo>/<name>/config.pbtxt and <repo>/<name>/<version>/model.onnx or model.plan. The runtime
Triton uses: --backend onnxruntime (default for ONNX; platform onnxruntime_onnx, CPU or GPU),
--backend openvino (Triton's OpenVINO backend reading the same model.onnx; CPU instances) or
--backend tensorrt (default for --engine; platform tensorrt_plan, GPU). max_batch_size is the batch
profile's maximum from the export metadata (or --max-batch, which may not exceed it); dynamic batching
uses the preferred sizes and queue delay given. The config is built with Triton's own schema (from
tritonclient) and re-read to validate it.

Example:
  msmlp triton-repo --onnx out/model.onnx --repo models --preferred 4,8 --kind cpu
  msmlp triton-repo --onnx out/model.onnx --repo models --backend openvino
  tritonserver --model-repository models
"""

from __future__ import annotations

import argparse

from msmlp.commands import parse_int_list

HELP = "write a Triton model repository (config.pbtxt + versioned model) for an ONNX file or plan"
TARGETS = ("onnxruntime", "openvino", "tensorrt")  # msmlp.exporters.triton_config.TARGETS, kept light for --help


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--onnx", metavar="PATH", help="exported ONNX model (metadata read from it / model.json)"
    )
    src.add_argument("--engine", metavar="PATH", help="TensorRT plan (with its <plan>.json sidecar)")
    p.add_argument("--repo", required=True, metavar="DIR", help="model repository folder (created if needed)")
    p.add_argument("--name", help="model name in the repository (default: the exported model's name)")
    p.add_argument(
        "--backend",
        "--platform",
        dest="target",
        choices=TARGETS,
        help="Triton runtime: onnxruntime (default for ONNX), openvino (ONNX on CPU), tensorrt (a plan)",
    )
    p.add_argument("--version", type=int, default=1, help="version folder number (default: 1)")
    p.add_argument("--max-batch", type=int, metavar="N", help="max_batch_size (default: the profile's max)")
    p.add_argument("--preferred", metavar="N,N", help="preferred batch sizes, e.g. 4,8 (default: opt,max)")
    p.add_argument(
        "--queue-delay-us",
        type=int,
        default=100,
        metavar="US",
        help="max_queue_delay_microseconds for dynamic batching (default: 100)",
    )
    p.add_argument("--instances", type=int, default=1, metavar="N", help="instances per group (default: 1)")
    p.add_argument(
        "--kind", choices=["gpu", "cpu"], help="instance kind (default: cpu for openvino, else gpu)"
    )


def run(args: argparse.Namespace) -> int:
    from msmlp.exporters.triton import write_repository

    kind = args.kind or ("cpu" if args.target == "openvino" else "gpu")
    model_dir = write_repository(
        args.repo,
        onnx=args.onnx,
        engine=args.engine,
        name=args.name,
        version=args.version,
        max_batch=args.max_batch,
        preferred=parse_int_list(args.preferred, "--preferred"),
        queue_delay_us=args.queue_delay_us,
        instances=args.instances,
        kind=kind,
        target=args.target,
    )
    print(f"Triton model repository written and validated: {model_dir}")
    print((model_dir / "config.pbtxt").read_text(encoding="utf-8").rstrip())
    return 0
