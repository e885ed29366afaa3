"""The CPU default (``--backend auto``) against ONNX Runtime FP32 and eager PyTorch bf16 autocast, and INT8
on the default against the default's BF16, on full-size models: one interleaved run per model.

For each model: export model.onnx and a ModelOpt INT8 Q/DQ model.int8.onnx into a temporary folder
(calibrated on three of the packaged photos and views of them), verify each way of running them on the
other two photos and views of them (held out) against eager FP32, record the verifications in model.json
as the export pipeline does, then let ``select_backend`` pick the default for each file. Timing:
``--rounds`` rounds, each calling every row once in a rotated order, so a noisy neighbour on the shared
cores hits all rows alike; the figures are ratios of medians within this one run.

  python benchmarks/cpu_backends.py --models s2mlpv2_small msmlp_tiny
  python benchmarks/cpu_backends.py --models s2mlpv2_small --busy   # beside one busy competing process
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import FULL, calib_and_held, held_out_parity, timings, write_json


def export(name: str, out: Path, calib_size: int) -> tuple[Any, Path, Path, np.ndarray]:
    """model.onnx + model.int8.onnx in ``out``, and held-out inputs (N,C,H,W)."""
    from msmlp.exporters.onnx import export_onnx
    from msmlp.exporters.quantize import quantize_int8
    from msmlp.models.weights import load_for_deploy

    model = load_for_deploy(name, None, 0, quiet=True)
    config = model.deploy_config
    t0 = time.perf_counter()
    fp32 = export_onnx(model, out / "model.onnx", config=config, batch=(1, 8, 64), model_name=name)
    calib, held = calib_and_held(config, calib_size)
    t1 = time.perf_counter()
    int8 = out / "model.int8.onnx"
    quantize_int8(fp32, int8, calib, target="cpu")
    print(f"{name}: export {t1 - t0:.0f} s, int8 {time.perf_counter() - t1:.0f} s", flush=True)
    return model, fp32, int8, held


def record(name: str, model: Any, out: Path, summaries: dict[str, tuple[Path, dict]]) -> None:
    """Write model.json through msmlp's one writer, with the verification keys the pipeline records."""
    from msmlp.manifest import Manifest

    manifest = Manifest.open(
        out, model=name, config=model.deploy_config, weights=model.weights_info, opset=17, batch=(1, 8, 64)
    )
    for key, (path, summary) in summaries.items():
        if key in ("fp32", "int8"):
            manifest.add(path, {"precision": key, "verification": summary})
    for key, (_path, summary) in summaries.items():
        manifest.data["verification"][key] = summary
    manifest.write()


def run_model(name: str, rounds: int, calib_size: int, torch_compile: bool = False) -> dict[str, Any]:
    from msmlp.runtime.openvino import OpenVINOBackend
    from msmlp.runtime.ort import OnnxRuntimeBackend
    from msmlp.runtime.select import select_backend
    from msmlp.runtime.torch_backend import TorchBackend

    with tempfile.TemporaryDirectory(prefix="msmlp-cpu-") as tmp:
        out = Path(tmp)
        model, fp32, int8, held = export(name, out, calib_size)
        cache = out / "ovcache"
        candidates = {
            "ort fp32": OnnxRuntimeBackend(fp32),
            "ov fp32": OpenVINOBackend(fp32, cache_dir=cache),
            "ov bf16": OpenVINOBackend(fp32, inference_precision="bf16", cache_dir=cache),
            "ort int8": OnnxRuntimeBackend(int8),
            "ov int8 (f32 hint)": OpenVINOBackend(int8, cache_dir=cache),
            "ov int8 (bf16 hint)": OpenVINOBackend(int8, inference_precision="bf16", cache_dir=cache),
        }
        for b in candidates.values():
            b.load()
        parity = {k: v.to_dict() for k, v in held_out_parity(model, candidates, held).items()}
        passed = {k: v["cosine"] >= 0.9995 and v["top1_decisive"] >= 0.99 for k, v in parity.items()}
        passed.update(
            {k: v["cosine"] >= 0.99 and v["top1_decisive"] >= 0.95 for k, v in parity.items() if "int8" in k}
        )

        def summary(label: str, backend: str, file: Path, **extra: Any) -> tuple[Path, dict]:
            return file, {
                **parity[label],
                "passed": passed[label],
                "backend": backend,
                "file": file.name,
                **extra,
            }

        record(
            name,
            model,
            out,
            {
                "fp32": summary("ort fp32", "onnxruntime", fp32),
                "int8": summary("ort int8", "onnxruntime", int8),
                "bf16": summary("ov bf16", "openvino", fp32, hint="bf16"),
                "fp32_openvino": summary("ov fp32", "openvino", fp32, hint="f32"),
                "int8_openvino": summary("ov int8 (bf16 hint)", "openvino", int8, hint="bf16"),
            },
        )
        auto, auto_int8 = select_backend(fp32).load(), select_backend(int8).load()
        rows = {
            "auto": auto,
            "auto int8": auto_int8,
            "eager fp32": TorchBackend(model).load(),
            "torch bf16 autocast": TorchBackend(model, autocast_bf16=True).load(),
            **(
                {"torch.compile bf16": TorchBackend(model, autocast_bf16=True, compiled=True).load()}
                if torch_compile
                else {}
            ),
            **official_layout(model),
            **candidates,
        }
        checked = {k: r for k, r in rows.items() if k.startswith(("auto", "torch bf16", "torch.compile"))}
        compile_s = {k: r.compile_s for k, r in rows.items() if getattr(r, "compile_s", None) is not None}
        parity.update({k: v.to_dict() for k, v in held_out_parity(model, checked, held).items()})
        start = {
            "ov fp32 first start (cold cache)": _start_time(fp32, out / "cold"),
            "second start": _start_time(fp32, out / "cold"),
        }
        ms = timings(rows, rounds)
        described = {k: f"{r.info.backend} {r.info.precision}" for k, r in rows.items()}
        for r in rows.values():
            r.close()
    return {
        "model": name,
        "rows": described,
        "parity": parity,
        "start_s": start,
        "ms": ms,
        "compile_s": compile_s,
    }


