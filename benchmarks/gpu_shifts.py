"""GPU benchmark of the shift kernels and the plugin engine; run on a machine with a CUDA GPU.

    python benchmarks/gpu_shifts.py [--model s2mlpv2_small] [--batch 8] [--fp16]

1. Each Triton kernel's achieved bandwidth (bytes read + written per second) next to a device-to-device
   copy of the same bytes, at the shapes of the model's blocks: a memory-bound kernel is as good as it
   gets when it reaches the copy.
2. With TensorRT: end-to-end latency of an engine built from the ``shift="plugin"`` export against one
   from the default Slice/Concat export.

Without a GPU (or without TensorRT for part 2) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch


def cuda_time_ms(fn, repeat: int = 50) -> float:
    """Median of ``repeat`` CUDA-event timings after a warm-up."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernel_bandwidth(batch: int, dtype: torch.dtype) -> list[tuple[str, float, float]]:
    from msmlp.models.layers import SHIFT1
    from msmlp.models.s2mlpv2 import SplitAttention
    from msmlp.plugins import torch_ops

    rows = []

    def row(name: str, fn, nbytes: int) -> None:
        src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        kernel_ms, copy_ms = cuda_time_ms(fn), cuda_time_ms(lambda: dst.copy_(src))
        rows.append((name, nbytes / kernel_ms / 1e6, nbytes / copy_ms / 1e6))

    x = torch.randn(batch, 96, 56, 56, device="cuda", dtype=dtype)  # MS-MLP-Tiny stage 1
    row(
        "group_roll 96x56x56",
        lambda: torch_ops.group_roll(x, [20, 19, 19, 19, 19], range(-2, 3), 3),
        2 * x.nbytes,
    )
    t = torch.randn(batch, 32, 32, 192, device="cuda", dtype=dtype)  # S2-MLPv2-Small stage 1
    row("edge_shift 32x32x192", lambda: torch_ops.edge_shift(t, SHIFT1), 2 * t.nbytes)
    y = torch.randn(batch, 32, 32, 576, device="cuda", dtype=dtype)
    attn = SplitAttention(192).to("cuda", dtype)
    with torch.no_grad():
        row(
            "split_attention 32x32x3*192",
            lambda: torch_ops.split_attention(y, attn),
            y.nbytes + y.nbytes // 3,
        )
    return rows


def engine_latency(model_name: str, batch: int) -> list[tuple[str, float]]:
    import tensorrt as trt

    import msmlp
    from msmlp.exporters.onnx import export_onnx
    from msmlp.plugins import register_trt_plugins

    register_trt_plugins()
    config, model = msmlp.get_config(model_name), msmlp.create_model(model_name).eval()
    logger = trt.Logger(trt.Logger.WARNING)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shift in ("slice", "plugin"):
            path = export_onnx(
                model, Path(tmp) / f"{shift}.onnx", config=config, shift=shift, batch=(batch,) * 3
            )
            builder = trt.Builder(logger)
            network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
            parser = trt.OnnxParser(network, logger)
            if not parser.parse_from_file(str(path)):
                raise SystemExit(f"{shift}: parse failed: {parser.get_error(0)}")
            build = builder.create_builder_config()
            profile = builder.create_optimization_profile()
            shape = (batch, *config.input_size)
            profile.set_shape(network.get_input(0).name, shape, shape, shape)
            build.add_optimization_profile(profile)
            engine = trt.Runtime(logger).deserialize_cuda_engine(
                builder.build_serialized_network(network, build)
            )
            context = engine.create_execution_context()
            inp = torch.randn(shape, device="cuda")
            out = torch.empty((batch, config.num_classes), device="cuda")
            context.set_input_shape(engine.get_tensor_name(0), shape)
            context.set_tensor_address(engine.get_tensor_name(0), inp.data_ptr())
            context.set_tensor_address(engine.get_tensor_name(1), out.data_ptr())
            stream = torch.cuda.current_stream().cuda_stream
            results.append((shift, cuda_time_ms(lambda c=context, s=stream: c.execute_async_v3(s))))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="s2mlpv2_small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--fp16", action="store_true", help="kernels on float16 (engines stay as exported)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU on this machine (the kernels are checked on the CPU by tests/plugins)")
        return 0
    import msmlp.plugins  # noqa: F401 - installs the CUDA kernels

    print(f"device: {torch.cuda.get_device_name()}, batch {args.batch}")
    print(f"{'kernel':32} {'GB/s':>8} {'copy GB/s':>10} {'of copy':>8}")
    for name, gbs, copy_gbs in kernel_bandwidth(args.batch, torch.float16 if args.fp16 else torch.float32):
        print(f"{name:32} {gbs:8.0f} {copy_gbs:10.0f} {gbs / copy_gbs:8.0%}")
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        print(f"engine latency skipped: TensorRT is not importable ({exc})")
        return 0
    for shift, ms in engine_latency(args.model, args.batch):
        print(f"{args.model} engine, shift={shift}: {ms:.3f} ms at batch {args.batch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
