"""The tensor layouts msmlp exports against the official code's, on the CPU runtimes, with the same weights
and the same Slice/Concat shifts, so only the layout differs:

- MS-MLP: the deployment form is channels-first (LayerNorm written out over C, the block MLP as 1x1
  convolutions, no Transpose); the official block permutes to channels-last for LayerNorm, Linear, GELU,
  Linear and back (``msmlp.models.msmlp.set_channels_first``).
- S2-MLPv2: conv outputs become tokens by a transpose of the flattened tensor (``to_tokens``) instead
  of the official 4-D ``permute(0, 2, 3, 1)``, the same values in a layout OpenVINO keeps row-major.

For each model: both layouts exported to ONNX and quantized with the ``cpu`` Q/DQ placement (calibrated
on three packaged photos), each row checked against eager FP32 (the official layout) on views of the
two held-out photos, then timed in ``--rounds`` interleaved rounds (every row once per round, in a
rotated order, so a noisy neighbour hits all rows alike). Ratios are between medians of this one run.

  python benchmarks/layouts.py --models msmlp_tiny s2mlpv2_small
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import FULL, calib_and_held, held_out_parity, timings, write_json

from msmlp.models.s2mlpv2 import to_tokens as TO_TOKENS

LAYOUTS = ("official", "msmlp")


def set_layout(model: Any, layout: str) -> None:
    """Switch ``model`` (in place) to the official layout or msmlp's deployment one."""
    from msmlp.models import s2mlpv2
    from msmlp.models.msmlp import MSMLP, set_channels_first

    if isinstance(model, MSMLP):
        set_channels_first(model, layout == "msmlp")
    else:  # S2-MLPv2 looks the helper up at call time
        s2mlpv2.to_tokens = TO_TOKENS if layout == "msmlp" else _permuted


def _permuted(x: Any) -> Any:
    return x.permute(0, 2, 3, 1)


def export(name: str, out: Path, calib_size: int) -> tuple[Any, dict[str, dict[str, Path]], np.ndarray]:
    """Per layout: model.onnx and its INT8 graph; the eager model (official layout); held-out inputs."""
    from msmlp.exporters.onnx import export_onnx
    from msmlp.exporters.quantize import quantize_int8
    from msmlp.models.weights import load_for_deploy

    model = load_for_deploy(name, None, 0, quiet=True)
    config = model.deploy_config
    calib, held = calib_and_held(config, calib_size)
    graphs = {}
    for layout in LAYOUTS:
        t0 = time.perf_counter()
        set_layout(model, layout)
        folder = out / layout
        folder.mkdir()
        fp32 = export_onnx(model, folder / "model.onnx", config=config, batch=(1, 8, 64), model_name=name)
        int8 = folder / "model.int8.onnx"
        quantize_int8(fp32, int8, calib, target="cpu")
        graphs[layout] = {"fp32": fp32, "int8": int8}
        print(f"{name} {layout}: export and int8 {time.perf_counter() - t0:.0f} s", flush=True)
    set_layout(model, "official")
    return model, graphs, held


def run_model(name: str, rounds: int, calib_size: int) -> dict[str, Any]:
    from msmlp.runtime.openvino import OpenVINOBackend
    from msmlp.runtime.ort import OnnxRuntimeBackend
    from msmlp.verify import tolerance_for

    with tempfile.TemporaryDirectory(prefix="msmlp-forms-") as tmp:
        model, graphs, held = export(name, Path(tmp), calib_size)
        rows = {}
        for layout, g in graphs.items():
            rows[f"ort fp32 {layout}"] = OnnxRuntimeBackend(g["fp32"], threads=2)
            rows[f"ov bf16 {layout}"] = OpenVINOBackend(g["fp32"], inference_precision="bf16")
            rows[f"ov int8 {layout}"] = OpenVINOBackend(g["int8"], inference_precision="bf16")
        for r in rows.values():
            r.load()
        parity = {
            label: {
                "cosine": stats.cosine,
                "max_rel": stats.max_rel,
                "top1": stats.top1,
                "passed": not tolerance_for(rows[label].info.precision).failures(stats),
            }
            for label, stats in held_out_parity(model, rows, held).items()
        }
        ms = timings(rows, rounds)
        for r in rows.values():
            r.close()
    return {
        "model": name,
        "parity": parity,
        "ms": ms,
        "ratios": {b: ratios(by_row) for b, by_row in ms.items()},
    }


def ratios(ms: dict[str, float]) -> dict[str, float]:
    out = {}
    for kind in ("ort fp32", "ov bf16", "ov int8"):
        out[f"{kind}: msmlp layout speed-up"] = ms[f"{kind} official"] / ms[f"{kind} msmlp"]
    for layout in LAYOUTS:
        out[f"{layout}: ov bf16 / ort fp32"] = ms[f"ort fp32 {layout}"] / ms[f"ov bf16 {layout}"]
        out[f"{layout}: ov int8 / ov bf16"] = ms[f"ov bf16 {layout}"] / ms[f"ov int8 {layout}"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=FULL)
    p.add_argument(
        "--rounds", type=int, default=10, help="interleaved rounds at batch 8 (batch 1: twice as many)"
    )
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("layouts.json"))
    args = p.parse_args()
    results = []
    for name in args.models:
        found = run_model(name, args.rounds, args.calib_size)
        results.append(found)
        print(f"\n{name}: {'row':<26} {'b8 ms':>8} {'b1 ms':>8} {'cosine':>10} {'gate':>6}")
        for row, ms8 in found["ms"][8].items():
            par = found["parity"][row]
            ok = "ok" if par["passed"] else "FAIL"
            print(
                f"{'':<{len(name) + 2}}{row:<26} {ms8:>8.1f} {found['ms'][1][row]:>8.1f} {par['cosine']:>10.6f} {ok:>6}"
            )
        for batch, rs in found["ratios"].items():
            print(f"batch {batch}: " + ", ".join(f"{k} {v:.2f}x" for k, v in rs.items()), flush=True)
        write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
