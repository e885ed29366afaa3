"""Print the top-k ImageNet classes for images, with PyTorch (--model) or an ONNX graph (--onnx).

With --onnx the preprocessing comes from model.json beside the file (or from --model, which is then
also checked against the graph). A model without a checkpoint (--model without --weights, or a graph
exported without one) has synthetic weights: the classes it prints are meaningless, and it says so.

examples:
  msmlp predict --onnx out/s2mlpv2_small/model.onnx photo.jpg
  msmlp predict --model msmlp_tiny --weights msmlp_tiny_ckpt_epoch299.pth photo.jpg --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "top-k ImageNet classes for images (PyTorch or ONNX Runtime)"
MAX_CHUNK = 32


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument(
        "--model", metavar="NAME", help="registered model (PyTorch, or the expected model of --onnx)"
    )
    p.add_argument("--weights", type=Path, metavar="PATH", help="checkpoint for --model (PyTorch only)")
    p.add_argument("--onnx", type=Path, metavar="PATH", help="ONNX graph to run on ONNX Runtime")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="classes per image (default 5)")
    p.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime intra-op threads")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from msmlp.errors import InputError
    from msmlp.data.labels import topk
    from msmlp.data.transforms import load_image, preprocess

    if args.model is None and args.onnx is None:
        raise InputError("give --model NAME or --onnx PATH")
    if args.weights is not None and args.onnx is not None:
        raise InputError("--weights applies to --model on PyTorch; an ONNX graph carries its own weights")
    if args.topk < 1:
        raise InputError(f"--topk {args.topk} must be at least 1")
    pictures = [load_image(p) for p in args.images]  # every image is checked before the model loads
    backend, config, synthetic = open_for_predict(args)
    with backend:
        logits = run_chunks(backend, preprocess(pictures, config))
    if synthetic:
        from msmlp.log import logger

        logger.warning("note: synthetic weights (no checkpoint): these classes are meaningless")
    rows = [
        {"image": str(path), "predictions": [p.to_dict() for p in preds]}
        for path, preds in zip(args.images, topk(logits, args.topk))
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(row["image"])
        for rank, p in enumerate(row["predictions"], 1):
            print(f"  {rank}. {p['probability']:7.2%}  {p['label']} ({p['index']})")
    return 0


def open_for_predict(args: argparse.Namespace) -> tuple[Any, Any, bool]:
    """The backend, the preprocessing config and whether the weights are synthetic."""
    from msmlp.models.registry import create_model, get_config
    from msmlp.models.weights import make_contributing

    if args.onnx is None:
        from msmlp.runtime.torch_backend import TorchBackend

        config = get_config(args.model)
        if args.weights is not None:
            return (
                TorchBackend(create_model(args.model, pretrained=str(args.weights)), config=config),
                config,
                False,
            )
        return TorchBackend(make_contributing(create_model(args.model)), config=config), config, True
    from msmlp.runtime.ort import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(args.onnx, threads=args.threads).load()
    if args.model is not None:
        config = get_config(args.model)
        backend.check_model(args.model, config)
    else:
        config = config_for_graph(backend)
    weights = backend.metadata.get("weights") or {}
    return backend, config, weights.get("source") == "synthetic"


def config_for_graph(backend: Any) -> Any:
    """Preprocessing for a graph: model.json's config, else the registered model it names, else its
    input shape with the ImageNet defaults (logged, since it is a guess)."""
    from msmlp.log import logger
    from msmlp.models.registry import DeployConfig, get_config, list_models

    recorded = backend.metadata.get("config")
    if isinstance(recorded, dict):
        try:
            return DeployConfig.from_dict(recorded)
        except TypeError:
            logger.warning("model.json has an unreadable config; falling back to the graph")
    if backend.model_name in list_models():
        config = get_config(backend.model_name)
        backend.check_model(backend.model_name, config)
        return config
    size = tuple(backend.input_shape[1:])
    if len(size) != 3 or -1 in size:
        from msmlp.errors import InputError

        raise InputError(
            f"{backend.path} has input shape {backend.input_shape}; pass --model to say which model it is"
        )
    logger.warning(
        "no metadata for %s: assuming ImageNet preprocessing at %s",
        backend.path.name,
        "x".join(map(str, size)),
    )
    return DeployConfig(input_size=size)  # type: ignore[arg-type]


def run_chunks(backend: Any, inputs: Any) -> Any:
    """Run in batches the backend accepts; pad a short last batch up to its minimum batch size."""
    import numpy as np

    lo, hi = backend.batch_range
    step = max(lo, min(hi, MAX_CHUNK))
    outs = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start : start + step]
        pad = max(0, lo - len(chunk))
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
        outs.append(backend(padded)[: len(chunk)])
    return np.concatenate(outs)
