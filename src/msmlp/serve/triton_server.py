"""``msmlp serve --server triton``: an msmlp backend inside a real Triton Inference Server (via PyTriton).

PyTriton starts Triton's own ``tritonserver`` (with its Python backend) as a child process and binds a
Python callable into it, so HTTP, gRPC, metrics, the model configuration, the statistics and the dynamic
batcher are all Triton's; only the batch itself runs here, in the msmlp backend. Triton checks the model
name, datatype and shape of each request before it queues it; this side refuses non-finite values.

PyTriton pins ``numpy<2``, so it lives in its own environment: ``bash requirements/triton-server.sh``
makes it and prints its Python, which then runs ``python -m msmlp.cli serve --server triton ...``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sysconfig
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from msmlp.errors import InputError, MissingDependencyError
from msmlp.log import logger
from msmlp.runtime.base import Backend
from msmlp.serve.limits import MAX_BATCH, MAX_DELAY_MS, MAX_QUEUE

INSTALL = "bash requirements/triton-server.sh"  # makes .venv-triton and prints its python
STOP_POLL_S = 0.5


def serve_triton(
    backend: Backend,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str | None = None,
    max_batch: int = MAX_BATCH,
    max_delay_ms: float = MAX_DELAY_MS,
    max_queue: int = MAX_QUEUE,
    drain_timeout_s: float = 30.0,
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Load ``backend``, bind it into Triton with Triton's dynamic batcher, serve until SIGINT/SIGTERM.

    HTTP listens on ``host:port`` (0: a free port); gRPC and metrics on free ports of the same host.
    ``max_queue`` bounds the requests waiting in Triton's queue (beyond it Triton refuses them);
    ``drain_timeout_s`` is how long Triton lets in-flight requests finish when stopped.
    ``on_ready(url, max_batch)`` is called once Triton reports the model ready.
    """
    if not math.isfinite(max_delay_ms) or max_delay_ms < 0:
        raise InputError(f"--max-delay-ms {max_delay_ms!r} must be a finite number >= 0")
    if max_queue < 1:
        raise InputError(f"--max-queue {max_queue!r} must be at least 1")
    pytriton = _import_pytriton()
    from msmlp.serve.server import bind, url_of

    http = bind(host, port)  # a busy port fails here with msmlp's own error, before anything loads
    url = url_of(http)
    http_port = http.getsockname()[1]
    http.close()
    info = backend.info  # loads: a bad model fails here, before Triton starts
    max_batch = max(1, min(max_batch, info.batch_range[1]))
    name = model_name or info.model or "model"
    grpc_port, metrics_port = _free_ports(host, 2)
    config = pytriton["TritonConfig"](
        http_address=host,
        http_port=http_port,
        grpc_address=host,
        grpc_port=grpc_port,
        metrics_address=host,
        metrics_port=metrics_port,
        exit_timeout_secs=max(1, math.ceil(drain_timeout_s)),
    )
    model_config = pytriton["ModelConfig"](
        max_batch_size=max_batch,
        batcher=pytriton["DynamicBatcher"](
            max_queue_delay_microseconds=int(max_delay_ms * 1000),
            preferred_batch_size=_preferred_sizes(max_batch),
            default_queue_policy=pytriton["QueuePolicy"](max_queue_size=max_queue),
        ),
    )
    item_shape = tuple(info.input_shape[1:])
    classes = _output_width(backend, item_shape)
    _expose_libpython()
    with _stop_signals() as stopping:
        triton = pytriton["Triton"](config=config, security_config=pytriton["security"])
        try:
            triton.bind(
                model_name=name,
                infer_func=BatchRunner(backend),
                inputs=[pytriton["Tensor"](name=info.input_name, dtype=np.float32, shape=item_shape)],
                outputs=[pytriton["Tensor"](name=info.output_name, dtype=np.float32, shape=(classes,))],
                config=model_config,
                strict=True,
            )
            triton.run()
            if on_ready is not None:
                on_ready(url, max_batch)
            while triton.is_alive() and not stopping.wait(STOP_POLL_S):
                pass
        finally:
            triton.stop()


class BatchRunner:
    """The callable bound into Triton: the requests of one Triton batch in, one result per request out.

    Triton has already checked each request's datatype and shape; what it cannot check (finite values)
    is checked here per request, so the error names the bad request.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.input_name = backend.info.input_name
        self.output_name = backend.info.output_name

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        arrays = [np.asarray(request[self.input_name], dtype=np.float32) for request in requests]
        bad = [i for i, x in enumerate(arrays) if not np.isfinite(x).all()]
        if bad:
            raise InputError(
                f"input {self.input_name!r} of request {bad[0] + 1} of {len(arrays)} in this batch holds NaN "
                "or infinite values; send finite numbers"
            )
        sizes = [len(x) for x in arrays]
        logits = self.backend(np.concatenate(arrays) if len(arrays) > 1 else arrays[0])
        if len(logits) != sum(sizes):
            raise InputError(f"{sum(sizes)} inputs gave {len(logits)} outputs")  # pragma: no cover
        parts = np.split(logits, np.cumsum(sizes)[:-1])
        return [{self.output_name: part} for part in parts]


def _import_pytriton() -> dict[str, Any]:
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor
        from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig
    except ImportError as exc:
        raise MissingDependencyError(
            f"--server triton needs nvidia-pytriton ({exc}); it pins numpy<2, so it has its own "
            f"environment: run `{INSTALL}`, then start msmlp with the Python it prints "
            "(`.venv-triton/bin/python -m msmlp.cli serve --server triton ...`)"
        ) from exc
    return {
        "DynamicBatcher": DynamicBatcher,
        "ModelConfig": ModelConfig,
        "QueuePolicy": QueuePolicy,
        "Tensor": Tensor,
        "Triton": Triton,
        "TritonConfig": TritonConfig,
        # Statistics are read-only and open in msmlp's own server; the rest (model repository, shared
        # memory, trace, logging) stays behind PyTriton's generated token.
        "security": TritonSecurityConfig(
            restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]
        ),
    }


def _preferred_sizes(max_batch: int) -> list[int]:
    """Powers of two up to ``max_batch``, and ``max_batch`` itself: Triton sends the largest that is ready."""
    sizes = {max_batch}
    size = 2
    while size < max_batch:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def _output_width(backend: Backend, item_shape: tuple[int, ...]) -> int:
    """The number of classes, from one warm-up call (which also makes the first request fast)."""
    logits = backend(np.zeros((1, *item_shape), np.float32))
    return int(logits.shape[-1])


def _free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct free ports on ``host`` (bound together, then released for Triton to take)."""
    socks = []
    try:
        for _ in range(count):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _expose_libpython() -> None:
    """Put this interpreter's libpython first on LD_LIBRARY_PATH, which tritonserver inherits.

    Triton's Python-backend stub links libpython dynamically; under pyenv (and other non-system
    Pythons) it would otherwise load the system's libpython of the same version and fail.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])
        logger.debug("LD_LIBRARY_PATH starts with %s for Triton's Python-backend stub", libdir)


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set the event (main thread only), so ``serve_triton`` stops Triton and returns."""
    event = threading.Event()
    saved: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, lambda *_: event.set())
    try:
        yield event
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
