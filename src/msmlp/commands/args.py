"""Option groups shared by several commands, declared once (after Polygraphy's argument groups).

``add_source_args`` declares "a model name, an ONNX file or an engine" (and optionally a URL);
``add_backend_args`` the runtime options; ``open_source`` turns them into an unloaded backend through
:func:`msmlp.runtime.open_backend`, the one place that decides which backend runs what.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from msmlp.optionspec import parse_providers

__all__ = ["BackendChoices", "add_backend_args", "add_source_args", "open_source", "parse_providers"]


class BackendChoices(Sequence[str]):
    """``--backend`` choices that read the backend table only when argparse checks or prints them: a
    backend registered after the parser was built is a valid choice, and building the parser (every
    command's ``--help``) imports no backend."""

    def _names(self) -> tuple[str, ...]:
        from msmlp.runtime.registry import backend_names

        return backend_names()

    def __getitem__(self, index: Any) -> Any:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def add_source_args(
    p: argparse.ArgumentParser, *, engine: bool = True, url: bool = False, required: bool = True
) -> None:
    """--model NAME [--weights PATH] | --onnx PATH | --engine PLAN [| --url URL], plus --seed."""
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--model", metavar="NAME", help="registered model, run in PyTorch (`msmlp models`)")
    src.add_argument("--onnx", type=Path, metavar="PATH", help="exported ONNX graph")
    if engine:
        src.add_argument("--engine", type=Path, metavar="PLAN", help="TensorRT plan built by msmlp build")
    if url:
        src.add_argument("--url", metavar="URL", help="a running msmlp service, e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--weights", type=Path, metavar="PATH", help="checkpoint for --model (default: synthetic weights)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the synthetic weights for --model (default 0)",
    )


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """--backend (its choices read the backend table when parsed), --precision, --threads, --providers."""
    g = p.add_argument_group("backend")
    g.add_argument(
        "--backend",
        choices=BackendChoices(),
        metavar="NAME",  # argparse would list the choices while building the parser otherwise
        default="auto",
        help="runtime, one of %(choices)s: auto (default: the fastest verified CPU backend for an ONNX "
        "graph, PyTorch for --model, TensorRT for --engine) or a backend name, which always wins",
    )
    g.add_argument(
        "--precision",
        choices=("f32", "bf16"),
        default=None,
        help="inference precision hint for the backends that take one (bf16 needs AMX or AVX-512 BF16; "
        "PyTorch runs it as bf16 autocast)",
    )
    g.add_argument("--threads", type=int, metavar="N", help="intra-op threads (default: one per core)")
    g.add_argument(
        "--providers",
        metavar="P[,P]",
        help="ONNX Runtime execution providers: cpu (default), cuda, tensorrt, or auto (GPU when present)",
    )


def open_source(args: argparse.Namespace) -> Any:
    """The unloaded backend for the source options; errors name the option that was wrong."""
    from msmlp.commands import check_positive
    from msmlp.runtime import open_backend

    if getattr(args, "threads", None) is not None:
        check_positive(args.threads, "--threads")
    for option in ("onnx", "engine", "weights"):
        path = getattr(args, option, None)
        if path is not None and not Path(path).is_file():
            from msmlp.errors import InputError

            raise InputError(f"--{option} {str(path)!r} does not exist or is not a file")
    precision = getattr(args, "precision", None)
    return open_backend(
        model=getattr(args, "model", None),
        weights=getattr(args, "weights", None),
        onnx=getattr(args, "onnx", None),
        engine=getattr(args, "engine", None),
        backend=getattr(args, "backend", "auto") or "auto",
        providers=parse_providers(getattr(args, "providers", None)),
        threads=getattr(args, "threads", None),
        precision={"f32": None}.get(precision, precision),
        seed=getattr(args, "seed", 0),
    )
