"""One protocol for every backend (PyTorch, ONNX Runtime, OpenVINO, TensorRT), after Polygraphy's runners.

A backend is loaded lazily (``load``), runs ``infer`` on a dict of named arrays, and is released by
``close``; it is a context manager, and it times every call. What it runs is described by a read-only
:class:`BackendInfo` (``backend.info``, after Polygraphy's ``get_input_metadata()``), set once by the
backend when it loads; nobody outside a backend changes it. The comparator and the batcher only ever see
this protocol.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from msmlp.artifacts import UNBOUNDED, ArtifactInfo
from msmlp.errors import InputError, InternalError
from msmlp.features import FeatureLayout
from msmlp.models.config import DeployConfig

TIMES_KEPT = 1024  # recent call times kept per backend (a long-running service must not grow without bound)


@dataclass(frozen=True)
class BackendInfo:
    """What a loaded backend runs: I/O, batch range, precision, and the model and file behind it."""

    backend: str
    precision: str
    input_name: str
    input_shape: tuple[int, ...]  # the batch axis as -1
    output_name: str
    batch_range: tuple[int, int] = (1, UNBOUNDED)
    model: str | None = None
    config: DeployConfig | None = None
    artifact: ArtifactInfo | None = None
    synthetic: bool = False  # synthetic weights: parity is real, predictions are meaningless
    details: Mapping[str, Any] = field(default_factory=dict)  # providers, threads, device...

    @classmethod
    def of_artifact(cls, artifact: ArtifactInfo, **values: Any) -> BackendInfo:
        """The info of a backend that runs ``artifact``: its model, config, synthetic-weights flag and
        (unless given) batch range come from the artifact."""
        values.setdefault("batch_range", artifact.batch_range)
        return cls(
            model=artifact.model,
            config=artifact.config,
            artifact=artifact,
            synthetic=artifact.synthetic,
            **values,
        )

    @property
    def features(self) -> FeatureLayout | None:
        """The outputs and sizes of a feature graph (``msmlp-export --features``); None for a classifier."""
        return self.artifact.features if self.artifact is not None else None

    def to_dict(self) -> dict[str, Any]:
        found = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("config", "artifact", "details")
        }
        found.update(
            input_shape=list(self.input_shape),
            batch_range=list(self.batch_range),
            file=str(self.artifact.path) if self.artifact else None,
            **dict(self.details),
        )
        return found


class Backend(ABC):
    """Base class: subclasses implement ``_load`` (returning their :class:`BackendInfo`), ``_infer``
    and optionally ``_close``."""

    name: str = "backend"

    def __init__(self) -> None:
        self._info: BackendInfo | None = None
        self.last_infer_s: float | None = None
        self.infer_times_s: deque[float] = deque(maxlen=TIMES_KEPT)

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._info is not None

    def load(self) -> Backend:
        if self._info is None:
            info = self._load()
            if not isinstance(info, BackendInfo):
                raise InternalError(
                    f"{type(self).__name__}._load returned {type(info).__name__}, not BackendInfo"
                )
            self._info = info
        return self

    def close(self) -> None:
        if self._info is not None:
            self._close()
            self._info = None

    def __enter__(self) -> Backend:
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what it runs (read-only) -----------------------------------------------------------------
    @property
    def info(self) -> BackendInfo:
        """The backend's description; loads the backend on first use."""
        self.load()
        assert self._info is not None
        return self._info

    @property
    def input_name(self) -> str:
        return self.info.input_name

    @property
    def output_name(self) -> str:
        return self.info.output_name

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.info.input_shape

    @property
    def batch_range(self) -> tuple[int, int]:
        return self.info.batch_range

    @property
    def precision(self) -> str:
        return self.info.precision

    # -- inference --------------------------------------------------------------------------------
    def infer(
        self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch. ``feed`` maps input names to arrays; returns output names to arrays.

        ``outputs``: graph tensors to return instead of the logits, for the backends whose spec has
        ``intermediate_outputs`` (the graph must expose them as outputs); tensors it does not expose
        are left out of the result, so diagnosis needs no runner of its own.
        """
        info = self.info
        array = self.check_feed(feed)
        start = time.perf_counter()
        if outputs is not None:
            out = self._infer_outputs({info.input_name: array}, tuple(outputs))
        else:
            out = self._infer({info.input_name: array})
        self.last_infer_s = time.perf_counter() - start
        self.infer_times_s.append(self.last_infer_s)
        if outputs is not None:
            return out
        got = out[info.output_name].shape[0]
        if got != array.shape[0]:
            raise InternalError(f"{self.name}: {array.shape[0]} inputs gave {got} outputs")
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Convenience: one input array in, the logits out."""
        return self.infer({self.input_name: batch})[self.output_name]

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        info = self.info
        if set(feed) != {info.input_name}:
            raise InputError(
                f"{self.name}: inputs {sorted(feed)} do not match the model's input {[info.input_name]!r}"
            )
        raw = np.asarray(feed[info.input_name])
        if raw.dtype.kind not in "fiu":
            raise InputError(f"{self.name}: input dtype {raw.dtype} is not numeric; send float32 values")
        array = np.ascontiguousarray(raw, dtype=np.float32)
        expected = info.input_shape
        if array.ndim != len(expected) or any(e not in (-1, g) for e, g in zip(expected, array.shape)):
            raise InputError(
                f"{self.name}: input shape {tuple(array.shape)} does not match {expected} "
                "(-1 marks the batch axis; the spatial size is fixed by the model)"
            )
        lo, hi = info.batch_range
        if not lo <= array.shape[0] <= hi:
            raise InputError(
                f"{self.name}: batch {array.shape[0]} is outside the supported range {lo}..{hi}; "
                "split the batch or rebuild with a wider --batch MIN,OPT,MAX"
            )
        if not np.isfinite(array).all():
            raise InputError(f"{self.name}: the input holds NaN or infinite values; send finite numbers")
        return array

    @abstractmethod
    def _load(self) -> BackendInfo: ...

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass

    def _infer_outputs(self, feed: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Optional: the named graph tensors (backends with ``intermediate_outputs`` implement it)."""
        raise InputError(
            f"the {self.name} backend returns its output {self.info.output_name!r} only, not the graph "
            f"tensors {list(names)[:3]}; use a backend with intermediate outputs (msmlp compare-layers)"
        )

    def profile_layers(self, x: np.ndarray, *, runs: int = 10, top: int = 15) -> dict[str, Any]:
        """Optional: where the time goes per layer, from the backend's own profiler, ranked with
        :func:`msmlp.runtime.profiling.ranked` (backends whose spec has ``layer_profile`` implement it)."""
        return {"available": False, "reason": f"the {self.name} backend exposes no per-layer profiler"}

    def describe(self) -> dict[str, Any]:
        return self.info.to_dict()

    def check_model(self, name: str, config: DeployConfig) -> None:
        """Refuse a file exported from another model: by recorded name when known, else by shapes."""
        info = self.info
        where = info.artifact.path if info.artifact else self.name
        if info.model and info.model != name:
            raise InputError(
                f"{where} was exported from model {info.model!r}, not {name!r}; pass "
                f"--model {info.model} or the file exported for {name}"
            )
        want = (-1, *config.input_size)
        got = info.input_shape
        if len(got) != len(want) or any(g != -1 and g != w for g, w in zip(got[1:], want[1:])):
            raise InputError(
                f"{where} takes input {_fmt(got)} but model {name!r} takes {_fmt(want)}; "
                "is it the file of a different model?"
            )
        outputs = info.artifact.outputs if info.artifact else ()
        classes = outputs[0].shape[-1] if outputs and outputs[0].shape else -1
        if classes not in (-1, config.num_classes):
            raise InputError(
                f"{where} outputs {classes} classes but model {name!r} has {config.num_classes}; "
                "is it the file of a different model?"
            )


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("N" if d == -1 else str(d) for d in shape) + ")"


def run_in_batches(
    backend: Backend, inputs: np.ndarray, max_batch: int = 32, outputs: Sequence[str] | None = None
) -> Any:
    """Logits for any number of inputs, in batches the backend accepts (at most ``max_batch``); a short
    last batch is padded up to the backend's minimum batch and the padding dropped again. With
    ``outputs`` (a feature graph's output names): a dict of each of those outputs, batched the same way."""
    lo, hi = backend.batch_range
    step = max(lo, min(hi, max_batch))
    parts: list[dict[str | None, np.ndarray]] = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start : start + step]
        pad = max(0, lo - len(chunk))
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
        if outputs is None:
            parts.append({None: backend(padded)[: len(chunk)]})
            continue
        found = backend.infer({backend.input_name: padded}, outputs=outputs)
        missing = [n for n in outputs if n not in found]
        if missing:
            raise InputError(f"the {backend.name} backend returned no output {missing[0]!r}")
        parts.append({n: found[n][: len(chunk)] for n in outputs})
    if not parts:
        raise InputError("no inputs given")
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return merged[None] if outputs is None else merged
