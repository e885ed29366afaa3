"""End-to-end latency of the HTTP service under load, against the backend's own latency in the same run.

Starts the real service as users do (`msmlp serve --onnx`, in its own process, so the clients here do
not share its interpreter; ONNX Runtime CPU; the model exported with msmlp's own export and synthetic
contributing weights) on 127.0.0.1, then for each client count runs a closed
loop: every client POSTs one of the built-in sample photos to /v1/classify, waits for the answer,
and sends the next, until the run's request budget is spent. Latency is measured by the client
(upload, JPEG decode, resize, queueing, batched inference, top-k, response).

One untimed warm-up round (one request per client of the largest count) comes first. Baselines,
measured before the service starts: one direct backend call at batch 1 and at the
service's max batch. Under saturation the expected p50 is about (clients / max_batch) batch times,
since each request waits for the batches queued ahead of it; the table shows it next to the figures.

    python benchmarks/service_latency.py                                # s2mlpv2_small, 1/8/64 clients
    python benchmarks/service_latency.py --model s2mlpv2_micro --clients 64 --requests 640
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="s2mlpv2_small", help="registered model (default s2mlpv2_small)")
    p.add_argument("--clients", default="1,8,64", help="client counts to run (default 1,8,64)")
    p.add_argument("--requests", type=int, default=4, help="requests per client per run (default 4)")
    p.add_argument("--max-batch", type=int, default=8, help="service max batch (default 8)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="service batch window (default 2 ms)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    p.add_argument("--baseline-repeats", type=int, default=5, help="direct calls per baseline (default 5)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p.parse_args(argv)


def direct_ms(backend, batch: int, repeats: int) -> float:
    from msmlp.bench import make_batch

    x = make_batch(backend, batch)
    backend(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def run(args: argparse.Namespace) -> dict:
    import httpx

    import msmlp
    from msmlp.bench import load_service
    from msmlp.export.onnx import export_onnx
    from msmlp.models.weights import make_contributing
    from msmlp.runtime.ort import OnnxRuntimeBackend

    clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="msmlp-service-bench-") as tmp:
        model = make_contributing(msmlp.create_model(args.model), seed=0).eval()
        path = export_onnx(model, Path(tmp) / "model.onnx", config=msmlp.get_config(args.model))
        with OnnxRuntimeBackend(path, threads=args.threads) as backend:
            baseline = {
                "direct_batch1_ms": direct_ms(backend, 1, args.baseline_repeats),
                f"direct_batch{args.max_batch}_ms": direct_ms(backend, args.max_batch, args.baseline_repeats),
            }
        runs = []
        with served(path, args) as url:
            load_service(url, max(clients), max(clients), progress=False)  # warm-up, not reported
            for n in clients:
                before = httpx.get(url + "/metrics").text
                conc = load_service(url, n, n * args.requests, progress=False)
                after = httpx.get(url + "/metrics").text
                runs.append(_row(n, conc, before, after))
                print(_format(runs[-1]), flush=True)
    return {
        "model": args.model,
        "backend": "onnxruntime CPU",
        "threads": args.threads,
        "max_batch": args.max_batch,
        "max_delay_ms": args.max_delay_ms,
        "baseline": baseline,
        "runs": runs,
    }


@contextmanager
def served(onnx_path: Path, args: argparse.Namespace, timeout_s: float = 180.0) -> Iterator[str]:
    """`msmlp serve` in a child process on a free loopback port; SIGINT (graceful) at the end."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "msmlp.cli",
        "serve",
        "--onnx",
        str(onnx_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-batch",
        str(args.max_batch),
        "--max-delay-ms",
        str(args.max_delay_ms),
        "--max-queue",
        "1024",
        "--threads",
        str(args.threads),
    ]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if child.poll() is not None:
                sys.exit(f"msmlp serve exited with status {child.returncode}")
            try:
                if httpx.get(url + "/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"msmlp serve was not ready within {timeout_s} s")
            time.sleep(0.2)
        yield url
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _row(clients: int, conc, before: str, after: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    def totals(text: str) -> tuple[float, float]:
        v = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        return v.get("msmlp_batch_size_sum", 0.0), v.get("msmlp_batch_size_count", 0.0)

    (s0, c0), (s1, c1) = totals(before), totals(after)
    lat = conc.latency
    return {
        "clients": clients,
        "requests": conc.requests,
        "answered": conc.answered,
        "errors": conc.errors,
        "p50_ms": lat.p50_ms if lat else None,
        "p90_ms": lat.p90_ms if lat else None,
        "p99_ms": lat.p99_ms if lat else None,
        "max_ms": lat.max_ms if lat else None,
        "throughput_ips": conc.throughput_ips,
        "mean_batch": (s1 - s0) / (c1 - c0) if c1 > c0 else 0.0,
        "wall_s": conc.wall_s,
    }


def _format(r: dict) -> str:
    return (
        f"{r['clients']:>4} clients {r['answered']:>5}/{r['requests']:<5} answered  p50 {r['p50_ms']:9.1f} ms  "
        f"p90 {r['p90_ms']:9.1f}  p99 {r['p99_ms']:9.1f}  max {r['max_ms']:9.1f}  "
        f"{r['throughput_ips']:7.2f} img/s  mean batch {r['mean_batch']:.2f}  errors {r['errors'] or 0}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    base = result["baseline"]
    print(
        f"{result['model']} on {result['backend']} ({result['threads']} threads); direct backend call "
        + ", ".join(f"{k.removeprefix('direct_').removesuffix('_ms')} {v:.1f} ms" for k, v in base.items())
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["answered"] == r["requests"] for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
