"""Print the top-k classes for images, with PyTorch (--model) or an exported graph (--onnx), named by the
labels the export recorded (msmlp-export --labels), else ImageNet's.

With --onnx the preprocessing comes from model.json beside the file (or from --model, which is then
also checked against the graph), and it runs on the fastest verified CPU backend unless --backend says
otherwise. A model without a checkpoint has synthetic weights: its classes are meaningless, and it says so.

examples:
  msmlp predict --onnx out/s2mlpv2_small/model.onnx photo.jpg
  msmlp predict --model msmlp_tiny --weights msmlp_tiny_ckpt_epoch299.pth photo.jpg --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from msmlp.commands.args import add_backend_args

HELP = "top-k classes for images, by the export's labels or ImageNet's, on any backend (--backend)"
MAX_CHUNK = 32


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument(
        "--model", metavar="NAME", help="registered model (PyTorch, or the expected model of --onnx)"
    )
    p.add_argument("--weights", type=Path, metavar="PATH", help="checkpoint for --model (PyTorch only)")
    p.add_argument("--onnx", type=Path, metavar="PATH", help="exported ONNX graph")
    p.add_argument("--engine", type=Path, metavar="PLAN", help="TensorRT plan")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of synthetic weights for --model")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_backend_args(p)


def run(args: argparse.Namespace) -> int:
    from msmlp.commands.args import open_source
    from msmlp.data.labels import topk
    from msmlp.data.transforms import load_image, preprocess
    from msmlp.errors import InputError
    from msmlp.log import logger
    from msmlp.runtime.base import run_in_batches

    if args.model is None and args.onnx is None and args.engine is None:
        raise InputError("give --model NAME, --onnx PATH or --engine PLAN")
    if not 1 <= args.topk <= 1000:
        raise InputError(f"--topk {args.topk} must be in 1..1000")
    pictures = [load_image(p) for p in args.images]  # every image is checked before the model loads
    expected = args.model if (args.onnx or args.engine) else None
    source = argparse.Namespace(**{**vars(args), "model": None if expected else args.model})
    backend = open_source(source).load()
    config = config_for(backend, expected)
    with backend:
        logits = run_in_batches(backend, preprocess(pictures, config), MAX_CHUNK)
    if backend.info.synthetic or (args.model and not args.weights and not expected):
        logger.warning("note: synthetic weights (no checkpoint): these classes are meaningless")
    rows = [
        {"image": str(path), "predictions": [p.to_dict() for p in preds]}
        for path, preds in zip(args.images, topk(logits, args.topk, config.labels))
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(row["image"])
        for rank, p in enumerate(row["predictions"], 1):
            print(f"  {rank}. {p['probability']:7.2%}  {p['label']} ({p['index']})")
    return 0


def config_for(backend: Any, expected: str | None) -> Any:
    """Preprocessing: --model's config (checked against the file), else what the artefact records."""
    from msmlp.errors import InputError

    if expected is not None:
        from msmlp.models.registry import get_config  # the registry is PyTorch's ([export])

        recorded = backend.info.config  # the export's own head, size and labels, when it records them
        config = recorded if recorded is not None and backend.info.model == expected else get_config(expected)
        backend.check_model(expected, config)
        return config
    if backend.info.config is not None:
        return backend.info.config
    raise InputError(
        f"{backend.info.artifact.path if backend.info.artifact else 'the file'} does not record its model or "
        "preprocessing (no model.json); pass --model NAME"
    )
