"""A feature graph served: the batcher merges requests of one input size and returns every named output,
v2 answers all stage outputs (JSON and binary) through the real tritonclient at two sizes, /v1 refuses
with the way to go, and the Triton config written for it has dynamic H/W that Triton's schema takes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import msmlp
from msmlp.errors import InputError
from msmlp.runtime import open_backend
from msmlp.runtime.batcher import DynamicBatcher
from msmlp.runtime.ort import OnnxRuntimeBackend
from msmlp.serve import ServiceThread, create_app

SIZES = [(112, 112), (168, 224)]


@pytest.fixture(scope="module")
def feature_graph(tmp_path_factory):
    out = tmp_path_factory.mktemp("served") / "features"
    msmlp.export("s2mlpv2_micro", features=True, dynamic_size="112,168,224x280", out=out)
    return out / "model.onnx"


def _direct(graph, x):
    backend = OnnxRuntimeBackend(graph)
    return backend.infer({"input": x}, outputs=("stage0", "stage1"))


def test_batcher_merges_one_size_and_returns_every_output(feature_graph):
    rng = np.random.default_rng(0)
    requests = [rng.standard_normal((3, *SIZES[i % 2]), dtype=np.float32) for i in range(8)]
    sizes_seen = []
    with DynamicBatcher(OnnxRuntimeBackend(feature_graph), max_batch=4, max_delay_ms=50) as batcher:
        batcher.add_observer(lambda stats: sizes_seen.append(stats.size))
        start = threading.Barrier(len(requests))
        results: list = [None] * len(requests)

        def client(i: int) -> None:
            start.wait()
            results[i] = batcher.submit(requests[i]).result(timeout=120)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(InputError, match="not a multiple of the stride 14"):
            batcher.submit(np.zeros((3, 120, 112), np.float32))
    assert sum(sizes_seen) == len(requests) and max(sizes_seen) > 1  # merged, never across sizes
    for x, got in zip(requests, results):
        want = _direct(feature_graph, x[None])
        assert set(got) == {"stage0", "stage1"}
        for name in got:
            assert got[name].shape == want[name].shape[1:]
            np.testing.assert_allclose(got[name], want[name][0], rtol=1e-4, atol=1e-4)


def test_v2_returns_every_stage_output_at_two_sizes_through_tritonclient(feature_graph):
    http = pytest.importorskip("tritonclient.http")
    app = create_app(open_backend(onnx=feature_graph, backend="onnxruntime"), None, max_batch=4)
    with ServiceThread(app) as service:
        client = http.InferenceServerClient(service.url.removeprefix("http://"))
        meta = client.get_model_metadata("s2mlpv2_micro")
        assert [o["shape"] for o in meta["outputs"]] == [[-1, 32, -1, -1], [-1, 64, -1, -1]]
        assert meta["inputs"][0]["shape"] == [-1, 3, -1, -1]
        for (h, w), binary in zip(SIZES, (True, False)):
            x = np.random.default_rng(h).standard_normal((2, 3, h, w), dtype=np.float32)
            feed = http.InferInput("input", list(x.shape), "FP32")
            feed.set_data_from_numpy(x, binary_data=binary)
            asked = [http.InferRequestedOutput(n, binary_data=binary) for n in ("stage0", "stage1")]
            result = client.infer("s2mlpv2_micro", [feed], outputs=asked)
            want = _direct(feature_graph, x)
            for name, stride in (("stage0", 7), ("stage1", 14)):
                got = result.as_numpy(name)
                assert got.shape == (2, 32 if stride == 7 else 64, h // stride, w // stride)
                np.testing.assert_allclose(got, want[name], rtol=1e-4, atol=1e-4)
        feed = http.InferInput("input", [1, 3, 120, 112], "FP32")
        feed.set_data_from_numpy(np.zeros((1, 3, 120, 112), np.float32))
        with pytest.raises(Exception, match="pad it to 126x112"):
            client.infer("s2mlpv2_micro", [feed])
        import urllib.error
        import urllib.request

        from msmlp.data.transforms import builtin_images

        photo = builtin_images()[0].read_bytes()
        req = urllib.request.Request(
            service.url + "/v1/classify", data=photo, headers={"Content-Type": "image/jpeg"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=60)
        assert refused.value.code == 400 and b"feature export" in refused.value.read()


def test_triton_repo_config_has_dynamic_spatial_dims(feature_graph, tmp_path, cli):
    pytest.importorskip("tritonclient")
    from msmlp.exporters.triton_config import parse_text

    result = cli("msmlp", "triton-repo", "--onnx", str(feature_graph), "--repo", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "repo" / "s2mlpv2_micro" / "config.pbtxt").read_text()
    config = parse_text(text, "config.pbtxt")  # Triton's own ModelConfig schema
    assert list(config.input[0].dims) == [3, -1, -1]
    assert [(o.name, list(o.dims)) for o in config.output] == [
        ("stage0", [32, -1, -1]),
        ("stage1", [64, -1, -1]),
    ]
    assert not any(o.label_filename for o in config.output)
