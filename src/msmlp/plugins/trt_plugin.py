"""The shifts as TensorRT plugins, defined with TensorRT's Python plugin API (``tensorrt.plugin``).

:func:`register_trt_plugins` defines ``msmlp::GroupRoll`` and ``msmlp::EdgeShift`` (the node format is
in :mod:`msmlp.plugins.onnx_nodes`); the engine build calls it before parsing an ONNX file exported with
``shift="plugin"``. Each plugin has only an ahead-of-time implementation: at build time TensorRT calls
it, it compiles the Triton kernel for the build GPU and returns the PTX, which TensorRT embeds in the
engine, so running the engine needs neither Python nor triton. Needs TensorRT >= 10.9 and triton.

Triton >= 3.5 appends two pointer parameters (global and profile scratch) to every kernel's PTX entry and
its own launcher passes both. TensorRT's AOT launch passes the inputs, the extra scalar arguments and the
outputs, nothing more, and ``cuLaunchKernel`` reads as many parameter pointers as the entry declares. So
the PTX handed to TensorRT has those two declarations removed (:func:`strip_scratch_params`); that is
sound because the kernels request no scratch memory and never load either parameter (both checked).

Registration is retry-safe: each definition step (register, autotune, aot_impl of each plugin) is recorded
once it succeeded, so a retry after a failure skips what TensorRT's registry already holds.

No ``from __future__ import annotations`` here, on purpose: ``tensorrt.plugin`` reads the plugin
functions' annotations as objects (``issubclass(param.annotation, TensorDesc)``), not as strings.
"""

import re
from collections.abc import Callable
from typing import Any

from msmlp.errors import EngineError, require
from msmlp.plugins.onnx_nodes import EDGE_SHIFT, GROUP_ROLL, NAMESPACE

_done: set[str] = set()  # definition steps that succeeded in this process ("msmlp::GroupRoll/register", ...)
_compiled: dict[str, dict[str, str]] = {}  # kernel name -> the PTX ISA and target handed to TensorRT
_TYPES = "FP32|FP16"
SCRATCH_PARAMS = 2  # Triton >= 3.5: global scratch, profile scratch


def register_trt_plugins() -> None:
    """Define the msmlp plugins in TensorRT's plugin registry (once per process; a failed call can be retried)."""
    steps = _steps()
    if all(key in _done for key in steps):
        return
    trtp = require("tensorrt.plugin", "the msmlp TensorRT shift plugins", "pip install 'msmlp[tensorrt]'")
    require(
        "triton", "the msmlp TensorRT shift plugins (kernels compiled at build time)", "pip install triton"
    )
    definitions = _definitions(trtp)
    for key in steps:
        if key not in _done:
            definitions[key]()
            _done.add(key)


def _steps() -> list[str]:
    return [
        f"{NAMESPACE}::{op}/{step}"
        for op in (GROUP_ROLL, EDGE_SHIFT)
        for step in ("register", "autotune", "aot")
    ]


