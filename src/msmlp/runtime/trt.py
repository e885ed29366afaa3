"""TensorRT engines behind the backend protocol: pinned host buffers, async copies, optional CUDA graphs.

Loading reads the plan once, checks those bytes against the sidecar (TensorRT version, GPU, hash: see
:func:`msmlp.exporters.trt_common.check_plan_metadata`) and deserializes the same bytes. Everything runs on the
backend's own non-blocking stream; a backend instance is used from one thread at a time (open one per
stream for concurrency), and each call makes the backend's device current in the calling thread.

CUDA graphs: a graph replays the kernels, addresses and shapes it recorded, so one recorded at batch 4 is
wrong after the context was set to batch 2. Each captured batch size therefore gets its own execution
context whose shape never changes; all contexts share one scratch allocation (``USER_MANAGED``), which is
safe because they only ever run in order on the one stream. The warm-up enqueue a shape change needs is
synchronized before capturing (as trtexec does). Any capture failure (begin, a refused enqueue, end,
instantiate) frees what it made, logs once, and the backend carries on without graphs.

Plans with msmlp's shift plugins hold their kernels ahead-of-time compiled, so opening one needs only
TensorRT: the Python plugin definitions (and triton, torch, onnx behind them) are for the build.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msmlp.artifacts import read_artifact
from msmlp.errors import EngineError, InputError
from msmlp.exporters.trt_common import (
    capture_errors,
    check_aligned,
    cuda_call,
    errors_text,
    import_tensorrt,
    load_plugins,
    numpy_dtype,
    process_logger,
    read_checked_plan,
    set_device,
    torch_dtype,
)
from msmlp.log import logger

if TYPE_CHECKING:  # never imported at run time; lets shared/tools/trt_api_names.py check this file
    import tensorrt as trt  # noqa: F401
from msmlp.runtime.base import Backend, BackendInfo
from msmlp.runtime.registry import BackendSpec, Probe, Request, Rows, Sources


@dataclass
class GraphSlot:
    """One captured graph and the context (and input shape) it was recorded with."""

    context: Any
    shape: tuple[int, ...]
    graph: Any = None
    graph_exec: Any = None


class GraphCache:
    """Graphs keyed by input shape; each slot owns a context that is set to that shape exactly once."""

    def __init__(self) -> None:
        self.slots: dict[tuple[int, ...], GraphSlot] = {}

    def get(self, shape: tuple[int, ...]) -> GraphSlot | None:
        slot = self.slots.get(tuple(shape))
        return (
            slot if slot is not None and slot.shape == tuple(shape) and slot.graph_exec is not None else None
        )

    def add(self, slot: GraphSlot) -> GraphSlot:
        if slot.shape in self.slots:
            raise EngineError(f"a CUDA graph for input shape {slot.shape} is already cached")
        self.slots[slot.shape] = slot
        return slot

    def pop_all(self) -> list[GraphSlot]:
        slots, self.slots = list(self.slots.values()), {}
        return slots


class TensorRTBackend(Backend):
    """Run a TensorRT plan built by ``msmlp build`` (its ``<plan>.json`` sidecar is required)."""

    name = "tensorrt"

    def __init__(
        self,
        plan_path: str | Path,
        *,
        expected_model: str | None = None,
        device: int = 0,
        cuda_graphs: bool = False,
    ) -> None:
        super().__init__()
        self.plan_path = Path(plan_path)
        self.expected_model = expected_model
        self.device = int(device)
        self.cuda_graphs = bool(cuda_graphs)
        self.metadata: dict[str, Any] = {}
        self._cudart: Any = None
        self._trt: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._events: list[Any] = []  # [their input ready, our work done] for infer_torch
        self._scratch: tuple[int, int] = (0, 0)  # shared context memory: pointer, bytes
        self._buffers: dict[str, int] = {}  # name -> device pointer
        self._host: dict[str, np.ndarray] = {}  # name -> pinned host array (max batch)
        self._host_ptrs: list[int] = []
        self._graphs = GraphCache()
        self._in, self._out = "input", "logits"  # the engine's tensor names, read when it loads
        self._input_shape: tuple[int, ...] = (-1,)
        self._batch_range = (1, 1)
        self._max_shape: tuple[int, ...] = ()

    # -- lifecycle ---------------------------------------------------------------------------------
    def _load(self) -> BackendInfo:
        expected = {"model": self.expected_model} if self.expected_model else None
        data, self.metadata = read_checked_plan(self.plan_path, expected, device=self.device)
        self._trt = import_tensorrt()
        try:
            self._open(data)
            return BackendInfo.of_artifact(
                read_artifact(self.plan_path),
                backend=self.name,
                precision=str(self.metadata.get("precision", "unknown")),
                input_name=self._in,
                input_shape=self._input_shape,
                output_name=self._out,
                batch_range=self._batch_range,
                details={
                    "plan": str(self.plan_path),
                    "cuda_graphs": self.cuda_graphs,
                    "device": self.device,
                    "tensorrt_version": self.metadata.get("tensorrt_version"),
                    "gpu": self.metadata.get("gpu"),
                },
            )
        except BaseException:
            self._close()  # free what was opened before the failure, however late it came
            raise

    def _open(self, data: bytes) -> None:
        """Deserialize, create the context and stream, and allocate the buffers."""
        trt, cudart = self._trt, set_device(self.device)
        self._cudart = cudart
        log = process_logger()
        load_plugins(self.metadata.get("plugins", []))  # shift plugins: AOT kernels, already in the plan
        self._runtime = trt.Runtime(log)
        with capture_errors() as errors:
            self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise EngineError(f"TensorRT could not deserialize {self.plan_path}: {errors_text(errors)}")
        self._read_io()
        size = max(int(self._engine.device_memory_size_v2), 1)
        self._scratch = (cuda_call(cudart.cudaMalloc(size), f"cudaMalloc({size})"), size)
        self._context = self._new_context()
        self._stream = cuda_call(
            cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )
        for _ in range(2):  # [their input ready, our work done] for infer_torch
            event = cudart.cudaEventCreateWithFlags(cudart.cudaEventDisableTiming)
            self._events.append(cuda_call(event, "cudaEventCreateWithFlags"))
        self._allocate()

    def _new_context(self) -> Any:
        """An execution context on the shared scratch memory (contexts run one at a time on our stream)."""
        trt = self._trt
        ctx = self._engine.create_execution_context(
            strategy=trt.ExecutionContextAllocationStrategy.USER_MANAGED
        )
        if ctx is None:
            raise EngineError(f"TensorRT could not create an execution context for {self.plan_path}")
        ctx.set_device_memory(*self._scratch)
        return ctx

    def _read_io(self) -> None:
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        # Compared by name: the enum is TensorIOMode.INPUT / OUTPUT in TensorRT 10 and 11 alike.
        modes = {n: engine.get_tensor_mode(n).name for n in names}
        inputs = [n for n in names if modes[n] == "INPUT"]
        outputs = [n for n in names if modes[n] == "OUTPUT"]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(
                f"{self.plan_path} has inputs {inputs} and outputs {outputs}; expected one of each"
            )
        self._in, self._out = inputs[0], outputs[0]
        self._trt_dtypes = {n: engine.get_tensor_dtype(n) for n in names}
        self._dtypes = {n: numpy_dtype(t) for n, t in self._trt_dtypes.items()}
        lo, _opt, hi = engine.get_tensor_profile_shape(self._in, 0)
        self._max_shape = tuple(hi)
        self._input_shape = (-1, *tuple(lo)[1:])
        self._batch_range = (int(lo[0]), int(hi[0]))

    def _allocate(self) -> None:
        """Device and pinned host buffers for the largest batch, allocated once and reused."""
        cudart = self._cudart
        out_shape = self._set_shape(self._context, self._max_shape)
        for name, shape in ((self._in, self._max_shape), (self._out, out_shape)):
            dtype = self._dtypes[name]
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self._buffers[name] = cuda_call(cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})")
            host_ptr = cuda_call(cudart.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})")
            self._host_ptrs.append(host_ptr)
            raw = (ctypes.c_byte * nbytes).from_address(int(host_ptr))
            self._host[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)

    def _close(self) -> None:
        cudart = self._cudart
        if cudart is None:
            return
        cudart.cudaSetDevice(self.device)
        if self._stream is not None:  # outstanding work (infer_torch does not sync) must finish first
            cudart.cudaStreamSynchronize(self._stream)
        for slot in self._graphs.pop_all():
            if slot.graph_exec is not None:
                cudart.cudaGraphExecDestroy(slot.graph_exec)
            if slot.graph is not None:
                cudart.cudaGraphDestroy(slot.graph)
        self._host.clear()
        for ptr in (*self._buffers.values(), self._scratch[0]):
            if ptr:
                cudart.cudaFree(ptr)
        for ptr in self._host_ptrs:
            cudart.cudaFreeHost(ptr)
        for event in self._events:
            cudart.cudaEventDestroy(event)
        self._buffers.clear()
        self._host_ptrs.clear()
        self._events.clear()
        self._scratch = (0, 0)
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = self._engine = self._runtime = None

    # -- inference ---------------------------------------------------------------------------------
    def _set_shape(self, ctx: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Set the input shape (checked) and return the output shape it implies."""
        if not ctx.set_input_shape(self._in, tuple(shape)):
            raise InputError(
                f"{self.name}: TensorRT rejected input shape {tuple(shape)} for {self.plan_path}"
            )
        return tuple(ctx.get_tensor_shape(self._out))

    def _set_addresses(self, ctx: Any, addresses: dict[str, int]) -> None:
        for name, ptr in addresses.items():
            check_aligned(name, ptr)
            if not ctx.set_tensor_address(name, int(ptr)):
                raise EngineError(f"TensorRT refused the address of tensor {name!r} in {self.plan_path}")

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = set_device(self.device)
        x = feed[self._in]
        n = x.shape[0]
        host_in, host_out = self._host[self._in], self._host[self._out]
        np.copyto(host_in[:n], x, casting="same_kind")
        out_shape = self._set_shape(self._context, x.shape)
        self._set_addresses(self._context, self._buffers)
        in_bytes = host_in[:n].nbytes
        out_bytes = int(np.prod(out_shape)) * host_out.dtype.itemsize
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(
            cudart.cudaMemcpyAsync(self._buffers[self._in], host_in.ctypes.data, in_bytes, h2d, self._stream),
            "cudaMemcpyAsync (input)",
        )
        self._execute(tuple(x.shape))
        cuda_call(
            cudart.cudaMemcpyAsync(
                host_out.ctypes.data, self._buffers[self._out], out_bytes, d2h, self._stream
            ),
            "cudaMemcpyAsync (output)",
        )
        cuda_call(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        out = host_out.reshape(-1)[: int(np.prod(out_shape))].reshape(out_shape)
        return {self._out: out.astype(np.float32, copy=True)}

    def _execute(self, shape: tuple[int, ...]) -> None:
        """One enqueue on our stream, or the replay of the graph captured for this input shape."""
        slot = self._graphs.get(shape) if self.cuda_graphs else None
        if slot is None and self.cuda_graphs:
            slot = self._capture(shape)
        if slot is not None:
            cuda_call(self._cudart.cudaGraphLaunch(slot.graph_exec, self._stream), "cudaGraphLaunch")
        elif not self._context.execute_async_v3(int(self._stream)):
            raise EngineError(f"TensorRT failed to run {self.plan_path} at input shape {shape}")

    def _capture(self, shape: tuple[int, ...]) -> GraphSlot | None:
        """Record one enqueue of a dedicated context; on any capture failure free it and stop using graphs."""
        cudart = self._cudart
        ctx = self._new_context()
        self._set_shape(ctx, shape)
        self._set_addresses(ctx, self._buffers)
        if not ctx.execute_async_v3(int(self._stream)):  # TensorRT needs a plain run after a shape change
            raise EngineError(f"TensorRT failed to run {self.plan_path} at input shape {shape}")
        cuda_call(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize (before capture)")
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        err = _cuda_result(cudart.cudaStreamBeginCapture(self._stream, mode))[0]
        if int(err) != 0:
            return self._no_graphs(f"cudaStreamBeginCapture error {int(err)}")
        ok = bool(ctx.execute_async_v3(int(self._stream)))
        err, graph = cudart.cudaStreamEndCapture(self._stream)  # always end it, even when the enqueue failed
        if int(err) != 0 or not ok:
            if int(err) == 0 and graph is not None:
                cudart.cudaGraphDestroy(graph)
            return self._no_graphs(
                "TensorRT refused the enqueue" if not ok else f"cudaStreamEndCapture error {int(err)}"
            )
        err, *made = _cuda_result(cudart.cudaGraphInstantiate(graph, 0))
        if int(err) != 0:
            cudart.cudaGraphDestroy(graph)
            return self._no_graphs(f"cudaGraphInstantiate error {int(err)}")
        return self._graphs.add(GraphSlot(ctx, tuple(shape), graph, made[0]))

    def _no_graphs(self, reason: str) -> None:
        """Clear the sticky capture error, say why once, and run without CUDA graphs from now on."""
        self._cudart.cudaGetLastError()  # clear cudaErrorStreamCaptureInvalidated and friends
        logger.warning(
            "%s cannot be captured in a CUDA graph (%s); running without CUDA graphs", self.plan_path, reason
        )
        self.cuda_graphs = False

    def infer_torch(self, tensor: Any) -> Any:
        """Run on a CUDA ``torch.Tensor`` without host copies; returns a CUDA tensor.

        The work runs on the backend's stream, ordered after what torch's current stream has queued and
        before whatever it queues next (events both ways), so no sync is needed and none is done here.
        """
        import torch

        self.load()
        if not (isinstance(tensor, torch.Tensor) and tensor.is_cuda and tensor.device.index == self.device):
            where = tensor.device if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise InputError(
                f"{self.name}: infer_torch needs a torch tensor on cuda:{self.device}, got {where}; "
                "use infer() for numpy arrays"
            )
        in_dtype = torch_dtype(self._trt_dtypes[self._in])
        if tensor.dtype != in_dtype:
            raise InputError(
                f"{self.name}: input dtype {tensor.dtype} does not match the engine's {in_dtype}"
            )
        self._check_shape(tuple(tensor.shape))
        cudart = set_device(self.device)
        x = tensor.contiguous()
        ctx = self._context
        out_shape = self._set_shape(ctx, tuple(x.shape))
        out_dtype = torch_dtype(self._trt_dtypes[self._out])
        out = torch.empty(out_shape, dtype=out_dtype, device=x.device)
        self._set_addresses(ctx, {self._in: x.data_ptr(), self._out: out.data_ptr()})
        theirs = torch.cuda.current_stream(x.device).cuda_stream
        ready, done = self._events
        cuda_call(cudart.cudaEventRecord(ready, theirs), "cudaEventRecord (torch stream)")
        cuda_call(cudart.cudaStreamWaitEvent(self._stream, ready, 0), "cudaStreamWaitEvent (ours)")
        if not ctx.execute_async_v3(int(self._stream)):
            raise EngineError(f"TensorRT failed to run {self.plan_path} at batch {x.shape[0]}")
        cuda_call(cudart.cudaEventRecord(done, self._stream), "cudaEventRecord (ours)")
        cuda_call(cudart.cudaStreamWaitEvent(theirs, done, 0), "cudaStreamWaitEvent (torch stream)")
        return out

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        """The checks ``check_feed`` does for arrays, without copying a device tensor to the host."""
        expected = self._input_shape
        if len(shape) != len(expected) or any(e not in (-1, g) for e, g in zip(expected, shape)):
            raise InputError(
                f"{self.name}: input shape {shape} does not match {expected} (-1 marks the batch)"
            )
        lo, hi = self._batch_range
        if not lo <= shape[0] <= hi:
            raise InputError(
                f"{self.name}: batch {shape[0]} is outside the engine's profile {lo}..{hi}; "
                "split the batch or rebuild with a wider --batch MIN,OPT,MAX"
            )


def _cuda_result(result: Any) -> tuple[Any, ...]:
    """A cuda-python result as a tuple ``(error, values...)``, whether or not it came as one."""
    return tuple(result) if isinstance(result, tuple) else (result,)

# ------------------------------------------------------------------------------------------ table


def _open(request: Request) -> Backend:
    return TensorRTBackend(request.source)


def _compare_rows(sources: Sources, skipped: dict[str, str]) -> Rows:
    """One row per plan in the folder, where a CUDA GPU is present."""
    if not sources.plans:
        return []
    try:
        import tensorrt  # noqa: F401
        import torch

        if not torch.cuda.is_available():
            raise ImportError("no CUDA GPU")
    except (ImportError, OSError) as exc:  # OSError: bindings without their shared library
        skipped["tensorrt"] = f"{len(sources.plans)} plan(s) found but TensorRT cannot run here ({exc})"
        return []
    return [(f"tensorrt {p.stem}", TensorRTBackend(p)) for p in sources.plans]


SPEC = BackendSpec(
    name="tensorrt",
    title="TensorRT",
    probe=Probe("tensorrt", "pip install tensorrt"),
    opens=frozenset({"plan"}),
    factory=_open,
    compare_rows=_compare_rows,
    plugin_nodes=True,
    distributions=("tensorrt",),
)
