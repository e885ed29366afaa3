"""The HTTP service, started for real with uvicorn on 127.0.0.1 (a free port), driven with httpx.

Backend: PyTorch msmlp_micro with contributing weights, wrapped so tests can block it or make a
batch fail. Every loop is bounded in count and every wait in time; only loopback is used.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from msmlp.data.labels import topk
from msmlp.data.transforms import load_image, transform
from msmlp.models.registry import get_config
from msmlp.serve import ServiceThread, create_app

from .support import LIMIT, MODEL, POISON, SHAPE, WAIT_S, Hooked, assert_close, tensors


def post_tensor(client, x: np.ndarray):
    headers = {"content-type": "application/octet-stream", "x-shape": ",".join(map(str, x.shape))}
    return client.post("/v1/infer", content=x.tobytes(), headers=headers)


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_health_readiness_and_model_info(served):
    service, _, _ = served
    with httpx.Client(base_url=service.url, timeout=WAIT_S) as client:
        assert client.get("/healthz").json() == {"status": "alive"}
        assert client.get("/readyz").status_code == 200
        info = client.get("/v1/model").json()
    assert info["backend"]["input_shape"] == [-1, *SHAPE]
    assert info["batcher"] == {"max_batch": 8, "max_delay_ms": 5.0, "max_queue": 256}


def test_64_concurrent_clients_get_their_unbatched_results(served, reference, image_paths):
    service, _, _ = served
    x = tensors(64, seed=0)
    want = np.concatenate([reference(x[i : i + 1]) for i in range(64)])
    config = get_config(MODEL)
    photos = [p.read_bytes() for p in image_paths]
    want_top = [topk(reference(transform(load_image(p), config)[None]), 5)[0] for p in image_paths]

    async def client_session(client: httpx.AsyncClient, i: int):
        infer = await post_tensor(client, x[i : i + 1] if i % 2 else x[i])
        photo = photos[i % len(photos)]
        if i % 2:
            classify = await client.post("/v1/classify", files={"file": ("p.jpg", photo, "image/jpeg")})
        else:
            classify = await client.post(
                "/v1/classify", content=photo, headers={"content-type": "image/jpeg"}
            )
        return infer, classify

    async def main():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=service.url, timeout=WAIT_S, limits=limits) as client:
            before = (await client.get("/metrics")).text
            results = await asyncio.gather(*(client_session(client, i) for i in range(64)))
            return before, results, (await client.get("/metrics")).text

    before, results, after = asyncio.run(main())
    for i, (infer, classify) in enumerate(results):
        assert infer.status_code == 200 and classify.status_code == 200, (infer.text, classify.text)
        body = infer.json()
        assert body["shape"] == ([1, 1000] if i % 2 else [1000])
        assert_close(np.asarray(body["logits"]).reshape(1000), want[i])
        got = classify.json()["predictions"]
        assert [p["index"] for p in got] == [p.index for p in want_top[i % len(photos)]]
        assert_close([p["probability"] for p in got], [p.probability for p in want_top[i % len(photos)]])

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("msmlp_requests_total", endpoint="/v1/infer", status="200") == 64
    assert delta("msmlp_requests_total", endpoint="/v1/classify", status="200") == 64
    assert delta("msmlp_batch_size_sum") == 128, "each image went through the backend exactly once"
    assert delta("msmlp_batch_size_count") < 128, "concurrent requests were not batched"
    assert delta("msmlp_queue_seconds_count") == 128 and delta("msmlp_inference_seconds_count") > 0
    assert "msmlp_queue_depth" in after


def test_a_failing_batch_fails_only_its_own_requests(served, reference):
    service, backend, log = served
    backend.batches.clear()
    x = tensors(64, seed=1)
    poisoned = {5, 50}
    want = np.concatenate([reference(x[i : i + 1]) for i in range(64)])
    x[sorted(poisoned), 0, 0, 0] = POISON

    async def main():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=service.url, timeout=WAIT_S, limits=limits) as client:
            return await asyncio.gather(*(post_tensor(client, x[i]) for i in range(64)))

    responses = asyncio.run(main())
    failed = set().union(*(ids for ids, raised in backend.batches if raised))
    assert failed >= poisoned and len(failed) <= 16
    for i, r in enumerate(responses):
        if i in failed:
            error = r.json()["error"]
            assert r.status_code == 500 and error.startswith("internal error (a bug in msmlp): RuntimeError")
            assert f"ref {error.split('ref ')[1][:12]}" in log.text, "the log has the traceback under the ref"
        else:
            assert r.status_code == 200
            assert_close(r.json()["logits"], want[i])
    with httpx.Client(base_url=service.url, timeout=WAIT_S) as client:
        assert client.get("/readyz").status_code == 200, "the worker survived the failing batch"


def test_bad_requests_get_clear_4xx_errors(served, image_paths):
    service, _, _ = served
    grey = next(p for p in image_paths if p.stem == "brick").read_bytes()
    with httpx.Client(base_url=service.url, timeout=WAIT_S) as client:
        r = client.post("/v1/classify", content=b"not an image", headers={"content-type": "image/png"})
        assert r.status_code == 400 and "cannot read" in r.json()["error"]
        r = client.post("/v1/classify", content=b"hello", headers={"content-type": "text/plain"})
        assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
        r = client.post("/v1/classify", files={"image": ("g.jpg", grey, "image/jpeg")})
        assert r.status_code == 400 and "no file part named 'file'" in r.json()["error"]
        r = client.post("/v1/classify?topk=0", content=grey, headers={"content-type": "image/jpeg"})
        assert r.status_code == 400 and "topk='0'" in r.json()["error"]
        r = client.post("/v1/classify?topk=3", content=grey, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3, "greyscale photos are accepted"
        big = b"\0" * (LIMIT + 1)
        r = client.post("/v1/classify", content=big, headers={"content-type": "image/jpeg"})
        assert r.status_code == 413 and f"limit of {LIMIT} bytes" in r.json()["error"]
        chunks = (b"\0" * 65536 for _ in range(17))  # no Content-Length: counted while streaming
        r = client.post("/v1/classify", content=chunks, headers={"content-type": "image/jpeg"})
        assert r.status_code == 413
        x = np.zeros((2, 3, 32, 32), np.float32)
        r = post_tensor(client, x)
        assert r.status_code == 400 and "does not match the model's (3, 64, 64)" in r.json()["error"]
        r = client.post("/v1/infer", content=b"\0" * 12, headers={"content-type": "application/octet-stream"})
        assert r.status_code == 400 and "X-Shape" in r.json()["error"]
        r = client.post("/v1/infer", json={"shape": [3, 64, 64], "data": [1.0, 2.0]})
        assert r.status_code == 400 and "send it flat (12288 numbers)" in r.json()["error"]
        r = client.post("/v1/infer", json={"shape": [1, *SHAPE], "data": np.zeros(12288).tolist()})
        assert r.status_code == 200 and r.json()["shape"] == [1, 1000]
        r = post_tensor(client, np.zeros((9, *SHAPE), np.float32))
        assert r.status_code == 400 and "max_batch=8" in r.json()["error"]


def test_full_queue_answers_503_with_retry_after(reference):
    backend = Hooked(reference)
    app = create_app(backend, get_config(MODEL), max_batch=1, max_delay_ms=0, max_queue=2)
    batcher = app.state.service.batcher
    x = tensors(6, seed=2)

    async def main(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as client:
            accepted = [asyncio.create_task(post_tensor(client, x[0]))]
            await _until(lambda: backend.entered.is_set())
            accepted += [asyncio.create_task(post_tensor(client, x[i])) for i in (1, 2)]
            await _until(lambda: batcher.queue_depth == 2)
            refused = await asyncio.gather(*(post_tensor(client, x[i]) for i in (3, 4, 5)))
            backend.gate.set()
            return await asyncio.gather(*accepted), refused

    with ServiceThread(app) as service:
        backend.block()
        accepted, refused = asyncio.run(main(service.url))
    for r in refused:
        assert r.status_code == 503 and "queue is full" in r.json()["error"]
        assert int(r.headers["retry-after"]) >= 1
    for i, r in enumerate(accepted):
        assert r.status_code == 200
        assert_close(r.json()["logits"], reference(x[i : i + 1])[0])


def test_graceful_shutdown_finishes_in_flight_requests(reference):
    backend = Hooked(reference)
    app = create_app(backend, get_config(MODEL), max_batch=1, max_delay_ms=0)
    batcher = app.state.service.batcher
    x = tensors(3, seed=3)
    service = ServiceThread(app)
    url = service.start()
    backend.block()

    def send(i: int):
        with httpx.Client(base_url=url, timeout=WAIT_S) as client:
            return post_tensor(client, x[i])

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(send, 0)]
        assert backend.entered.wait(WAIT_S)
        futures += [pool.submit(send, i) for i in (1, 2)]
        asyncio.run(_until(lambda: batcher.queue_depth == 2))
        service.request_stop()
        asyncio.run(_until(lambda: _refused(url)))  # stopped accepting connections
        assert all(not f.done() for f in futures)
        backend.gate.set()
        responses = [f.result(WAIT_S) for f in futures]
    assert service.stop(WAIT_S)
    for i, r in enumerate(responses):
        assert r.status_code == 200
        assert_close(r.json()["logits"], reference(x[i : i + 1])[0])
    assert not batcher.running and batcher.queue_depth == 0


def test_not_ready_until_started(reference):
    app = create_app(Hooked(reference), get_config(MODEL))

    async def main():
        transport = httpx.ASGITransport(app=app)  # no lifespan: the batch worker never starts
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/readyz"), await post_tensor(client, np.zeros(SHAPE, np.float32))

    ready, infer = asyncio.run(main())
    assert ready.status_code == 503 and ready.json()["status"] == "not ready"
    assert infer.status_code == 503 and "not running" in infer.json()["error"]


async def _until(condition, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/healthz", timeout=1.0)
    except httpx.TransportError:
        return True
    return False