def _definitions(trtp: Any) -> dict[str, Callable[[], Any]]:
    """Each definition step as a callable, keyed as in :func:`_steps`; nothing is defined until called."""
    import numpy as np
    import numpy.typing as npt

    group_roll, edge_shift = f"{NAMESPACE}::{GROUP_ROLL}", f"{NAMESPACE}::{EDGE_SHIFT}"

    def autotune(x: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(f"{_TYPES}, {_TYPES}")]

    def group_roll_desc(
        x: trtp.TensorDesc, chunks: npt.NDArray[np.int32], shifts: npt.NDArray[np.int32], axis: int
    ) -> trtp.TensorDesc:
        return x.like()

    def group_roll_aot(
        x: trtp.TensorDesc,
        chunks: npt.NDArray[np.int32],
        shifts: npt.NDArray[np.int32],
        axis: int,
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        from msmlp.plugins import kernels as K

        channels = _static(x.shape_expr[1], "GroupRoll channels")
        constexprs = {"C": channels, "AXIS": int(axis), "BLOCK": K.BLOCK}
        constexprs.update(K.group_constexprs(channels, chunks.tolist(), shifts.tolist()))
        return _launch(trtp, K.group_roll_kernel, x, constexprs, h=x.shape_expr[2], w=x.shape_expr[3])

    def edge_shift_desc(x: trtp.TensorDesc, pattern: int) -> trtp.TensorDesc:
        return x.like()

    def edge_shift_aot(
        x: trtp.TensorDesc, pattern: int, outputs: tuple[trtp.TensorDesc], tactic: int
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        from msmlp.plugins import kernels as K

        channels = _static(x.shape_expr[3], "EdgeShift channels")
        constexprs = {"C": channels, "PATTERN": int(pattern), "BLOCK": K.BLOCK}
        return _launch(trtp, K.edge_shift_kernel, x, constexprs, h=x.shape_expr[1], w=x.shape_expr[2])

    return {
        f"{group_roll}/register": lambda: trtp.register(group_roll)(group_roll_desc),
        f"{group_roll}/autotune": lambda: trtp.autotune(group_roll)(autotune),
        f"{group_roll}/aot": lambda: trtp.aot_impl(group_roll)(group_roll_aot),
        f"{edge_shift}/register": lambda: trtp.register(edge_shift)(edge_shift_desc),
        f"{edge_shift}/autotune": lambda: trtp.autotune(edge_shift)(autotune),
        f"{edge_shift}/aot": lambda: trtp.aot_impl(edge_shift)(edge_shift_aot),
    }


def _static(dim: Any, what: str) -> int:
    if not dim.is_constant:
        raise EngineError(
            f"{what} must be static to compile the plugin kernel, got {dim!r}; export with a fixed size"
        )
    return int(dim.constant_value())


KERNEL_ARGS = ("X", "total", "H", "W", "Y")  # what TensorRT passes: input, the three scalars, output


def _launch(trtp: Any, kernel: Any, x: Any, constexprs: dict[str, int], *, h: Any, w: Any) -> tuple:
    """Compile ``kernel`` (X, total, H, W, Y) for the build GPU; return what ``aot_impl`` must return."""
    import tensorrt as trt
    import triton
    from triton.compiler import ASTSource

    from msmlp.plugins.kernels import BLOCK, NUM_WARPS

    ptr = "*fp16" if x.dtype == trt.float16 else "*fp32"
    signature = {"X": ptr, "total": "i32", "H": "i32", "W": "i32", "Y": ptr}
    signature.update({name: "constexpr" for name in constexprs})
    # No divisibility ``attrs``: TensorRT documents 256-byte alignment only for the addresses given to
    # setTensorAddress (the network's own I/O), nothing for plugin tensors inside the network.
    compiled = triton.compile(
        ASTSource(fn=kernel, signature=signature, constexprs=constexprs), options={"num_warps": NUM_WARPS}
    )
    check_no_scratch(compiled)
    ptx = strip_scratch_params(compiled.asm["ptx"], compiled.metadata.name, len(KERNEL_ARGS))
    _compiled[compiled.metadata.name] = ptx_requirements(ptx)
    numel = x.shape_expr.numel()
    params = trtp.KernelLaunchParams()
    params.grid_x = trtp.cdiv(numel, BLOCK)
    params.block_x = compiled.metadata.num_warps * 32
    params.shared_mem = compiled.metadata.shared
    # scalars sit between the input and the output pointers, in the kernel's order
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (numel, h, w)])
    return compiled.metadata.name, ptx, params, extra


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


def ptx_requirements(ptx: str) -> dict[str, str]:
    """The PTX ISA version and target of ``ptx``: what a driver that JIT-compiles it must support."""
    found = {key: re.search(rf"^\s*\.{key}\s+(\S+)", ptx, re.M) for key in ("version", "target")}
    return {"ptx_isa": found["version"].group(1) if found["version"] else "unknown",
            "target": found["target"].group(1) if found["target"] else "unknown"}  # fmt: skip


def compiled_ptx() -> dict[str, dict[str, str]]:
    """PTX ISA and target of each kernel compiled for TensorRT in this process, for the plan's sidecar."""
    return {name: dict(req) for name, req in sorted(_compiled.items())}


def entry_params(ptx: str, name: str) -> tuple[re.Match[str], list[str]]:
    """The ``.entry name(...)`` match and its ``.param`` declarations, in order."""
    entry = re.search(rf"\.entry\s+{re.escape(name)}\s*\((.*?)\)", ptx, re.S)
    if entry is None:
        raise EngineError(f"the PTX of kernel {name} has no .entry {name}; Triton's PTX format changed")
    return entry, [p.strip() for p in entry.group(1).split(",") if p.strip()]


def strip_scratch_params(ptx: str, name: str, ours: int) -> str:
    """``ptx`` with Triton's two trailing scratch-pointer parameters removed from the entry of ``name``.

    The entry then declares exactly the ``ours`` parameters TensorRT's launch passes. A PTX without the
    two (Triton < 3.5) is returned as it is; any other count, or a body that reads a removed parameter,
    is refused rather than launched with a parameter array of the wrong length.
    """
    entry, params = entry_params(ptx, name)
    if len(params) == ours:
        return ptx
    if len(params) != ours + SCRATCH_PARAMS:
        raise EngineError(
            f"kernel {name} declares {len(params)} parameters; TensorRT passes {ours} "
            f"(plus Triton's {SCRATCH_PARAMS} scratch pointers would be {ours + SCRATCH_PARAMS})"
        )
    removed = [p.split()[-1] for p in params[ours:]]
    body = ptx[entry.end() :]
    if any(re.search(rf"\b{re.escape(r)}\b", body) for r in removed):
        raise EngineError(
            f"kernel {name} reads its scratch parameters {removed}; it cannot run as a TensorRT plugin"
        )
    kept = ",\n\t".join(params[:ours])
    stripped = f"{ptx[: entry.start(1)]}\n\t{kept}\n{ptx[entry.end(1) :]}"
    if len(entry_params(stripped, name)[1]) != ours:
        raise EngineError(f"stripping the scratch parameters of kernel {name} left a malformed entry")
    return stripped
