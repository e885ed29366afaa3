"""The KServe v2 / Triton protocol, driven by Triton's own client (``tritonclient.http``) against the real
server on loopback: health, metadata, config, stats, infer with JSON and binary tensors, async infer,
the classification extension, errors, and 64 concurrent clients each answered once and equal to the
unbatched result."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.utils import InferenceServerException

from msmlp.data.labels import imagenet_classes
from msmlp.data.transforms import builtin_images, load_image, transform
from msmlp.exporters.triton_config import model_config_schema
from msmlp.models.registry import get_config

from .support import MODEL, SHAPE, WAIT_S, assert_close, tensors


def client(service, **kw) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(service.url.removeprefix("http://"), network_timeout=WAIT_S, **kw)


def request(x: np.ndarray, binary: bool) -> list[httpclient.InferInput]:
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return [tensor]


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    config = get_config(MODEL)
    return np.stack([transform(load_image(p), config) for p in builtin_images()])


def test_health_metadata_config_and_stats(served):
    service, _, _ = served
    c = client(service)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    assert c.is_model_ready(MODEL, "1") and not c.is_model_ready("other")
    meta = c.get_server_metadata()
    assert meta["name"] == "msmlp" and "binary_tensor_data" in meta["extensions"]
    model = c.get_model_metadata(MODEL)
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *SHAPE]}]
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]
    config = c.get_model_config(MODEL)
    parsed = json_format.ParseDict(config, model_config_schema().ModelConfig())  # Triton's schema, strict
    assert parsed.max_batch_size == 8 and list(parsed.input[0].dims) == list(SHAPE)
    assert list(parsed.output[0].dims) == [1000]
    before = c.get_inference_statistics(MODEL)["model_stats"][0]["inference_count"]
    c.infer(MODEL, request(np.zeros((2, *SHAPE), np.float32), binary=True))
    after = c.get_inference_statistics(MODEL)["model_stats"][0]
    assert after["inference_count"] == before + 2 and after["inference_stats"]["success"]["count"] >= 1
    c.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_real_photos_matches_the_backend(served, reference, photos, binary):
    service, _, _ = served
    c = client(service)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
    x = photos if binary else photos[:2]  # JSON numbers take ~20 bytes each: keep under the body limit
    result = c.infer(MODEL, request(x, binary), outputs=outputs, request_id="photos")
    assert result.get_response()["id"] == "photos"
    assert_close(result.as_numpy("logits"), reference(x))
    c.close()


def test_no_outputs_named_means_all_outputs_in_binary(served, reference, photos):
    service, _, _ = served
    c = client(service)
    result = c.infer(MODEL, request(photos[:1], binary=True))  # the client then asks binary_data_output
    assert result.get_output("logits")["parameters"]["binary_data_size"] == 4000
    assert_close(result.as_numpy("logits"), reference(photos[:1]))
    c.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_classification_extension_names_the_top_classes(served, reference, photos, binary):
    """Binary BYTES outputs are decoded by the client's own deserialize_bytes_tensor."""
    service, _, _ = served
    c = client(service)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary, class_count=3)]
    got = c.infer(MODEL, request(photos[:2], binary=True), outputs=outputs).as_numpy("logits")
    want = np.argsort(-reference(photos[:2]), axis=1)[:, :3]
    assert got.shape == (2, 3)
    labels = imagenet_classes()
    for row, indices in zip(got, want):
        fields = [(s.decode() if isinstance(s, bytes) else s).split(":") for s in row]  # score:index:label
        assert [int(f[1]) for f in fields] == list(indices)
        assert [f[2] for f in fields] == [labels[i] for i in indices]
    c.close()


def test_async_infer(served, reference):
    service, _, _ = served
    x = tensors(6, seed=4)
    c = client(service, concurrency=6)
    pending = [c.async_infer(MODEL, request(x[i : i + 1], binary=i % 2 == 0)) for i in range(6)]
    got = np.concatenate([p.get_result(timeout=WAIT_S).as_numpy("logits") for p in pending])
    assert_close(got, reference(x))
    c.close()


@pytest.mark.parametrize(
    ("model", "x", "datatype", "message"),
    [
        (
            MODEL,
            np.zeros((1, 3, 32, 32), np.float32),
            "FP32",
            "has shape [1, 3, 32, 32]; the model takes [N, 3, 64, 64]",
        ),
        (MODEL, np.zeros((1, *SHAPE), np.float64), "FP64", "datatype 'FP64'; the model takes FP32"),
        ("resnet50", np.zeros((1, *SHAPE), np.float32), "FP32", "unknown model 'resnet50'"),
    ],
    ids=["wrong-shape", "wrong-dtype", "wrong-model"],
)
def test_errors_reach_the_client_as_the_protocol_says(served, model, x, datatype, message):
    service, _, log = served
    logged = len(log.lines)
    c = client(service)
    tensor = httpclient.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match=re.escape(message)) as info:
        c.infer(model, [tensor])
    assert info.value.status() in ("400", "404")
    assert not any("Traceback" in line for line in log.lines[logged:])
    c.close()


def test_64_concurrent_clients_are_each_answered_once_and_exactly(served, reference):
    service, _, _ = served
    x = tensors(64, seed=5)
    want = np.concatenate([reference(x[i : i + 1]) for i in range(64)])
    start = threading.Barrier(64, timeout=WAIT_S)
    stats = client(service)
    before = stats.get_inference_statistics(MODEL)["model_stats"][0]

    def one_client(i: int) -> tuple[str, np.ndarray]:
        c = client(service)
        try:
            start.wait()  # all 64 send together, so the batcher merges them
            result = c.infer(MODEL, request(x[i : i + 1], binary=i % 2 == 0), request_id=f"client-{i}")
            return result.get_response()["id"], result.as_numpy("logits")
        finally:
            c.close()

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(one_client, range(64), timeout=WAIT_S * 2))
    after = stats.get_inference_statistics(MODEL)["model_stats"][0]
    stats.close()
    assert sorted(i for i, _ in answers) == sorted(f"client-{i}" for i in range(64))
    for i, (rid, logits) in enumerate(answers):
        assert rid == f"client-{i}"
        assert_close(logits[0], want[i])
    assert after["inference_count"] - before["inference_count"] == 64, "each image ran exactly once"
    assert after["execution_count"] - before["execution_count"] < 64, "concurrent requests were batched"
