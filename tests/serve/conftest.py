"""Fixtures for the HTTP service: a real uvicorn server on 127.0.0.1 (a free port) in front of a PyTorch
msmlp_micro backend with contributing weights, with its log captured."""

from __future__ import annotations

import pytest
import torch

from msmlp.models.registry import get_config
from msmlp.runtime.torch_backend import TorchBackend
from msmlp.serve import ServiceThread, create_app

from .support import LIMIT, MODEL, Hooked, LogCapture


@pytest.fixture(scope="session")
def reference(contributing):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 64 clients + server + worker on 2 shared cores: no OpenMP team on top
    yield TorchBackend(contributing(MODEL), config=get_config(MODEL)).load()
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def served(reference):
    """(ServiceThread, Hooked backend, LogCapture) shared by the tests that do not stop the server."""
    backend = Hooked(reference)
    app = create_app(
        backend, get_config(MODEL), max_batch=8, max_delay_ms=5, max_body_bytes=LIMIT, model_name=MODEL
    )
    with LogCapture() as log, ServiceThread(app) as service:
        yield service, backend, log
