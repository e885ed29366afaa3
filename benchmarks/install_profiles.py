"""Start-up cost of an install profile: ``import msmlp`` + ``msmlp.load(graph)`` in a fresh process, and
``msmlp serve --onnx graph`` until ``/v2/health/ready`` answers (docs/install.md).

    python benchmarks/install_profiles.py PYTHON GRAPH [--runs 3]

PYTHON is the interpreter of the environment to measure (a venv's bin/python); the timer runs here.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import time
import urllib.request

LOAD = (
    "import time; t = time.perf_counter(); import msmlp; p = msmlp.load({graph!r}); "
    "print(f'{{time.perf_counter() - t:.2f}}', p.info.backend, p.info.precision)"
)


def load_s(python: str, graph: str) -> str:
    done = subprocess.run(
        [python, "-c", LOAD.format(graph=graph)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def serve_ready_s(python: str, graph: str) -> float:
    start = time.perf_counter()
    command = [python, "-m", "msmlp.cli", "serve", "--onnx", graph, "--port", "0"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = child.stdout.readline().split(" on ")[1].split()[0]  # printed once bound
        urllib.request.urlopen(url + "/v2/health/ready", timeout=120).read()
        return time.perf_counter() - start
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("python")
    parser.add_argument("graph")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    loads = [load_s(args.python, args.graph) for _ in range(args.runs)]
    ready = [f"{serve_ready_s(args.python, args.graph):.2f}" for _ in range(args.runs)]
    print(f"import+load s: {loads}; serve to ready s: {ready}")


if __name__ == "__main__":
    main()