def official_layout(model: Any) -> dict[str, Any]:
    """MS-MLP only: the PyTorch rows again in the official channels-last MLP layout (msmlp's deployment
    form is channels-first); each PyTorch baseline is the faster of the two layouts."""
    from msmlp.models.msmlp import MSMLP, set_channels_first
    from msmlp.runtime.torch_backend import TorchBackend

    if not isinstance(model, MSMLP):
        return {}
    official = set_channels_first(copy.deepcopy(model), False)
    return {
        "eager fp32 (channels-last)": TorchBackend(official).load(),
        "torch bf16 autocast (channels-last)": TorchBackend(official, autocast_bf16=True).load(),
    }


def _start_time(path: Path, cache: Path) -> float:
    from msmlp.runtime.openvino import OpenVINOBackend

    t0 = time.perf_counter()
    OpenVINOBackend(path, inference_precision="bf16", cache_dir=cache).load().close()
    return time.perf_counter() - t0


def ratios(ms: dict[str, float]) -> dict[str, float]:
    def best(row: str) -> float:  # the faster PyTorch layout (official_layout)
        return min(ms[row], ms.get(f"{row} (channels-last)", ms[row]))

    return {
        "auto / ort fp32 (speed-up)": ms["ort fp32"] / ms["auto"],
        "auto / torch bf16 autocast": best("torch bf16 autocast") / ms["auto"],
        "auto / eager fp32": best("eager fp32") / ms["auto"],
        "auto int8 / auto bf16": ms["auto"] / ms["auto int8"],
        **(
            {"auto / torch.compile bf16": ms["torch.compile bf16"] / ms["auto"]}
            if "torch.compile bf16" in ms
            else {}
        ),
        "ov fp32 / ort fp32": ms["ort fp32"] / ms["ov fp32"],
        "ov int8 bf16-hint / ort int8": ms["ort int8"] / ms["ov int8 (bf16 hint)"],
        "ov int8 bf16-hint / f32-hint": ms["ov int8 (f32 hint)"] / ms["ov int8 (bf16 hint)"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=FULL)
    p.add_argument(
        "--rounds", type=int, default=8, help="interleaved rounds at batch 8 (batch 1: twice as many)"
    )
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument(
        "--torch-compile",
        action="store_true",
        help="also a torch.compile row (inductor, freezing, BF16 autocast); its compile time is kept apart",
    )
    p.add_argument("--busy", action="store_true", help="run beside one busy-looping competing process")
    p.add_argument("--out", type=Path, default=Path("cpu_backends.json"))
    args = p.parse_args()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    results = []
    try:
        for name in args.models:
            found = run_model(name, args.rounds, args.calib_size, args.torch_compile)
            found["ratios"] = {b: ratios(ms) for b, ms in found["ms"].items()}
            found["busy"] = args.busy
            results.append(found)
            _print(found)
            write_json(args.out, results)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return 0


def _print(found: dict[str, Any]) -> None:
    print(f"\n{found['model']}{' (beside a busy process)' if found['busy'] else ''}: rows {found['rows']}")
    print(f"{'row':<22} {'b8 ms':>8} {'b1 ms':>8} {'cosine':>10} {'top-1':>6}")
    for row, ms8 in found["ms"][8].items():
        par = found["parity"].get(row, {})
        cos = f"{par['cosine']:.6f}" if par else "ref"
        top1 = f"{par['top1']:.0%}" if par else ""
        print(f"{row:<22} {ms8:>8.1f} {found['ms'][1][row]:>8.1f} {cos:>10} {top1:>6}")
    for batch, rs in found["ratios"].items():
        print(f"batch {batch}: " + ", ".join(f"{k} {v:.2f}x" for k, v in rs.items()))
    print(f"OpenVINO start: {found['start_s']}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
