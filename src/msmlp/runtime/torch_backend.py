"""The PyTorch reference model behind the backend protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from msmlp.models.config import DeployConfig
from msmlp.runtime.base import Backend, BackendInfo

_PRECISIONS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class TorchBackend(Backend):
    """Runs a registered model (by name, via :func:`msmlp.models.weights.load_for_deploy`) or a given
    module in eval mode under ``torch.inference_mode``. ``autocast_bf16`` runs under CPU bf16 autocast,
    the baseline a PyTorch user would pick on a CPU with AMX."""

    name = "pytorch"

    def __init__(
        self,
        model: nn.Module | str,
        weights: str | Path | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        config: DeployConfig | None = None,
        *,
        seed: int = 0,
        autocast_bf16: bool = False,
    ) -> None:
        super().__init__()
        if dtype not in _PRECISIONS:
            from msmlp.errors import InputError

            raise InputError(f"dtype {dtype} is not one of {', '.join(map(str, _PRECISIONS))}")
        self._model_arg = model
        self._weights = weights
        self._seed = seed
        self.device = torch.device(device)
        self.dtype = dtype
        self.autocast_bf16 = autocast_bf16
        self.model: nn.Module | None = None
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
        weights = getattr(model, "weights_info", {}) or {}
        return BackendInfo(
            backend=self.name,
            precision="bf16" if self.autocast_bf16 else _PRECISIONS[self.dtype],
            input_name=config.input_name,
            input_shape=(-1, *config.input_size),
            output_name=config.output_name,
            model=getattr(model, "model_name", None),
            config=config,
            synthetic=weights.get("source") == "synthetic",
            details={"device": str(self.device), "autocast_bf16": self.autocast_bf16},
        )

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.model is not None
        info = self.info
        x = torch.from_numpy(feed[info.input_name]).to(self.device, self.dtype)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.autocast_bf16):
            y = self.model(x)
        return {info.output_name: y.float().cpu().numpy()}

    def _close(self) -> None:
        self.model = None
