"""GPU benchmark of the shift kernels and the plugin engine; run on a machine with a CUDA GPU.

    python benchmarks/gpu_shifts.py [--model s2mlpv2_small] [--batch 8] [--fp16]

1. The PTX the TensorRT plugin embeds (Triton's two scratch parameters stripped), loaded through the
   driver's PTX JIT and launched with exactly the parameters TensorRT's AOT launch passes (input,
   total, H, W, output), equals the reference shift. Needs no TensorRT; exits 1 when it does not hold.
2. Each Triton kernel's achieved bandwidth (bytes read + written per second) next to a device-to-device
   copy of the same bytes, at the shapes of the model's blocks: a memory-bound kernel is as good as it
   gets when it reaches the copy.
3. With TensorRT: end-to-end latency of an engine built from the ``shift="plugin"`` export against one
   from the default Slice/Concat export.

Without a GPU (or without TensorRT for part 3) it says so and exits 0. Run it, and the ``gpu`` and
``tensorrt`` tests, first on a machine with a GPU (docs/tensorrt.md says what only they can confirm).
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


def _cuda_check(result: int, what: str) -> None:
    if result != 0:
        raise RuntimeError(
            f"{what} failed with CUresult {result} (222: the driver is older than the PTX ISA)"
        )


def plugin_ptx_launch(kernel, x: torch.Tensor, h: int, w: int, constexprs: dict) -> tuple[str, torch.Tensor]:
    """Launch the stripped plugin PTX of ``kernel`` as TensorRT does: driver JIT, five parameters, no more."""
    import ctypes
    import re

    import triton
    from triton.compiler import ASTSource

    from msmlp.plugins import kernels as K
    from msmlp.plugins.trt_plugin import KERNEL_ARGS, check_no_scratch, strip_scratch_params

    y = torch.full_like(x, float("nan"))
    ptr = "*fp16" if x.dtype == torch.float16 else "*fp32"
    constexprs = {**constexprs, "BLOCK": K.BLOCK}
    signature = {"X": ptr, "total": "i32", "H": "i32", "W": "i32", "Y": ptr}
    signature.update({name: "constexpr" for name in constexprs})
    compiled = triton.compile(
        ASTSource(fn=kernel, signature=signature, constexprs=constexprs), options={"num_warps": K.NUM_WARPS}
    )
    check_no_scratch(compiled)
    ptx = strip_scratch_params(compiled.asm["ptx"], compiled.metadata.name, len(KERNEL_ARGS))
    isa = re.search(r"^\.version\s+(\S+)", ptx, re.M).group(1)
    target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    cuda = ctypes.CDLL("libcuda.so.1")
    torch.cuda.synchronize()  # torch made the device's primary context current in this thread
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    loaded = cuda.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(ptx.encode()))
    _cuda_check(loaded, "cuModuleLoadData")
    try:
        name = compiled.metadata.name.encode()
        _cuda_check(cuda.cuModuleGetFunction(ctypes.byref(function), module, name), "cuModuleGetFunction")
        args = [ctypes.c_void_p(x.data_ptr()), ctypes.c_int32(x.numel()), ctypes.c_int32(h),
                ctypes.c_int32(w), ctypes.c_void_p(y.data_ptr())]  # fmt: skip
        params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
        grid, block = triton.cdiv(x.numel(), K.BLOCK), compiled.metadata.num_warps * 32
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        launch = cuda.cuLaunchKernel(
            function, grid, 1, 1, block, 1, 1, compiled.metadata.shared, stream, params, None
        )
        _cuda_check(launch, "cuLaunchKernel")
        torch.cuda.synchronize()
    finally:
        cuda.cuModuleUnload(module)
    return f"PTX ISA {isa}, {target}, {len(KERNEL_ARGS)} parameters", y


def plugin_ptx_checks(dtype: torch.dtype) -> list[tuple[str, str, bool]]:
    """Both plugin kernels, launched as TensorRT launches them, against the reference shifts."""
    from msmlp.models.layers import SHIFT2, edge_shift_reference, roll_reference
    from msmlp.models.msmlp import SHIFT_DIST, chunk_sizes
    from msmlp.plugins import kernels as K

    rows = []
    t = torch.randn(2, 14, 14, 64, device="cuda", dtype=dtype)  # N,H,W,C
    what, got = plugin_ptx_launch(K.edge_shift_kernel, t, 14, 14, {"C": 64, "PATTERN": 2})
    rows.append(("EdgeShift", what, torch.equal(got.cpu(), edge_shift_reference(t.cpu(), SHIFT2))))
    x = torch.randn(2, 23, 9, 7, device="cuda", dtype=dtype)  # N,C,H,W; 23 channels: uneven groups
    chunks, shifts = chunk_sizes(23, len(SHIFT_DIST)), list(SHIFT_DIST)
    constexprs = {"C": 23, "AXIS": 3, **K.group_constexprs(23, chunks, shifts)}
    what, got = plugin_ptx_launch(K.group_roll_kernel, x, 9, 7, constexprs)
    groups = torch.split(x.cpu(), chunks, 1)
    expected = torch.cat([roll_reference(g, s, 3) for g, s in zip(groups, shifts)], 1)
    rows.append(("GroupRoll", what, torch.equal(got.cpu(), expected)))
    return rows


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
    failed = False
    for dtype in (torch.float32, torch.float16):
        for plugin, what, ok in plugin_ptx_checks(dtype):
            failed |= not ok
            verdict = "equals the reference" if ok else "DIFFERS from the reference"
            print(f"{plugin} PTX launched as TensorRT does ({what}), {dtype}: {verdict}")
    print(f"{'kernel':32} {'GB/s':>8} {'copy GB/s':>10} {'of copy':>8}")
    for name, gbs, copy_gbs in kernel_bandwidth(args.batch, torch.float16 if args.fp16 else torch.float32):
        print(f"{name:32} {gbs:8.0f} {copy_gbs:10.0f} {gbs / copy_gbs:8.0%}")
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        print(f"engine latency skipped: TensorRT is not importable ({exc})")
        return int(failed)
    for shift, ms in engine_latency(args.model, args.batch):
        print(f"{args.model} engine, shift={shift}: {ms:.3f} ms at batch {args.batch}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
