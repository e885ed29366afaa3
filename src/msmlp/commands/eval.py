"""Accuracy of exported artefacts on a labelled image set: top-1/top-5 with 95% Wilson intervals, the images
each candidate gets right that the reference got wrong and the reverse (exact McNemar p), and throughput
with decoding and inference timed apart. Every candidate runs on the same images, each in the
preprocessing its artefact records. Writes eval.json and eval.png (top-1 against latency).

DATA is a folder of class folders (sorted names are the class indices; WordNet-ID names map to the 1000
ImageNet indices), a flat folder with a ground-truth file (--ground-truth, or val.txt / ground_truth.txt
beside the images), or a .csv/.tsv of path,label (label an index or a class name).

A candidate is PATH, PATH@auto (the default: the fastest verified backend) or PATH@BACKEND as
compare-layers takes it (onnxruntime, openvino, openvino-bf16, tensorrt, cuda). The reference is --model
(PyTorch FP32) when given, else the first candidate that computes in FP32 (model.onnx@auto may pick
OpenVINO BF16; give @onnxruntime for an FP32 reference), else the first. Unreadable images are skipped
and listed (--strict: fatal, found before any backend loads: each file is decoded cheaply, or for
over 512 images its header checked). Ctrl-C writes the report so far, marked partial.

examples:
  msmlp eval --data val/ --candidate out/m/model.onnx --candidate out/m/model.int8.onnx
  msmlp eval --data val.csv --candidate out/m/model.onnx@openvino-bf16 --model msmlp_tiny --weights ckpt.pth
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from msmlp.commands.args import add_out_arg, add_reference_args, add_threads_arg

HELP = "top-1/top-5 accuracy of exported artefacts on a labelled image set, with intervals and flips"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, metavar="DIR|CSV", help="the labelled image set")
    p.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="PATH[@BACKEND]",
        help="artefact to evaluate (repeatable; backend auto by default)",
    )
    add_reference_args(p)
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of synthetic weights for --model")
    p.add_argument("--ground-truth", type=Path, metavar="FILE", help="labels of a flat image folder")
    p.add_argument("--labels", type=Path, metavar="FILE", help="class names in index order (lines or JSON)")
    p.add_argument(
        "--batch", type=int, default=32, metavar="N", help="images per inference call (default 32)"
    )
    p.add_argument(
        "--workers", type=int, metavar="N", help="decoding threads (default: one per core, at most 8)"
    )
    add_threads_arg(p)
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    p.add_argument("--strict", action="store_true", help="an unreadable image is fatal (exit 2)")
    add_out_arg(p, writes="eval.json/png", default="the first candidate's folder")


def run(args: argparse.Namespace) -> int:
    from msmlp.evaluate.report import build_report, plot_accuracy, reference_index, table, write_report
    from msmlp.evaluate.stream import evaluate
    from msmlp.log import logger

    specs, data, out, workers = _check(args)
    candidates = _load(specs, args)
    ref = reference_index(candidates, 0 if args.model else None)
    logger.debug("eval: %d images (%s), reference %s", len(data), data.layout, candidates[ref].label)
    bar = _progress_bar(len(data))
    try:
        progress, tallies = evaluate(
            data, candidates, batch=args.batch, workers=workers, strict=args.strict, on_batch=bar.update
        )
    finally:
        bar.close()
        for cand in candidates:
            cand.backend.close()
    report = build_report(
        data, candidates, tallies, progress, reference=ref, batch=args.batch, workers=workers
    )
    png = plot_accuracy(report, out / "eval.png")
    path = write_report(report, out / "eval.json")
    print(table(report))
    print(f"report: {path}\nplot: {png}")
    if progress.partial:
        raise KeyboardInterrupt
    return 0


def _check(args: argparse.Namespace) -> tuple[list[Any], Any, Path, int]:
    """Every input checked before a backend loads or an image is decoded."""
    from msmlp.commands import check_positive
    from msmlp.errors import InputError
    from msmlp.evaluate.candidates import parse_candidate
    from msmlp.evaluate.datasets import open_dataset, read_class_names, with_model_labels

    for value, option in ((args.batch, "--batch"), (args.workers, "--workers"), (args.limit, "--limit")):
        check_positive(value, option)
    check_positive(args.threads, "--threads")
    if not args.candidate and not args.model:
        raise InputError("give at least one --candidate PATH[@BACKEND], or --model NAME")
    if args.weights is not None:
        if not args.model:
            raise InputError("--weights applies to --model NAME; exported artefacts carry their own weights")
        if not args.weights.is_file():
            raise InputError(f"--weights {str(args.weights)!r} does not exist or is not a file")
    specs = [parse_candidate(c) for c in args.candidate]
    classes = [(s.label, s.classes) for s in specs]
    if args.model:
        classes.insert(0, (f"--model {args.model}", _model_classes(args.model, args.weights)))
    names = read_class_names(args.labels) if args.labels else None
    for where, count in classes:
        if names is not None and len(names) != count:
            raise InputError(
                f"--labels {str(args.labels)!r} lists {len(names)} class names but {where} outputs {count} "
                "classes; one name per output class"
            )
    data = open_dataset(args.data, ground_truth=args.ground_truth, class_names=names)
    recorded = next((s.config.labels for s in specs if s.config.labels), ())  # msmlp-export --labels
    if names is None and recorded:
        data = with_model_labels(data, recorded, args.ground_truth)
    data = data.head(args.limit)
    for where, count in classes:
        data.check_classes(count, where)
    _check_decodable(data, args.strict)
    out = args.out or (specs[0].path.parent if specs else Path(f"eval-{args.model}"))
    workers = args.workers or min(8, os.cpu_count() or 1)
    return specs, data, Path(out), workers


def _check_decodable(data: Any, strict: bool) -> None:
    """Every image decodes (:mod:`msmlp.data.imagecheck`), checked before a backend loads: with --strict a
    bad one is fatal now rather than mid-run; without, the run skips and lists them, and says so first."""
    from msmlp.data.imagecheck import require_decodable, undecodable
    from msmlp.errors import InputError
    from msmlp.log import logger

    if strict:
        try:
            require_decodable(data.paths, "--data")
        except InputError as exc:
            raise InputError(f"{exc} (--strict: unreadable images are fatal; drop it to skip them)") from None
        return
    bad = undecodable(data.paths)
    if len(bad) == len(data):
        raise InputError(
            f"--data {str(data.source)!r}: none of its {len(data)} images decodes, e.g. {bad[0][1]}"
        )
    if bad:
        logger.warning(
            "eval: %d of %d images do not decode (e.g. %s: %s); they are skipped and listed in eval.json "
            "(--strict makes them fatal)",
            len(bad),
            len(data),
            bad[0][0],
            bad[0][1],
        )


def _model_classes(model: str, weights: Path | None) -> int:
    """--model's class count: its checkpoint's head (a fine-tuned checkpoint keeps its classes)."""
    from msmlp.models.checkpoint import read_state_dict
    from msmlp.models.variant import resolve_classes

    return resolve_classes(model, read_state_dict(weights) if weights else None, None, str(weights or ""))


def _load(specs: list[Any], args: argparse.Namespace) -> list[Any]:
    from msmlp.evaluate.candidates import open_candidate
    from msmlp.evaluate.stream import Candidate
    from msmlp.log import logger
    from msmlp.runtime import open_backend

    found = []
    if args.model:
        torch = open_backend(model=args.model, weights=args.weights, seed=args.seed).load()
        config = torch.info.config
        found.append(Candidate(f"{args.model}@pytorch", torch, config, config.num_classes, _describe(torch)))
    for spec in specs:
        backend = open_candidate(spec, args.threads).load()
        found.append(Candidate(spec.label, backend, spec.config, spec.classes, _describe(backend)))
    if any(c.backend.info.synthetic for c in found) or (args.model and not args.weights):
        logger.warning("note: synthetic weights in a candidate: its accuracy is chance, not the model's")
    return found


def _describe(backend: Any) -> dict[str, Any]:
    info = backend.info
    return {
        "backend": info.backend,
        "precision": info.precision,
        "model": info.model,
        "file": str(info.artifact.path) if info.artifact else None,
    }


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="eval", unit="img", disable=not sys.stderr.isatty(), leave=False)
