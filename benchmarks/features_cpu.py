"""Backbone features at detection sizes on the CPU: parity per output and latency, in one run.

For each model: ``msmlp.export(features=True, dynamic_size=...)`` (synthetic weights in which every
block contributes, or ``--weights``), which verifies every stage output against PyTorch FP32 on the
built-in photos letterboxed to 224, 512 and 800x1344 (each side rounded up to the network's stride),
on ONNX Runtime and OpenVINO, FP32 and BF16. Then batch-1 latency at the largest size, interleaved:
the CPU default (OpenVINO, bf16 hint where the CPU has BF16), OpenVINO f32, eager PyTorch FP32 and BF16
autocast, and ``torch.compile`` (inductor, freezing, BF16 autocast; its compile time reported apart).

  python benchmarks/features_cpu.py --model s2mlpv2_small msmlp_tiny --out docs/figures/features_cpu.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import write_json

SIDES = (224, 512, (800, 1344))


def profile_text(stride: int) -> str:
    up = lambda v: -(-v // stride) * stride  # noqa: E731
    lo, opt, (hi_h, hi_w) = SIDES
    return f"{up(lo)},{up(opt)},{up(hi_h)}x{up(hi_w)}"


def torch_rows(model: Any, x: np.ndarray, compile_: bool) -> tuple[dict[str, Any], dict[str, float]]:
    import torch

    from msmlp.models.features import FeatureBackbone

    backbone = FeatureBackbone(model).eval()
    t = torch.from_numpy(x)

    def eager(_: np.ndarray) -> Any:
        with torch.inference_mode():
            return backbone(t)

    def autocast(_: np.ndarray) -> Any:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return backbone(t)

    rows = {"torch eager fp32": eager, "torch eager bf16 autocast": autocast}
    extra: dict[str, float] = {}
    if compile_:
        import torch._inductor.config as inductor

        inductor.freezing = True
        compiled = torch.compile(backbone)
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            compiled(t)
        extra["torch_compile_s"] = time.perf_counter() - start

        def run_compiled(_: np.ndarray) -> Any:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return compiled(t)

        rows["torch.compile bf16 (inductor, freezing)"] = run_compiled
    return rows, extra


def measure(name: str, weights: Path | None, rounds: int, compile_: bool, workdir: Path) -> dict[str, Any]:
    import msmlp
    from msmlp.bench.timing import interleaved_samples, runner
    from msmlp.models.features import FeatureBackbone
    from msmlp.runtime.openvino import OpenVINOBackend, bf16_support
    from msmlp.runtime.registry import Request, get_spec

    model = msmlp.create_model(name)
    stride = FeatureBackbone(model).stride
    out = workdir / name
    start = time.perf_counter()
    msmlp.export(name, weights=weights, features=True, dynamic_size=profile_text(stride), out=out)
    export_s = time.perf_counter() - start
    report = json.loads((out / "verify_features.json").read_text())
    parity = {
        r["key"]: {
            "backend": r["backend"],
            "hint": r["hint"],
            "passed": r["passed"],
            "per_size": {
                "x".join(map(str, s["size"])): {
                    o: {k: v[k] for k in ("cosine", "max_abs", "mean_abs", "max_rel")}
                    for o, v in s["outputs"].items()
                }
                for s in r["sizes"]
            },
        }
        for r in report["runs"]
    }
    graph = out / "model.onnx"
    predictor = msmlp.load(graph)
    size = predictor.feature_layout.profile.max
    x = np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)
    ov = lambda hint: get_spec("openvino").open(Request(graph, "onnx", precision=hint)).load()  # noqa: E731
    has_bf16 = bf16_support(__import__("openvino").Core())[0]
    backends: dict[str, OpenVINOBackend] = {"openvino f32": ov("f32")}
    if has_bf16:
        backends = {"openvino bf16 (default)": ov("bf16"), **backends}
    rows: dict[str, Any] = {k: runner(b) for k, b in backends.items()}  # every output, as msmlp bench
    from msmlp.models.weights import load_for_deploy

    reference = load_for_deploy(name, weights, 0).eval()
    more, extra = torch_rows(reference, x, compile_)
    rows.update(more)
    for fn in rows.values():  # warm-up
        fn(x)
    samples = interleaved_samples(rows, x, rounds)  # rotated order each round, as the CPU benchmarks
    ms = {k: float(np.median(v) * 1e3) for k, v in samples.items()}
    default = next(iter(ms))
    return {
        "model": name,
        "weights": str(weights) if weights else "synthetic, every block contributes (seed 0)",
        "profile": profile_text(stride),
        "export_and_verify_s": round(export_s, 1),
        "parity": parity,
        "latency_batch1": {"size": list(size), "rounds": rounds, "median_ms": ms},
        "speedup_of_default": {k: round(v / ms[default], 2) for k, v in ms.items()},
        "default": default,
        **{k: round(v, 1) for k, v in extra.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", nargs="+", default=["s2mlpv2_small", "msmlp_tiny"])
    parser.add_argument("--weights", type=Path, default=None, help="checkpoint (one model only)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile row")
    parser.add_argument("--out", type=Path, default=Path("features_cpu.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        results = [measure(m, args.weights, args.rounds, not args.no_compile, Path(work)) for m in args.model]
    write_json(args.out, {"command": "python benchmarks/features_cpu.py", "results": results})
    for r in results:
        worst = {
            k: min(c["cosine"] for s in v["per_size"].values() for c in s.values())
            for k, v in r["parity"].items()
        }
        print(r["model"], r["profile"], "worst cosine", worst)
        print("  latency ms", {k: round(v, 1) for k, v in r["latency_batch1"]["median_ms"].items()})
        print("  x of default", r["speedup_of_default"], "compile s", r.get("torch_compile_s"))


if __name__ == "__main__":
    main()
