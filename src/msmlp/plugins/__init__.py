"""The shifts as fused GPU kernels: Triton kernels, a PyTorch CUDA path, and a TensorRT plugin.

Importing this package needs neither triton nor TensorRT: the kernels are compiled on first use
(:mod:`msmlp.plugins.kernels`), the TensorRT plugin is defined when the engine build calls
:func:`register_trt_plugins`. Where triton is installed, importing it also installs the CUDA kernels
into the models' fused-shift slots (:func:`msmlp.models.layers.register_cuda_kernel`), so a model on a
CUDA device runs fused shifts; on the CPU the models keep their Slice/Concat form.
"""

from __future__ import annotations

import importlib.util

from msmlp.plugins.onnx_nodes import EDGE_SHIFT, GROUP_ROLL, NAMESPACE, lower_plugin_nodes
from msmlp.plugins.trt_plugin import register_trt_plugins

__all__ = [
    "EDGE_SHIFT",
    "GROUP_ROLL",
    "NAMESPACE",
    "lower_plugin_nodes",
    "register_trt_plugins",
    "triton_available",
]


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _install_cuda_kernels() -> None:
    from msmlp.models.layers import register_cuda_kernel

    def group_roll(x, chunks, shifts, dim):
        from msmlp.plugins import torch_ops

        return torch_ops.group_roll(x, chunks, shifts, dim)

    def edge_shift(x, pattern):
        from msmlp.plugins import torch_ops

        return torch_ops.edge_shift(x, pattern)

    def split_attention(y, attn):
        from msmlp.plugins import torch_ops

        return torch_ops.split_attention(y, attn)

    register_cuda_kernel("group_roll", group_roll)
    register_cuda_kernel("edge_shift", edge_shift)
    register_cuda_kernel("split_attention", split_attention)


if triton_available():
    _install_cuda_kernels()
