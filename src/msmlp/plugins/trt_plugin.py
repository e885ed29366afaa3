"""The shifts as TensorRT plugins, defined with TensorRT's Python plugin API (``tensorrt.plugin``).

:func:`register_trt_plugins` defines ``msmlp::GroupRoll`` and ``msmlp::EdgeShift`` (the node format is
in :mod:`msmlp.plugins.onnx_nodes`); the engine build calls it before parsing an ONNX file exported with
``shift="plugin"``. Each plugin has only an ahead-of-time implementation: at build time TensorRT calls
it, it compiles the Triton kernel for the build GPU and returns the PTX, which TensorRT embeds in the
engine, so running the engine needs neither Python nor triton. Needs TensorRT >= 10.9 and triton.

Triton >= 3.5 appends two hidden pointer parameters (global and profile scratch) to every kernel's PTX
entry. TensorRT's own quickly-deployable-plugins sample (TensorRT 10.16-11.x, pinned to triton 3.5.0)
and Torch-TensorRT's AOT plugin path return that PTX unchanged, without rewriting or extra launch
arguments; the kernels here never read those parameters (asserted below: no scratch is requested), so
whatever value the launch leaves in them is never dereferenced.

No ``from __future__ import annotations`` here, on purpose: ``tensorrt.plugin`` reads the plugin
functions' annotations as objects (``issubclass(param.annotation, TensorDesc)``), not as strings.
"""

from typing import Any

from msmlp.errors import EngineError, require
from msmlp.plugins.onnx_nodes import EDGE_SHIFT, GROUP_ROLL, NAMESPACE

_registered = False
_TYPES = "FP32|FP16"


def register_trt_plugins() -> None:
    """Define the msmlp plugins in TensorRT's plugin registry (once per process)."""
    global _registered
    if _registered:
        return
    trtp = require("tensorrt.plugin", "the msmlp TensorRT shift plugins", "pip install 'msmlp[tensorrt]'")
    require(
        "triton", "the msmlp TensorRT shift plugins (kernels compiled at build time)", "pip install triton"
    )
    _define(trtp)
    _registered = True


def _define(trtp: Any) -> None:
    import numpy as np
    import numpy.typing as npt

    from msmlp.plugins import kernels as K

    def autotune(x: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(f"{_TYPES}, {_TYPES}")]

    @trtp.register(f"{NAMESPACE}::{GROUP_ROLL}")
    def group_roll_desc(
        x: trtp.TensorDesc, chunks: npt.NDArray[np.int32], shifts: npt.NDArray[np.int32], axis: int
    ) -> trtp.TensorDesc:
        return x.like()

    trtp.autotune(f"{NAMESPACE}::{GROUP_ROLL}")(autotune)

    @trtp.aot_impl(f"{NAMESPACE}::{GROUP_ROLL}")
    def group_roll_aot(
        x: trtp.TensorDesc,
        chunks: npt.NDArray[np.int32],
        shifts: npt.NDArray[np.int32],
        axis: int,
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        channels = _static(x.shape_expr[1], "GroupRoll channels")
        constexprs = {"C": channels, "AXIS": int(axis), "BLOCK": K.BLOCK}
        constexprs.update(K.group_constexprs(channels, chunks.tolist(), shifts.tolist()))
        return _launch(trtp, K.group_roll_kernel, x, constexprs, h=x.shape_expr[2], w=x.shape_expr[3])

    @trtp.register(f"{NAMESPACE}::{EDGE_SHIFT}")
    def edge_shift_desc(x: trtp.TensorDesc, pattern: int) -> trtp.TensorDesc:
        return x.like()

    trtp.autotune(f"{NAMESPACE}::{EDGE_SHIFT}")(autotune)

    @trtp.aot_impl(f"{NAMESPACE}::{EDGE_SHIFT}")
    def edge_shift_aot(
        x: trtp.TensorDesc, pattern: int, outputs: tuple[trtp.TensorDesc], tactic: int
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        channels = _static(x.shape_expr[3], "EdgeShift channels")
        constexprs = {"C": channels, "PATTERN": int(pattern), "BLOCK": K.BLOCK}
        return _launch(trtp, K.edge_shift_kernel, x, constexprs, h=x.shape_expr[1], w=x.shape_expr[2])


def _static(dim: Any, what: str) -> int:
    if not dim.is_constant:
        raise EngineError(
            f"{what} must be static to compile the plugin kernel, got {dim!r}; export with a fixed size"
        )
    return int(dim.constant_value())


def _launch(trtp: Any, kernel: Any, x: Any, constexprs: dict[str, int], *, h: Any, w: Any) -> tuple:
    """Compile ``kernel`` (X, total, H, W, Y) for the build GPU; return what ``aot_impl`` must return."""
    import tensorrt as trt
    import triton
    from triton.compiler import ASTSource

    from msmlp.plugins.kernels import BLOCK, NUM_WARPS

    ptr = "*fp16" if x.dtype == trt.float16 else "*fp32"
    signature = {"X": ptr, "total": "i32", "H": "i32", "W": "i32", "Y": ptr}
    signature.update({name: "constexpr" for name in constexprs})
    compiled = triton.compile(
        ASTSource(fn=kernel, signature=signature, constexprs=constexprs), options={"num_warps": NUM_WARPS}
    )
    check_no_scratch(compiled)
    numel = x.shape_expr.numel()
    params = trtp.KernelLaunchParams()
    params.grid_x = trtp.cdiv(numel, BLOCK)
    params.block_x = compiled.metadata.num_warps * 32
    params.shared_mem = compiled.metadata.shared
    # scalars sit between the input and the output pointers, in the kernel's order
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (numel, h, w)])
    return compiled.metadata.name, compiled.asm["ptx"], params, extra


def check_no_scratch(compiled: Any) -> None:
    """Refuse a kernel that needs Triton's scratch buffers: the AOT launch does not allocate them."""
    sizes = (
        compiled.metadata.global_scratch_size or 0,
        getattr(compiled.metadata, "profile_scratch_size", 0) or 0,
    )
    if any(sizes):
        raise EngineError(
            f"kernel {compiled.metadata.name} asks for Triton scratch memory (global, profile = {sizes} bytes), "
            "which TensorRT's AOT plugin launch does not provide; use a kernel without it"
        )
