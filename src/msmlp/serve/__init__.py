"""The HTTP service: msmlp's /v1 API and the KServe v2 (Triton) protocol in front of one batcher.

One module per job: :mod:`~msmlp.serve.app` (routes), :mod:`~msmlp.serve.v2` (the v2 protocol),
:mod:`~msmlp.serve.schemas` (the request models: parsing and OpenAPI schema), :mod:`~msmlp.serve.limits`
(what a request may hold, and the body-size limit), :mod:`~msmlp.serve.codecs` (strict decoding of
values and images), :mod:`~msmlp.serve.metrics` (Prometheus and Triton statistics),
:mod:`~msmlp.serve.errors` (the error boundary), :mod:`~msmlp.serve.server` (uvicorn, graceful drain,
a thread for tests).
"""

from __future__ import annotations

from msmlp.serve.app import create_app
from msmlp.serve.server import ServiceThread, serve

__all__ = ["ServiceThread", "create_app", "serve"]
