"""TensorRT engines behind the backend protocol: pinned host buffers, async copies, optional CUDA graphs.

Loading checks the plan's metadata first (TensorRT version, GPU, hash: see
:func:`msmlp.export.engine.check_plan_metadata`), then deserializes it and creates one execution
context on one stream; a backend instance is therefore used from one thread at a time (open one per
stream for concurrency). Device buffers are sized for the profile's largest batch and allocated once.
Each call sets the input shape, copies in, runs ``execute_async_v3`` (or replays the CUDA graph captured
for that batch size) and copies out. ``infer_torch`` runs on CUDA tensors the caller already holds.
TensorRT and cuda-python are imported only here, inside the methods.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.errors import EngineError, InputError
from msmlp.export.engine import (
    check_plan_metadata,
    cuda_call,
    load_cudart,
    load_plugins,
    trt_logger,
)
from msmlp.runtime.base import Backend


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
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers: dict[str, int] = {}  # name -> device pointer
        self._host: dict[str, np.ndarray] = {}  # name -> pinned host array (max batch)
        self._host_ptrs: list[int] = []
        self._graphs: dict[int, tuple[Any, Any]] = {}  # batch -> (graph, graph exec)
        self._runtime: Any = None
        self._log: Any = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def _load(self) -> None:
        expected = {"model": self.expected_model} if self.expected_model else None
        self.metadata = check_plan_metadata(self.plan_path, expected, device=self.device)
        import tensorrt as trt  # importable: the check above looked up its version

        cudart = self._cudart = load_cudart()
        try:
            self._open(trt, cudart)
        except BaseException:
            self._close()  # free what was allocated before the failure
            raise
        self.precision = self.metadata.get("precision", "unknown")

    def _open(self, trt: Any, cudart: Any) -> None:
        """Deserialize, create the context and stream, and allocate the buffers."""
        cuda_call(cudart.cudaSetDevice(self.device), "cudaSetDevice")
        log = self._log = trt_logger(trt)  # kept alive as long as the runtime that logs to it
        load_plugins(trt, log, self.metadata.get("plugins", []))
        self._runtime = trt.Runtime(log)
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise EngineError(f"TensorRT could not deserialize {self.plan_path}: {log.errors_text()}")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(f"TensorRT could not create an execution context for {self.plan_path}")
        self._read_io(trt)
        self._stream = cuda_call(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._allocate()

    def _read_io(self, trt: Any) -> None:
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
        self.input_name, self.output_name = inputs[0], outputs[0]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in (*inputs, *outputs)}
        lo, _opt, hi = engine.get_tensor_profile_shape(self.input_name, 0)
        self._max_shape = tuple(hi)
        self.input_shape = (-1, *tuple(lo)[1:])
        self.batch_range = (int(lo[0]), int(hi[0]))

    def _allocate(self) -> None:
        """Device and pinned host buffers for the largest batch, allocated once and reused."""
        cudart, ctx = self._cudart, self._context
        ctx.set_input_shape(self.input_name, self._max_shape)
        shapes = {
            self.input_name: self._max_shape,
            self.output_name: tuple(ctx.get_tensor_shape(self.output_name)),
        }
        for name, shape in shapes.items():
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
        for graph, graph_exec in self._graphs.values():
            cudart.cudaGraphExecDestroy(graph_exec)
            cudart.cudaGraphDestroy(graph)
        self._graphs.clear()
        self._host.clear()
        for ptr in self._buffers.values():
            cudart.cudaFree(ptr)
        for ptr in self._host_ptrs:
            cudart.cudaFreeHost(ptr)
        self._buffers.clear()
        self._host_ptrs.clear()
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = self._engine = self._runtime = None

    # -- inference ---------------------------------------------------------------------------------
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, ctx = self._cudart, self._context
        x = feed[self.input_name]
        n = x.shape[0]
        host_in, host_out = self._host[self.input_name], self._host[self.output_name]
        np.copyto(host_in[:n], x, casting="same_kind")
        ctx.set_input_shape(self.input_name, x.shape)
        for name, ptr in self._buffers.items():
            ctx.set_tensor_address(name, ptr)
        out_shape = tuple(ctx.get_tensor_shape(self.output_name))
        in_bytes = host_in[:n].nbytes
        out_bytes = int(np.prod(out_shape)) * host_out.dtype.itemsize
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(
            cudart.cudaMemcpyAsync(
                self._buffers[self.input_name], host_in.ctypes.data, in_bytes, h2d, self._stream
            ),
            "cudaMemcpyAsync (input)",
        )
        self._execute(n)
        cuda_call(
            cudart.cudaMemcpyAsync(
                host_out.ctypes.data, self._buffers[self.output_name], out_bytes, d2h, self._stream
            ),
            "cudaMemcpyAsync (output)",
        )
        cuda_call(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        out = host_out.reshape(-1)[: int(np.prod(out_shape))].reshape(out_shape)
        return {self.output_name: out.astype(np.float32, copy=True)}

    def _execute(self, batch: int) -> None:
        """One enqueue on our stream, or the CUDA graph recorded for this batch size."""
        if not self.cuda_graphs:
            if not self._context.execute_async_v3(int(self._stream)):
                raise EngineError(f"TensorRT failed to run {self.plan_path} at batch {batch}")
            return
        if batch not in self._graphs:
            self._graphs[batch] = self._capture(batch)
        cuda_call(self._cudart.cudaGraphLaunch(self._graphs[batch][1], self._stream), "cudaGraphLaunch")

    def _capture(self, batch: int) -> tuple[Any, Any]:
        """Record one enqueue as a CUDA graph; TensorRT needs a plain run first after a shape change."""
        cudart = self._cudart
        if not self._context.execute_async_v3(int(self._stream)):
            raise EngineError(f"TensorRT failed to run {self.plan_path} at batch {batch}")
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_call(cudart.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
        ok = self._context.execute_async_v3(int(self._stream))
        graph = cuda_call(cudart.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
        if not ok:
            cudart.cudaGraphDestroy(graph)
            raise EngineError(f"{self.plan_path} cannot be captured in a CUDA graph; run without cuda_graphs")
        graph_exec = cuda_call(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        return graph, graph_exec

    def infer_torch(self, tensor: Any) -> Any:
        """Run on a CUDA ``torch.Tensor`` without host copies, on torch's current stream.

        Returns a CUDA tensor; like any torch op it is ordered on that stream, so no sync is done here.
        """
        import torch

        self.load()
        if not (isinstance(tensor, torch.Tensor) and tensor.is_cuda and tensor.device.index == self.device):
            where = tensor.device if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise InputError(
                f"{self.name}: infer_torch needs a torch tensor on cuda:{self.device}, got {where}; "
                "use infer() for numpy arrays"
            )
        want = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16}
        in_dtype = want.get(self._dtypes[self.input_name])
        if tensor.dtype != in_dtype:
            raise InputError(
                f"{self.name}: input dtype {tensor.dtype} does not match the engine's {in_dtype}"
            )
        self._check_shape(tuple(tensor.shape))
        x = tensor.contiguous()
        ctx = self._context
        ctx.set_input_shape(self.input_name, tuple(x.shape))
        out_dtype = want.get(self._dtypes[self.output_name], torch.float32)
        out = torch.empty(tuple(ctx.get_tensor_shape(self.output_name)), dtype=out_dtype, device=x.device)
        ctx.set_tensor_address(self.input_name, x.data_ptr())
        ctx.set_tensor_address(self.output_name, out.data_ptr())
        if not ctx.execute_async_v3(torch.cuda.current_stream(x.device).cuda_stream):
            raise EngineError(f"TensorRT failed to run {self.plan_path} at batch {x.shape[0]}")
        return out

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        """The checks ``check_feed`` does for arrays, without copying a device tensor to the host."""
        expected = self.input_shape
        if len(shape) != len(expected) or any(e not in (-1, g) for e, g in zip(expected, shape)):
            raise InputError(
                f"{self.name}: input shape {shape} does not match {expected} (-1 marks the batch)"
            )
        lo, hi = self.batch_range
        if not lo <= shape[0] <= hi:
            raise InputError(
                f"{self.name}: batch {shape[0]} is outside the engine's profile {lo}..{hi}; "
                "split the batch or rebuild with a wider --batch MIN,OPT,MAX"
            )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "plan": str(self.plan_path),
            "cuda_graphs": self.cuda_graphs,
            "tensorrt_version": self.metadata.get("tensorrt_version"),
            "gpu": self.metadata.get("gpu"),
        }
