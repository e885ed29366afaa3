"""The PyTorch reference model behind the backend protocol.

torch is imported when a backend is built or loaded, not with this module, so reading the backend table
(:data:`SPEC`) stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msmlp.models.config import DeployConfig
from msmlp.runtime.base import Backend, BackendInfo
from msmlp.runtime.registry import BackendSpec, Probe, Request, Rows, Sources

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

_PRECISIONS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


class TorchBackend(Backend):
    """Runs a registered model (by name, via :func:`msmlp.models.weights.load_for_deploy`) or a given
    module in eval mode under ``torch.inference_mode``. ``autocast_bf16`` runs under CPU bf16 autocast,
    the baseline a PyTorch user would pick on a CPU with AMX. ``dtype``: None means float32."""

    name = "pytorch"

    def __init__(
        self,
        model: nn.Module | str,
        weights: str | Path | None = None,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        config: DeployConfig | None = None,
        *,
        seed: int = 0,
        autocast_bf16: bool = False,
        compiled: bool = False,
    ) -> None:
        import torch

        super().__init__()
        dtype = torch.float32 if dtype is None else dtype
        if str(dtype).removeprefix("torch.") not in _PRECISIONS:
            from msmlp.errors import InputError

            raise InputError(f"dtype {dtype} is not one of {', '.join('torch.' + d for d in _PRECISIONS)}")
        self._model_arg = model
        self._weights = weights
        self._seed = seed
        self.device = torch.device(device)
        self.dtype = dtype
        self.autocast_bf16 = autocast_bf16
        self.compiled = compiled
        self.compile_s: float | None = None
        self.model: nn.Module | None = None
        self._run: Any = None
        self._config = config

    def _load(self) -> BackendInfo:
        model = self._model_arg
        if isinstance(model, str):
            from msmlp.models.weights import load_for_deploy

            model = load_for_deploy(model, self._weights, self._seed)
        if self.device.type == "cuda":
            import msmlp.plugins  # noqa: F401  (fills the models' fused-shift slots with the Triton kernels)
        config = self._config or getattr(model, "deploy_config", None) or DeployConfig()
        self.model = model.eval().to(self.device, self.dtype)
        self._run = self._compile(config) if self.compiled else self.model
        weights = getattr(model, "weights_info", {}) or {}
        return BackendInfo(
            backend=self.name,
            precision="bf16" if self.autocast_bf16 else _PRECISIONS[str(self.dtype).removeprefix("torch.")],
            input_name=config.input_name,
            input_shape=(-1, *config.input_size),
            output_name=config.output_name,
            model=getattr(model, "model_name", None),
            config=config,
            synthetic=weights.get("source") == "synthetic",
            details={
                "device": str(self.device),
                "autocast_bf16": self.autocast_bf16,
                **(
                    {"torch_compile": "inductor, freezing", "compile_s": self.compile_s}
                    if self.compiled
                    else {}
                ),
            },
        )

    def _compile(self, config: DeployConfig) -> Any:
        """``torch.compile`` (inductor, with freezing: weights folded in as constants), compiled here by one
        call at batch 1 (timed as ``compile_s``), so the first timed call does not pay for it; another
        batch size compiles again on its first call (a warm-up call in ``bench --compare``). Inductor's
        caches go under ``~/.cache/msmlp/inductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` says otherwise, so a
        later process reuses what it can."""
        import os
        import time

        import torch
        import torch._inductor.config as inductor

        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "msmlp" / "inductor"))
        compiled = torch.compile(self.model)
        x = torch.zeros((1, *config.input_size), device=self.device, dtype=self.dtype)
        start = time.perf_counter()
        autocast = torch.autocast("cpu", torch.bfloat16, enabled=self.autocast_bf16)
        with inductor.patch(freezing=True), torch.inference_mode(), autocast:
            compiled(x)
        self.compile_s = time.perf_counter() - start

        def run(batch: torch.Tensor) -> torch.Tensor:
            with inductor.patch(freezing=True):  # a new batch size recompiles, frozen the same way
                return compiled(batch)

        return run

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        assert self.model is not None
        info = self.info
        x = torch.from_numpy(feed[info.input_name]).to(self.device, self.dtype)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.autocast_bf16):
            y = self._run(x)
        return {info.output_name: y.float().cpu().numpy()}

    def _close(self) -> None:
        self.model = None
        self._run = None

    def profile_layers(self, x: np.ndarray, *, runs: int = 10, top: int = 15) -> dict[str, Any]:
        """torch.profiler over ``runs`` calls after one warm-up call, ranked by self time per op type."""
        import torch
        from torch.profiler import ProfilerActivity, profile

        from msmlp.runtime.profiling import ranked

        cuda = self.device.type == "cuda" and torch.cuda.is_available()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        self(x)
        with profile(activities=activities) as prof:
            for _ in range(runs):
                self(x)
        op_ms = {
            e.key: (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e3
            for e in prof.key_averages()
            if (e.self_device_time_total if cuda else e.self_cpu_time_total) > 0
        }
        return ranked("pytorch", len(x), runs, {}, {}, top, op_ms=op_ms)


def _open(request: Request) -> Backend:
    return TorchBackend(
        request.source,
        weights=request.weights,
        seed=request.seed,
        autocast_bf16=request.precision == "bf16",
    )


def _compare_rows(sources: Sources, skipped: dict[str, str]) -> Rows:
    """The reference (eager FP32) first: every other row is compared with it."""
    rows: Rows = [
        ("pytorch fp32 (eager)", TorchBackend(sources.module)),
        ("pytorch bf16 autocast", TorchBackend(sources.module, autocast_bf16=True)),
    ]
    if sources.torch_compile:
        rows.append(
            ("pytorch bf16 torch.compile", TorchBackend(sources.module, autocast_bf16=True, compiled=True))
        )
    return rows


SPEC = BackendSpec(
    name="pytorch",
    title="PyTorch",
    probe=Probe("torch", "pip install torch"),
    opens=frozenset({"model"}),
    factory=_open,
    hints=("bf16",),
    compare_rows=_compare_rows,
    layer_profile=True,
    distributions=("torch",),
)
