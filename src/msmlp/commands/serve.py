"""Serve a model over HTTP with dynamic batching (FastAPI + uvicorn).

Endpoints: POST /v1/classify (image upload: multipart field 'file', or raw image bytes) -> top-k labels;
POST /v1/infer (float32 tensor: raw bytes + X-Shape header, or JSON {"shape", "data"}) -> logits;
GET /healthz, /readyz, /metrics (Prometheus), /v1/model. Concurrent requests are merged into batches
of up to --max-batch images, waiting at most --max-delay-ms; a full queue answers 503 with Retry-After.
Ctrl-C / SIGTERM stops accepting, finishes in-flight requests and drains the queue.

Example:
  msmlp serve --onnx out/model.onnx --port 8000
  curl -F file=@photo.jpg 'http://127.0.0.1:8000/v1/classify?topk=3'
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "serve a model over HTTP with dynamic batching (classify, infer, health, metrics)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help="registered model, run in PyTorch")
    src.add_argument("--onnx", metavar="PATH", help="ONNX file, run in ONNX Runtime")
    src.add_argument("--engine", metavar="PATH", help="TensorRT plan")
    p.add_argument("--weights", metavar="PATH", help="checkpoint for --model (default: synthetic weights)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 for all)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--max-batch", type=int, metavar="N", help="largest batch (default: 8, or the profile max)"
    )
    p.add_argument(
        "--max-delay-ms", type=float, default=2.0, metavar="MS", help="batch gathering window (default: 2 ms)"
    )
    p.add_argument(
        "--max-queue", type=int, default=256, metavar="N", help="images allowed to wait (default: 256)"
    )
    p.add_argument(
        "--max-body-mb", type=float, default=8.0, metavar="MB", help="request size limit in MiB (default: 8)"
    )
    p.add_argument(
        "--topk", type=int, default=5, metavar="K", help="default top-k for /v1/classify (default: 5)"
    )
    p.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime / PyTorch intra-op threads")
    p.add_argument(
        "--providers",
        metavar="P[,P]",
        help="ONNX Runtime execution providers: cpu (default), cuda, tensorrt, or auto (GPU when present)",
    )
    p.add_argument(
        "--drain-timeout-s", type=float, default=30.0, metavar="S", help="shutdown drain limit (default: 30)"
    )
    p.add_argument("--access-log", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    from msmlp.errors import InputError
    from msmlp.runtime.service import serve

    backend, config, name, profile_max = _open(args)
    max_batch = args.max_batch if args.max_batch is not None else min(8, profile_max or 8)
    if args.max_body_mb <= 0:
        raise InputError(f"--max-body-mb must be > 0, got {args.max_body_mb}")
    serve(
        backend,
        config,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        drain_timeout_s=args.drain_timeout_s,
        max_batch=max_batch,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        default_topk=args.topk,
        model_name=name,
        on_ready=lambda: print(
            f"serving {name} ({backend.name}, max batch {max_batch}) on http://{args.host}:{args.port}"
            "  (Ctrl-C to stop)",
            flush=True,
        ),
    )
    return 0


def _open(args: argparse.Namespace) -> tuple[Any, Any, str, int | None]:
    """Backend (unloaded), preprocessing config, display name and the batch profile max if known."""
    from pathlib import Path

    from msmlp.export.triton import artifact_metadata, batch_profile, config_from_metadata
    from msmlp.log import logger
    from msmlp.runtime import open_backend

    if args.model is not None:
        import torch

        import msmlp
        from msmlp.models.weights import make_contributing
        from msmlp.runtime.torch_backend import TorchBackend

        if args.threads:
            torch.set_num_threads(args.threads)
        model = msmlp.create_model(args.model, pretrained=args.weights)
        if args.weights is None:
            logger.warning(
                "no --weights: serving synthetic weights (make_contributing, seed 0); labels are meaningless"
            )
            make_contributing(model, seed=0)
        return TorchBackend(model), msmlp.get_config(args.model), args.model, None
    path = Path(args.onnx or args.engine)
    meta = artifact_metadata(path)
    profile = batch_profile(meta)
    providers = parse_providers(args.providers)
    backend = open_backend(onnx=args.onnx, engine=args.engine, threads=args.threads, providers=providers)
    name = meta.get("model") if isinstance(meta.get("model"), str) else path.stem
    return backend, config_from_metadata(meta), name, profile[2] if profile else None


def parse_providers(text: str | None) -> Any:
    """``--providers``: None (CPU), "auto", or a list of names for ONNX Runtime."""
    if not text:
        return None
    return "auto" if text.strip() == "auto" else [p.strip() for p in text.split(",") if p.strip()]
