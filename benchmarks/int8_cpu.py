"""INT8 on the CPU: ModelOpt's TensorRT Q/DQ placement against the ``cpu`` placement (Q/DQ only on
MatMul/Gemm/Conv inputs), on OpenVINO and ONNX Runtime, against the CPU default (OpenVINO, bf16 hint on
the FP32 graph): one interleaved run per model, plus OpenVINO's per-layer counts that explain it.

For each model: export model.onnx, quantize it twice (``target="tensorrt"`` and ``target="cpu"``),
calibrated on astronaut/brick/coffee (``split_calibration``), and check every row against eager FP32 on
held-out inputs (grass/rocket and augmented views of them). A third INT8 file, ``cpu u8``, re-encodes the
cpu placement's symmetric s8 activations as u8 with zero point 128 (the same grid, so the same numbers) to
see whether either runtime prefers u8 activations. Timing: ``--rounds`` rounds, each calling every row
once in a rotated order, so a noisy neighbour on the shared cores hits all rows alike; figures are
medians and ratios within this one run.

  python benchmarks/int8_cpu.py --models s2mlpv2_small msmlp_tiny
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from bench_common import held_out_parity, timings, write_json

BASELINE = "ov bf16 (default)"
PROFILED = (BASELINE, "ov int8 trt (bf16 hint)", "ov int8 cpu (bf16 hint)")


def export(name: str, out: Path, calib_size: int) -> tuple[Any, dict[str, Path], np.ndarray, dict]:
    """model.onnx and the INT8 files in ``out``; held-out inputs; the quantization info dicts."""
    from msmlp.data.transforms import augmented, builtin_images, load_image, preprocess
    from msmlp.exporters.calibration import calibration_batch, split_calibration
    from msmlp.exporters.onnx import export_onnx
    from msmlp.exporters.quantize import quantize_int8
    from msmlp.models.weights import load_for_deploy

    model = load_for_deploy(name, None, 0, quiet=True)
    config = model.deploy_config
    t0 = time.perf_counter()
    files = {"fp32": export_onnx(model, out / "model.onnx", config=config, batch=(1, 8, 64), model_name=name)}
    calib_files, held_files = split_calibration(builtin_images())
    calib = calibration_batch(config, calib_files, calib_size)
    info = {}
    for target in ("tensorrt", "cpu"):
        t1 = time.perf_counter()
        files[target] = out / f"model.int8.{target}.onnx"
        info[target] = quantize_int8(files["fp32"], files[target], calib, target=target)
        print(f"{name}: int8 {target} {time.perf_counter() - t1:.0f} s", flush=True)
    files["cpu u8"] = out / "model.int8.cpu-u8.onnx"
    onnx.save(u8_activations(onnx.load(str(files["cpu"]))), str(files["cpu u8"]))
    print(f"{name}: export and quantization {time.perf_counter() - t0:.0f} s", flush=True)
    held = [load_image(f) for f in held_files]
    return model, files, preprocess(augmented(held, 32, seed=2), config), info


def u8_activations(model: onnx.ModelProto) -> onnx.ModelProto:
    """Activation Q/DQ pairs re-encoded from s8 (zero point 0) to u8 (zero point 128): the same
    quantization grid, so the same results; only the integer type the runtimes see changes."""
    g = model.graph
    zp = onnx.helper.make_tensor("msmlp_act_zp_u8", onnx.TensorProto.UINT8, [], [128])
    g.initializer.append(zp)
    quantized = {n.output[0] for n in g.node if n.op_type == "QuantizeLinear"}
    for n in g.node:
        if n.op_type == "QuantizeLinear" or (n.op_type == "DequantizeLinear" and n.input[0] in quantized):
            while len(n.input) < 3:
                n.input.append("")
            n.input[2] = zp.name
    return model


def verify_rows(model: Any, rows: dict[str, Any], held: np.ndarray) -> dict[str, dict]:
    """Each row's parity with eager FP32 on the held-out inputs, and whether it passes INT8's gate."""
    from msmlp.verify import tolerance_for

    return {
        label: {**stats.to_dict(), "passed_int8_gate": not tolerance_for("int8").failures(stats)}
        for label, stats in held_out_parity(model, rows, held).items()
    }


def run_model(name: str, rounds: int, calib_size: int, profile_runs: int) -> dict[str, Any]:
    from msmlp.runtime.openvino import OpenVINOBackend
    from msmlp.runtime.ort import OnnxRuntimeBackend

    with tempfile.TemporaryDirectory(prefix="msmlp-int8cpu-") as tmp:
        out = Path(tmp)
        model, files, held, info = export(name, out, calib_size)
        cache = out / "ovcache"

        def ov(path: Path, hint: str | None) -> OpenVINOBackend:
            return OpenVINOBackend(path, inference_precision=hint, cache_dir=cache)

        rows = {
            BASELINE: ov(files["fp32"], "bf16"),
            "ov int8 trt (f32 hint)": ov(files["tensorrt"], None),
            "ov int8 trt (bf16 hint)": ov(files["tensorrt"], "bf16"),
            "ov int8 cpu (f32 hint)": ov(files["cpu"], None),
            "ov int8 cpu (bf16 hint)": ov(files["cpu"], "bf16"),
            "ov int8 cpu u8 (bf16 hint)": ov(files["cpu u8"], "bf16"),
            "ort int8 trt": OnnxRuntimeBackend(files["tensorrt"]),
            "ort int8 cpu": OnnxRuntimeBackend(files["cpu"]),
            "ort int8 cpu u8": OnnxRuntimeBackend(files["cpu u8"]),
        }
        for r in rows.values():
            r.load()
        parity = verify_rows(model, rows, held)
        executed = {
            k: r.info.details.get("execution_precision") for k, r in rows.items() if k.startswith("ov")
        }
        ms = timings(rows, rounds)
        x = np.random.default_rng(0).standard_normal((8, *rows[BASELINE].input_shape[1:]), dtype=np.float32)
        profiles = _profiles(rows, x, profile_runs)
        for r in rows.values():
            r.close()
    quant = {
        t: {
            k: i[k]
            for k in ("activation_qdq", "dequantize_nodes", "weights_per_channel", "quantized_op_types")
        }
        for t, i in info.items()
    }
    return {
        "model": name,
        "quantization": quant,
        "parity": parity,
        "execution_precision": executed,
        "ms": ms,
        "profile_batch8_ms": profiles,
    }


def _profiles(rows: dict[str, Any], x: np.ndarray, runs: int, repeats: int = 3) -> dict[str, dict]:
    """Per-layer-type counts of the profiled rows, taken in turns ``repeats`` times; each row keeps its
    quickest turn, so a burst from a neighbour on the shared cores lands on one turn, not on one row."""
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for k in PROFILED:
            found = by_layer_type(rows[k].perf_counters(x, runs))
            if k not in best or found["total"] < best[k]["total"]:
                best[k] = found
    return best


def by_layer_type(profile: dict[str, Any]) -> dict[str, float]:
    """OpenVINO's per-layer times summed by layer type and kernel precision, largest first."""
    totals: dict[str, float] = defaultdict(float)
    for node in profile["nodes"]:
        totals[f"{node['op']} {node['precision']}"] += node["ms_per_run"]
    totals["total"] = sum(n["ms_per_run"] for n in profile["nodes"])
    return dict(sorted(((k, round(v, 1)) for k, v in totals.items()), key=lambda kv: -kv[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["s2mlpv2_small", "msmlp_tiny"])
    p.add_argument(
        "--rounds", type=int, default=8, help="interleaved rounds at batch 8 (batch 1: twice as many)"
    )
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument("--profile-runs", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("int8_cpu.json"))
    args = p.parse_args()
    results = []
    for name in args.models:
        found = run_model(name, args.rounds, args.calib_size, args.profile_runs)
        found["speedup_vs_default"] = {
            b: {k: ms[BASELINE] / v for k, v in ms.items()} for b, ms in found["ms"].items()
        }
        results.append(found)
        _print(found)
        write_json(args.out, results)
    return 0


def _print(found: dict[str, Any]) -> None:
    print(f"\n{found['model']}: quantization {found['quantization']}")
    print(
        f"{'row':<28} {'b8 ms':>8} {'x':>5} {'b1 ms':>8} {'x':>5} {'cosine':>9} {'top1':>5} {'dec.':>5} gate"
    )
    speed = found["speedup_vs_default"]
    for row, ms8 in found["ms"][8].items():
        par = found["parity"][row]
        print(
            f"{row:<28} {ms8:>8.1f} {speed[8][row]:>5.2f} {found['ms'][1][row]:>8.1f} {speed[1][row]:>5.2f} "
            f"{par['cosine']:>9.5f} {par['top1']:>5.0%} {par['top1_decisive']:>5.0%} "
            f"{'pass' if par['passed_int8_gate'] else 'FAIL'}"
        )
    print(f"execution precision: {found['execution_precision']}")
    for row, layers in found["profile_batch8_ms"].items():
        top = ", ".join(f"{k} {v}" for k, v in list(layers.items())[:9])
        print(f"perf counts b8 {row}: {top}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
