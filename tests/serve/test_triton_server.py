"""``msmlp serve --server triton``: a real Triton Inference Server (nvidia-pytriton, in its own environment)
driven by Triton's client from this process: health, metadata, config, infer with JSON and binary
tensors, errors, concurrent clients batched by Triton's own dynamic batcher, and the example client.

The server runs under the Python of ``bash requirements/triton-server.sh`` ($MSMLP_TRITON_VENV or
.venv-triton in the repository root); without that environment these tests skip and say how to make it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import msmlp
from msmlp.data.transforms import builtin_images
from msmlp.exporters.onnx import export_onnx
from msmlp.runtime import open_backend

from .support import MODEL, SHAPE, assert_close, tensors

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "triton_client.py"
VENV = Path(os.environ.get("MSMLP_TRITON_VENV") or ROOT / ".venv-triton")
PYTHON = VENV / "bin" / "python"
START_S = 120  # model load, tritonserver and its Python-backend stub, on 2 shared cores
WAIT_S = 60
CLIENTS = 32
MAX_BATCH = 8

needs_venv = pytest.mark.skipif(
    not os.access(PYTHON, os.X_OK),
    reason=f"no Triton environment at {VENV}: run bash requirements/triton-server.sh",
)


class TritonProcess:
    """``python -m msmlp.cli serve --server triton ...`` in its own process group, log to a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        command = [str(PYTHON), "-m", "msmlp.cli", "serve", "--server", "triton", "--port", "0", *args]
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            found = re.search(r"in Triton on http://([\d.]+:\d+)", self.text)
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.text[-3000:]}")
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the server was not ready within {START_S} s:\n{self.text[-3000:]}")

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM (Triton unloads the model and exits), then SIGKILL to the whole group after the timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                return None
        return self.proc.returncode


