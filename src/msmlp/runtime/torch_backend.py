"""The PyTorch reference model behind the backend protocol."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from msmlp.models.registry import DeployConfig, create_model
from msmlp.runtime.base import Backend


class TorchBackend(Backend):
    """Runs a registered model (or a given module) in eval mode under ``torch.inference_mode``."""

    name = "pytorch"

    def __init__(
        self,
        model: nn.Module | str,
        weights: str | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        config: DeployConfig | None = None,
    ) -> None:
        super().__init__()
        self._model_arg = model
        self._weights = weights
        self.device = torch.device(device)
        self.dtype = dtype
        self.model: nn.Module | None = None
        self.config = config
        self.precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]

    def _load(self) -> None:
        model = self._model_arg
        if isinstance(model, str):
            model = create_model(model, pretrained=self._weights)
        self.config = self.config or getattr(model, "deploy_config", None) or DeployConfig()
        self.model = model.eval().to(self.device, self.dtype)
        self.input_name, self.output_name = self.config.input_name, self.config.output_name
        self.input_shape = (-1, *self.config.input_size)
        self.batch_range = (1, 1 << 30)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.model is not None
        x = torch.from_numpy(feed[self.input_name]).to(self.device, self.dtype)
        with torch.inference_mode():
            y = self.model(x)
        return {self.output_name: y.float().cpu().numpy()}

    def _close(self) -> None:
        self.model = None
