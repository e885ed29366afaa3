"""What a bench run sets up before it times anything: a temporary ONNX export of a registered model and
PyTorch's thread count for the run. Shared by one run (:mod:`.run`) and the comparison (:mod:`.compare`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from msmlp.log import logger


def export_temp_onnx(
    name: str, weights: str | Path | None, seed: int, folder: Path, max_batch: int = 8
) -> Path:
    """``folder/<name>.onnx`` from the registered model (checkpoint, or synthetic weights)."""
    from msmlp.exporters.onnx import export_onnx
    from msmlp.models.weights import load_for_deploy

    module = load_for_deploy(name, weights, seed)
    logger.info("exporting %s to a temporary ONNX graph", name)
    return export_onnx(
        module,
        folder / f"{name}.onnx",
        config=module.deploy_config,
        batch=(1, max_batch, max(max_batch, 64)),
        model_name=name,
    )


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count for the run, restored afterwards (it is process-wide)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
