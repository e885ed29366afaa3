"""Latency and throughput of one `msmlp serve` process through its three wire formats, interleaved.

Starts the service as users do (`msmlp serve --onnx`, its own process, ONNX Runtime CPU; the model
exported by msmlp with synthetic contributing weights) on 127.0.0.1 and, for each client count, runs
closed loops (each client sends a request, waits for the answer, sends the next) through:

- v1:        POST /v1/infer, raw float32 bytes + X-Shape
- v2-json:   POST /v2/models/NAME/infer, the tensor as JSON numbers (KServe v2)
- v2-binary: the same with the binary tensor data extension (what tritonclient sends by default)

Every request carries the same preprocessed 1-image tensor, so the figures differ only by protocol.
Rounds interleave the formats (v1, v2-json, v2-binary, v1, ...) so drift on a shared machine hits all
three alike. Latency is measured in the client (serialisation, HTTP, queueing, batched inference,
response parsing). One untimed warm-up per format comes first. Bounded: requests per run are fixed.

    python benchmarks/service_latency.py                                  # s2mlpv2_micro, 1/8/64 clients
    python benchmarks/service_latency.py --model s2mlpv2_small --requests 2
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
from bench_common import write_json

FORMATS = ("v1", "v2-json", "v2-binary")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="s2mlpv2_micro", help="registered model (default s2mlpv2_micro)")
    p.add_argument("--clients", default="1,8,64", help="client counts (default 1,8,64)")
    p.add_argument("--requests", type=int, default=4, help="requests per client per run (default 4)")
    p.add_argument("--min-requests", type=int, default=32, help="at least this many per run (default 32)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per client count (default 2)")
    p.add_argument("--max-batch", type=int, default=8, help="service max batch (default 8)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="service batch window (default 2 ms)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    p.add_argument(
        "--backends",
        default="onnxruntime",
        help="server backends to compare, interleaved (e.g. auto,onnxruntime; default onnxruntime)",
    )
    p.add_argument("--formats", default=",".join(FORMATS), help=f"wire formats (default {','.join(FORMATS)})")
    p.add_argument(
        "--export-dir",
        type=Path,
        help="an msmlp-export folder (model.onnx + model.json) to serve, so --backend auto can use its "
        "verifications; default: export the model to a temporary folder",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p.parse_args(argv)


def request_for(fmt: str, url: str, model: str, x: np.ndarray) -> tuple[str, bytes, dict[str, str]]:
    """(URL, body, headers) of one inference request in a wire format."""
    shape = list(x.shape)
    if fmt == "v1":
        headers = {"content-type": "application/octet-stream", "x-shape": ",".join(map(str, shape))}
        return f"{url}/v1/infer", x.tobytes(), headers
    tensor: dict = {"name": "input", "shape": shape, "datatype": "FP32"}
    if fmt == "v2-json":
        tensor["data"] = x.ravel().tolist()
        body = json.dumps({"inputs": [tensor], "outputs": [{"name": "logits"}]}).encode()
        return f"{url}/v2/models/{model}/infer", body, {"content-type": "application/json"}
    tensor["parameters"] = {"binary_data_size": x.nbytes}
    header = json.dumps(
        {"inputs": [tensor], "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "content-type": "application/octet-stream",
    }
    return f"{url}/v2/models/{model}/infer", header + x.tobytes(), headers


def closed_loop(clients: int, total: int, call: Callable[[int], None]) -> tuple[list[float], float, int]:
    """``clients`` threads share ``total`` requests; returns latencies (s), wall time (s), errors."""
    latencies: list[float] = []
    errors = [0]
    counter = iter(range(total))
    lock = threading.Lock()

    def worker(i: int) -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            start = time.perf_counter()
            try:
                call(i)
            except Exception:  # counted, not raised: a benchmark reports failures
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return latencies, time.perf_counter() - start, errors[0]


def run(args: argparse.Namespace) -> dict:
    import httpx

    import msmlp
    from msmlp.exporters.onnx import export_onnx
    from msmlp.models.weights import load_for_deploy

    counts = [int(c) for c in args.clients.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    config = msmlp.get_config(args.model)
    x = np.random.default_rng(0).standard_normal((1, *config.input_size), dtype=np.float32)
    results: dict[tuple[str, int, str], list] = {}
    with tempfile.TemporaryDirectory(prefix="msmlp-service-bench-") as tmp, ExitStack() as servers:
        if args.export_dir is not None:
            path = args.export_dir / "model.onnx"
        else:
            model = load_for_deploy(args.model, quiet=True)
            path = export_onnx(model, Path(tmp) / "model.onnx", config=config)
        urls = {b: servers.enter_context(served(path, args, b)) for b in backends}
        sessions = [httpx.Client(timeout=300) for _ in range(max(counts))]
        requests = {(b, f): request_for(f, urls[b], args.model, x) for b in backends for f in formats}

        def caller(key: tuple[str, str]) -> Callable[[int], None]:
            target, body, headers = requests[key]

            def call(i: int) -> None:
                response = sessions[i].post(target, content=body, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

            return call

        for key in requests:  # warm-up, not reported
            closed_loop(max(counts), max(counts), caller(key))
        for n in counts:
            total = max(args.min_requests, n * args.requests)
            for _ in range(args.rounds):
                for key in requests:
                    lat, wall, errors = closed_loop(n, total, caller(key))
                    results.setdefault((key[0], n, key[1]), []).append((lat, wall, errors))
        for s in sessions:
            s.close()
    rows = [_row(n, fmt, runs) | {"backend": b} for (b, n, fmt), runs in results.items()]
    return {"model": args.model, "backend": ", ".join(backends), "rows": rows, **vars(args)}


def _row(clients: int, fmt: str, runs: list) -> dict:
    lat = sorted(t * 1e3 for r in runs for t in r[0])
    answered = sum(len(r[0]) for r in runs)
    return {
        "clients": clients,
        "format": fmt,
        "answered": answered,
        "errors": sum(r[2] for r in runs),
        "p50_ms": statistics.median(lat) if lat else None,
        "p99_ms": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] if lat else None,
        "throughput_rps": answered / sum(r[1] for r in runs),
    }


@contextmanager
def served(
    onnx_path: Path, args: argparse.Namespace, backend: str = "onnxruntime", timeout_s: float = 180.0
) -> Iterator[str]:
    """`msmlp serve` in a child process on a free loopback port (its printed URL); SIGINT at the end."""
    command = [
        sys.executable, "-m", "msmlp.cli", "serve", "--onnx", str(onnx_path), "--backend", backend,
        "--name", args.model, "--host", "127.0.0.1", "--port", "0", "--max-batch", str(args.max_batch),
        "--max-delay-ms", str(args.max_delay_ms), "--max-queue", "1024", "--threads", str(args.threads),
    ]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        timer = threading.Timer(timeout_s, child.kill)
        timer.start()
        line = child.stdout.readline()  # "serving ... on URL": printed once the port is bound
        timer.cancel()
        if " on http://" not in line:
            sys.exit(f"msmlp serve did not start (exit status {child.poll()})")
        yield line.split(" on ")[1].split()[0]
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(
        f"{result['model']} on {result['backend']}; max batch {args.max_batch}, window {args.max_delay_ms} ms"
    )
    print(
        f"{'backend':<12} {'clients':>7}  {'format':<10} {'answered':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} errors"
    )
    for r in sorted(result["rows"], key=lambda r: (r["clients"], r["backend"], FORMATS.index(r["format"]))):
        print(
            f"{r['backend']:<12} {r['clients']:>7}  {r['format']:<10} {r['answered']:>8} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['throughput_rps']:>8.1f} {r['errors']}"
        )
    if args.json:
        write_json(args.json, result)
    return 0 if all(r["errors"] == 0 for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
