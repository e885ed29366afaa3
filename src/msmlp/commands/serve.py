"""Serve a model over HTTP with dynamic batching (FastAPI + uvicorn): msmlp's /v1 API and the KServe v2
(Triton) protocol, so Triton's own clients (tritonclient.http) work unchanged.

/v1: POST /v1/classify (image upload: multipart field 'file', or raw image bytes) -> top-k labels;
POST /v1/infer (float32 tensor: raw bytes + X-Shape header, or JSON {"shape", "data"}) -> logits;
GET /healthz, /readyz, /metrics (Prometheus), /v1/model, /docs (the OpenAPI schema).
/v2: GET /v2, /v2/health/live|ready, /v2/models/NAME[/versions/1][/ready|/config|/stats];
POST /v2/models/NAME/infer (JSON tensors or the binary tensor extension).
Concurrent requests are merged into batches of up to --max-batch images, waiting at most --max-delay-ms;
a full queue answers 503 with Retry-After. Ctrl-C / SIGTERM stops accepting, finishes in-flight requests
and drains the queue. Exit status 4: the port is already in use.

Example:
  msmlp serve --onnx out/model.onnx --port 8000
  curl -F file=@photo.jpg 'http://127.0.0.1:8000/v1/classify?topk=3'
  python examples/triton_client.py --url 127.0.0.1:8000 --model s2mlpv2_small photo.jpg
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from msmlp.commands.args import add_backend_args, add_source_args

if TYPE_CHECKING:
    from msmlp.runtime.base import Backend

HELP = "serve a model over HTTP with dynamic batching (/v1 API and the KServe v2 / Triton protocol)"


def port_number(text: str) -> int:
    """--port: 1..65535, or 0 for any free port (the URL printed then shows the real one)."""
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port number within 1..65535 (or 0 for any free port)"
        )
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_args(p)
    add_backend_args(p)
    g = p.add_argument_group("service")
    g.add_argument(
        "--server",
        choices=("msmlp", "triton"),
        default="msmlp",
        help="msmlp (default): this package's service, /v1 and KServe v2; triton: a real Triton Inference "
        "Server with Triton's dynamic batcher (KServe v2 over HTTP on --port, gRPC and metrics on free "
        "ports), through nvidia-pytriton in its own environment: bash requirements/triton-server.sh",
    )
    g.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 for all)"
    )
    g.add_argument("--port", type=port_number, default=8000, help="port (default: 8000; 0: any free port)")
    g.add_argument(
        "--name", metavar="NAME", help="model name in /v2 URLs (default: the exported model's name)"
    )
    g.add_argument(
        "--max-batch", type=int, metavar="N", help="largest batch (default: 8, or the profile max)"
    )
    g.add_argument(
        "--max-delay-ms", type=float, default=2.0, metavar="MS", help="batch gathering window (default: 2 ms)"
    )
    g.add_argument(
        "--max-queue", type=int, default=256, metavar="N", help="images allowed to wait (default: 256)"
    )
    g.add_argument(
        "--max-body-mb", type=float, default=8.0, metavar="MB", help="request size limit in MiB (default: 8)"
    )
    g.add_argument(
        "--topk", type=int, default=5, metavar="K", help="default top-k for /v1/classify (default: 5)"
    )
    g.add_argument(
        "--drain-timeout-s", type=float, default=30.0, metavar="S", help="shutdown drain limit (default: 30)"
    )
    g.add_argument("--access-log", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    from msmlp.extras import require_extra

    if getattr(args, "server", None) != "triton":
        require_extra("serve", "msmlp serve")
    from msmlp.commands import check_positive
    from msmlp.commands.args import open_source
    from msmlp.serve import serve

    check_positive(args.max_body_mb, "--max-body-mb")
    check_positive(args.max_batch, "--max-batch")
    backend = open_source(args)
    max_batch = args.max_batch if args.max_batch is not None else _default_max_batch(args)
    if args.server == "triton":
        return _run_triton(args, backend, max_batch)

    def ready(url: str) -> None:
        _announce(args, backend, max_batch, f"on {url}", "/v1 and KServe v2")

    serve(
        backend,
        None,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        drain_timeout_s=args.drain_timeout_s,
        max_batch=max_batch,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        default_topk=args.topk,
        model_name=args.name,
        on_ready=ready,
    )
    print("stopped; the queue was drained", file=sys.stderr)
    return 0


def _run_triton(args: argparse.Namespace, backend: Backend, max_batch: int) -> int:
    """--server triton: the same backend inside Triton, whose batcher takes --max-batch, --max-delay-ms and
    --max-queue (requests there, not images); /v1, --max-body-mb, --topk and --access-log are msmlp's."""
    from msmlp.serve.triton_server import serve_triton

    def ready(url: str, batch: int) -> None:
        _announce(args, backend, batch, f"in Triton on {url}", "KServe v2")

    serve_triton(
        backend,
        host=args.host,
        port=args.port,
        model_name=args.name,
        max_batch=max_batch,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        drain_timeout_s=args.drain_timeout_s,
        on_ready=ready,
    )
    print("stopped", file=sys.stderr)
    return 0


def _announce(args: argparse.Namespace, backend: Backend, max_batch: int, where: str, protocols: str) -> None:
    """Once the port is bound, for either server: the synthetic-weights warning (a checkpoint-less
    ``--onnx``/``--engine``; for ``--model``, loading already said so) and the one line that says what
    is served where."""
    from msmlp.log import logger

    info = backend.info  # loaded by now
    if info.synthetic and args.model is None:
        logger.warning(
            "warning: %s has synthetic weights: the graph and timings are real, the predictions meaningless",
            info.model or "this model",
        )
    name = args.name or info.model or "model"
    print(
        f"serving {name} ({info.backend} {info.precision}, max batch {max_batch}) {where}"
        f"  ({protocols} model {name!r}; Ctrl-C to stop)",
        flush=True,
    )


def _default_max_batch(args: argparse.Namespace) -> int:
    """8, or less when the exported file's batch profile stops below it."""
    path = args.onnx or args.engine
    if path is None:
        return 8
    from msmlp.artifacts import read_artifact

    return max(1, min(8, read_artifact(path).batch_range[1]))
