"""The backend table, after Ultralytics' ``export_formats()``: one :class:`BackendSpec` per backend.

Selection (``--backend auto``), ``bench --compare`` rows, the export's verification steps, the
layer-by-layer runs of ``compare-layers``, the CLI's ``--backend`` choices, host information and tool
versions all iterate this table instead of naming backends. Each backend module declares its own
``SPEC``; the built-in modules are imported on the first read of the table, never by ``import
msmlp.runtime``, and none of them imports its heavy library at module level. A new backend is its module
and one :func:`register_backend` call.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmlp.errors import InputError, InternalError
from msmlp.log import logger

if TYPE_CHECKING:
    from msmlp.artifacts import ArtifactInfo
    from msmlp.runtime.base import Backend

# The modules that declare the built-in backends' ``SPEC``, in table order (the reference first).
BUILTIN = (
    "msmlp.runtime.torch_backend",
    "msmlp.runtime.ort",
    "msmlp.runtime.openvino",
    "msmlp.runtime.trt",
)
KINDS = ("model", "onnx", "plan")  # what a backend can open: a registered model name, an ONNX graph, a plan


@dataclass(frozen=True)
class Probe:
    """The one "is it installed" check of a backend: the module it imports and how to install it."""

    module: str
    install: str  # e.g. "pip install openvino"

    def missing(self) -> str | None:
        """Why the backend cannot be imported here, or None when it can (finds, does not import)."""
        if importlib.util.find_spec(self.module) is None:
            return f"{self.module} is not installed ({self.install})"
        return None

    def version(self) -> str | None:
        """The module's ``__version__`` (imports it), None where it is absent or does not load."""
        if self.missing():
            return None
        try:
            return str(importlib.import_module(self.module).__version__)
        except ImportError:
            return None
        except OSError:  # bindings whose shared library is missing (TensorRT without libnvinfer)
            logger.debug("%s is present but not importable", self.module, exc_info=True)
            return None


@dataclass(frozen=True)
class Request:
    """What :func:`msmlp.runtime.open_backend` hands a backend's factory; each factory takes what it uses."""

    source: Any  # a model name or module (kind "model"), or a file path
    kind: str  # one of KINDS
    precision: str | None = None  # an inference-precision hint ("bf16", "f32") or None
    threads: int | None = None
    providers: Any = None
    artifact: ArtifactInfo | None = None  # the file's description when the caller already has it
    weights: str | Path | None = None
    seed: int = 0
    cache: bool = True  # False: no compiled-model cache (throw-away graphs, e.g. tapped copies)


@dataclass(frozen=True)
class Candidate:
    """One way ``--backend auto`` may run a graph of precision ``graph``: backend, hint, and the
    model.json verification key that must have passed. Lower ``rank`` = faster (measured: see
    docs/performance.md); ``lowers`` marks a way that computes below the graph's own precision, which
    an unverified graph never gets."""

    backend: str
    hint: str | None
    key: str
    precision: str  # the precision it computes in, as BackendInfo.precision reports it
    graph: str
    rank: int
    lowers: bool = False

    @property
    def label(self) -> str:
        hint = f" ({self.hint} hint)" if self.hint and self.precision == "int8" else ""
        return f"{self.backend} {self.precision}{hint}"


@dataclass(frozen=True)
class Verification:
    """A verification the export runs on a committed graph on this backend, recorded under ``key`` in
    model.json. ``hints`` are tried in order (the first this machine can run); ``bf16`` marks the
    step that exists to verify BF16 compute: ``--bf16`` makes it required, ``--no-bf16`` drops it (and
    the bf16 hint from every step)."""

    key: str
    graph: str  # the graph precision it runs: "fp32" (model.onnx) or "int8" (model.int8.onnx)
    tolerance: str  # whose tolerance judges it
    title: str
    hints: tuple[str | None, ...] = (None,)
    bf16: bool = False


@dataclass(frozen=True)
class Sources:
    """What ``bench --compare`` has to run: the PyTorch reference module, the graphs by precision and
    any TensorRT plans."""

    module: Any
    graphs: tuple[tuple[str, Path], ...]
    plans: tuple[Path, ...] = ()
    threads: int | None = None
    torch_compile: bool = False  # also a torch.compile row (inductor, freezing, BF16 autocast)


Rows = list[tuple[str, "Backend"]]


@dataclass(frozen=True)
class BackendSpec:
    """Everything the tools need to know about one backend."""

    name: str
    title: str  # for people: "ONNX Runtime"
    probe: Probe
    opens: frozenset[str]  # subset of KINDS
    factory: Callable[[Request], Backend]
    hints: tuple[str, ...] = ()  # the inference-precision hints it takes
    hint_support: Callable[[str], tuple[bool, str]] | None = None  # can this machine run the hint?
    candidates: tuple[Candidate, ...] = ()
    verifications: tuple[Verification, ...] = ()
    compare_rows: Callable[[Sources, dict[str, str]], Rows] | None = None
    compare_layer_targets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    intermediate_outputs: bool = False  # Backend.infer(..., outputs=[graph tensor names])
    layer_profile: bool = False  # Backend.profile_layers(x, runs=, top=)
    plugin_nodes: bool = False  # runs graphs with the msmlp shift plugin nodes
    distributions: tuple[str, ...] = ()  # package names whose versions an export records

    def __post_init__(self) -> None:
        if not set(self.opens) <= set(KINDS) or not self.opens:
            raise InternalError(f"backend {self.name!r} opens {sorted(self.opens)}, not a subset of {KINDS}")

    def unavailable(self, hint: str | None = None) -> str | None:
        """Why this backend (with ``hint``) cannot run here, or None when it can."""
        why = self.probe.missing()
        if why or hint is None or self.hint_support is None:
            return why
        ok, reason = self.hint_support(hint)
        return None if ok else reason

    def open(self, request: Request) -> Backend:
        return self.factory(request)


_TABLE: dict[str, BackendSpec] = {}
_LOADED = False


def register_backend(spec: BackendSpec, *, replace: bool = False) -> BackendSpec:
    """Add ``spec`` to the table (after the built-in backends); ``replace`` to re-register a name."""
    _load_builtin()
    if spec.name in _TABLE and not replace:
        raise InputError(f"a backend named {spec.name!r} is already registered; pass replace=True")
    if spec.name == "auto":
        raise InputError("'auto' is the selection, not a backend name")
    _TABLE[spec.name] = spec
    return spec


def unregister_backend(name: str) -> None:
    """Remove a registered backend (tests that register a toy one clean up with this)."""
    _load_builtin()
    _TABLE.pop(name, None)


def backend_specs() -> tuple[BackendSpec, ...]:
    """The table, in order: the reference (PyTorch) first, then the built-in and registered backends."""
    _load_builtin()
    return tuple(_TABLE.values())


def get_spec(name: str) -> BackendSpec:
    _load_builtin()
    if name not in _TABLE:
        raise InputError(f"--backend {name!r} is not one of {', '.join(backend_names())}")
    return _TABLE[name]


def backend_names() -> tuple[str, ...]:
    """``auto`` and every backend's name: the ``--backend`` choices."""
    return ("auto", *(s.name for s in backend_specs()))


def distributions() -> tuple[str, ...]:
    """The package names of every backend, for an export's recorded tool versions."""
    return tuple(d for s in backend_specs() for d in s.distributions)


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    builtin = {}
    for module in BUILTIN:
        spec = importlib.import_module(module).SPEC
        builtin[spec.name] = spec
    registered = dict(_TABLE)  # registered before the first read: keep them after the built-in ones
    _TABLE.clear()
    _TABLE.update(builtin)
    _TABLE.update(registered)
