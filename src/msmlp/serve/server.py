"""Running the app: uvicorn on a socket bound first, graceful drain, and a thread for tests.

The socket is bound before the model loads, so a busy port fails in milliseconds with one line, and the
"serving ... on URL" line appears only once the port is really ours and the backend is warm (port 0
picks a free port; the URL then shows the real one). SIGINT/SIGTERM: uvicorn stops accepting, lets
in-flight requests finish (up to the drain timeout), then the lifespan drains the batch queue.
"""

from __future__ import annotations

import contextlib
import errno
import math
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI

from msmlp.errors import InputError, MsmlpError
from msmlp.models.config import DeployConfig
from msmlp.runtime.base import Backend
from msmlp.runtime.batcher import BatcherClosedError
from msmlp.serve.app import Service, create_app
from msmlp.serve.errors import PortInUseError


def check_port(port: int) -> int:
    """0 (any free port) or 1..65535; checked before anything loads."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"--port {port!r} must be within 1..65535 (or 0 for any free port)")
    return port


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; a busy or unusable address is one clear error."""
    check_port(port)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise InputError(f"--host {host!r} is not an address this machine can bind ({exc.strerror})") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} is already in use (another server?); stop it, or pass another "
                "--port (0 picks a free one)"
            ) from exc
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    backend: Backend,
    config: DeployConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    access_log: bool = False,
    drain_timeout_s: float = 30.0,
    on_ready: Callable[[str], None] | None = None,
    **app_options: Any,
) -> None:
    """Bind, load the backend, then run uvicorn until SIGINT/SIGTERM, drain and stop.

    ``on_ready(url)`` is called once the server accepts requests.
    """
    import uvicorn

    sock = bind(host, port)
    try:
        app = create_app(backend, config, drain_timeout_s=drain_timeout_s, **app_options)
        service: Service = app.state.service
        service.startup()  # a bad model fails here with one clear error, before uvicorn starts
        url = url_of(sock)
        uv_config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=max(1, math.ceil(drain_timeout_s)),
        )
        server = _Server(uv_config, lambda: on_ready(url) if on_ready else None)
        try:
            server.run(sockets=[sock])
        finally:
            service.batcher.close(drain=True, timeout_s=drain_timeout_s)  # no-op after a normal shutdown
    finally:
        sock.close()


class _Server:
    """uvicorn's Server with a callback once it listens, and a stop signal that ends ``run`` normally
    (uvicorn re-raises SIGINT after its graceful shutdown, which would turn a clean stop into an error)."""

    def __new__(cls, config: Any, on_started: Callable[[], None]) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                if not self.should_exit:
                    on_started()

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                stops = (signal.SIGINT, signal.SIGTERM)
                original = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
                try:
                    yield
                finally:
                    for sig, handler in original.items():
                        signal.signal(sig, handler)

        return Server(config)


class ServiceThread:
    """The app under uvicorn in a background thread, for tests, benchmarks and embedding.

    ``start()`` returns the base URL once the server listens (``port=0`` picks a free port);
    ``stop()`` is uvicorn's graceful shutdown: stop accepting, finish in-flight requests, drain.
    """

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        import uvicorn

        self.app = app
        self.sock = bind(host, port)
        config = uvicorn.Config(app, log_level=log_level, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="msmlp-uvicorn", daemon=True
        )
        self.url = url_of(self.sock)

    def start(self, timeout_s: float = 120.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                self.sock.close()
                error = getattr(self.app.state.service, "start_error", None)
                if isinstance(error, MsmlpError):
                    raise error
                raise BatcherClosedError(f"the service failed to start ({error or 'see the log'})")
            if time.monotonic() > deadline:
                self.server.should_exit = True
                raise BatcherClosedError(f"the service did not start within {timeout_s} s")
            time.sleep(0.02)
        return self.url

    def request_stop(self) -> None:
        """Begin the graceful shutdown without waiting for it."""
        self.server.should_exit = True

    def stop(self, timeout_s: float | None = 120.0) -> bool:
        """Shut down gracefully; False if the thread is still running after ``timeout_s``."""
        self.request_stop()
        self.thread.join(timeout_s)
        self.sock.close()
        return not self.thread.is_alive()

    def __enter__(self) -> ServiceThread:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