def group_alive(pgid: int, timeout_s: float = 10) -> bool:
    """Whether any process of the server's group (tritonserver, its Python-backend stub) is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.2)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, contributing) -> Path:
    folder = tmp_path_factory.mktemp("triton")
    return export_onnx(contributing(MODEL), folder / "model.onnx", config=msmlp.get_config(MODEL))


@pytest.fixture(scope="module")
def reference(onnx_file):
    """The same graph, run unbatched in this process by the same backend class."""
    with open_backend(onnx=onnx_file, backend="onnxruntime", threads=1) as backend:
        yield backend


@pytest.fixture(scope="module")
def triton(onnx_file, tmp_path_factory):
    options = f"--backend onnxruntime --threads 1 --max-batch {MAX_BATCH} --max-delay-ms 20"
    server = TritonProcess(
        ["--onnx", str(onnx_file), *options.split()], tmp_path_factory.mktemp("triton-log") / "server.log"
    )
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"exit status {code}:\n{server.text[-3000:]}"
        assert re.search(r"^stopped$", server.text, re.MULTILINE), server.text[-3000:]
        assert not group_alive(server.proc.pid), subprocess.run(
            ["ps", "-o", "pid,stat,cmd", "-g", str(server.proc.pid)], capture_output=True, text=True
        ).stdout


def client(server: TritonProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url, network_timeout=WAIT_S)


def request(x: np.ndarray, binary: bool, datatype: str = "FP32") -> list[httpclient.InferInput]:
    tensor = httpclient.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return [tensor]


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is not None, reason="pytriton is installed here")
def test_without_pytriton_one_line_names_the_environment(cli):
    result = cli("msmlp", "serve", "--server", "triton", "--model", MODEL, "--port", "0", timeout=WAIT_S)
    cli.assert_one_line_error(result, "nvidia-pytriton", "bash requirements/triton-server.sh", code=4)


@needs_venv
def test_health_metadata_and_triton_config(triton):
    c = client(triton)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    assert c.is_model_ready(MODEL, "1") and not c.is_model_ready("other")
    assert c.get_server_metadata()["name"] == "triton"  # Triton itself, not msmlp's service
    model = c.get_model_metadata(MODEL)
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *SHAPE]}]
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]
    config = c.get_model_config(MODEL)
    assert config["max_batch_size"] == MAX_BATCH and config["input"][0]["dims"] == list(SHAPE)
    assert config["dynamic_batching"]["preferred_batch_size"] == [2, 4, 8]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 20_000
    c.close()


@needs_venv
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matches_the_backend(triton, reference, binary):
    c = client(triton)
    x = tensors(3, seed=1)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
    result = c.infer(MODEL, request(x, binary), outputs=outputs, request_id="three")
    assert result.get_response()["id"] == "three"
    assert_close(result.as_numpy("logits"), reference(x))
    c.close()


@needs_venv
@pytest.mark.parametrize(
    ("model", "x", "datatype", "message"),
    [
        (MODEL, np.zeros((1, 3, 32, 32), np.float32), "FP32", "Expected [-1,3,64,64], got [1,3,32,32]"),
        (MODEL, np.zeros((MAX_BATCH + 1, *SHAPE), np.float32), "FP32", f"batch-size must be <= {MAX_BATCH}"),
        (MODEL, np.zeros((1, *SHAPE), np.float64), "FP64", "data-type is 'FP64', but model"),
        ("resnet50", np.zeros((1, *SHAPE), np.float32), "FP32", "unknown model: 'resnet50'"),
        (MODEL, np.full((1, *SHAPE), np.nan, np.float32), "FP32", "holds NaN or infinite values"),
        (MODEL, np.full((1, *SHAPE), np.inf, np.float32), "FP32", "holds NaN or infinite values"),
    ],
    ids=["wrong-shape", "too-large-batch", "wrong-dtype", "wrong-model", "nan", "inf"],
)
def test_bad_requests_are_errors_and_the_server_goes_on(triton, reference, model, x, datatype, message):
    c = client(triton)
    with pytest.raises(InferenceServerException, match=re.escape(message)):
        c.infer(model, request(x, binary=True, datatype=datatype))
    fine = tensors(1, seed=2)
    assert_close(c.infer(MODEL, request(fine, binary=True)).as_numpy("logits"), reference(fine))
    c.close()


@needs_venv
def test_concurrent_clients_are_each_answered_once_and_exactly(triton, reference):
    x = tensors(CLIENTS, seed=5)
    want = np.concatenate([reference(x[i : i + 1]) for i in range(CLIENTS)])
    start = threading.Barrier(CLIENTS, timeout=WAIT_S)
    stats = client(triton)
    before = stats.get_inference_statistics(MODEL)["model_stats"][0]

    def one_client(i: int) -> tuple[str, np.ndarray]:
        c = client(triton)
        try:
            start.wait()  # all send together, so Triton's batcher merges them
            result = c.infer(MODEL, request(x[i : i + 1], binary=i % 2 == 0), request_id=f"client-{i}")
            return result.get_response()["id"], result.as_numpy("logits")
        finally:
            c.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(one_client, range(CLIENTS), timeout=WAIT_S * 2))
    after = stats.get_inference_statistics(MODEL)["model_stats"][0]
    stats.close()
    for i, (rid, logits) in enumerate(answers):
        assert rid == f"client-{i}"
        assert_close(logits[0], want[i])
    assert int(after["inference_count"]) - int(before["inference_count"]) == CLIENTS, "each ran exactly once"
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert executions < CLIENTS, f"{CLIENTS} concurrent requests ran in {executions} batches: not batched"


@needs_venv
def test_example_client_runs_unchanged(triton, reference):
    from msmlp.data.transforms import load_image, transform

    paths = [str(p) for p in builtin_images()]
    command = [sys.executable, str(EXAMPLE), "--url", triton.url, "--model", MODEL]
    done = subprocess.run([*command, "--topk", "3", *paths], capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(paths)
    x = np.stack([transform(load_image(p), msmlp.get_config(MODEL)) for p in paths])
    for line, path, logits in zip(lines, paths, reference(x)):
        best = int(np.argmax(logits))
        # Triton's classification extension answers "score:index" (no label file in the PyTriton model)
        assert line.startswith(f"{path}: #({best}) "), (line, best)
    wrong = subprocess.run(
        [*command[:-1], "resnet50", paths[0]], capture_output=True, text=True, timeout=WAIT_S
    )
    assert wrong.returncode == 1 and "resnet50" in wrong.stderr


@needs_venv
def test_a_registered_model_runs_in_pytorch(tmp_path, contributing):
    """--model NAME: the PyTorch backend inside Triton, same synthetic weights as in this process."""
    server = TritonProcess(["--model", MODEL, "--name", "micro", "--threads", "1"], tmp_path / "server.log")
    try:
        x = tensors(2, seed=3)
        c = client(server)
        got = c.infer("micro", request(x, binary=True)).as_numpy("logits")
        c.close()
    finally:
        assert server.stop() == 0, server.text[-3000:]
    with open_backend(model=MODEL, threads=1) as backend:
        assert_close(got, backend(x))
    assert not group_alive(server.proc.pid), "tritonserver outlived msmlp"
