"""``PATH[@BACKEND]`` candidates, as ``msmlp compare-layers`` takes them, plus ``auto`` (the default here):
read cheaply first (class count, preprocessing) so bad inputs fail before any backend loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from msmlp.artifacts import PLAN_SUFFIXES, ArtifactInfo, read_artifact
from msmlp.errors import InputError
from msmlp.models.config import DeployConfig
from msmlp.runtime import Backend, open_backend

AUTO = "auto"


@dataclass(frozen=True)
class Spec:
    """A candidate before loading: its file, where it runs, and what its artefact says it is."""

    path: Path
    backend: str  # "auto" or one of diagnose.runners.layer_targets()
    artifact: ArtifactInfo

    @property
    def label(self) -> str:
        return f"{self.path.resolve().parent.name}/{self.path.name}@{self.backend}"

    @property
    def config(self) -> DeployConfig:
        if self.artifact.config is None:
            raise InputError(
                f"{self.path} does not record its model, so its preprocessing is unknown; export it with msmlp-export"
            )
        return self.artifact.config

    @property
    def classes(self) -> int:
        """From the graph's output shape; the recorded config where the shape leaves it open."""
        shape = self.artifact.outputs[0].shape if self.artifact.outputs else ()
        return shape[-1] if shape and shape[-1] > 0 else self.config.num_classes


def parse_candidate(text: str) -> Spec:
    """``PATH``, ``PATH@auto`` or ``PATH@BACKEND`` with compare-layers' backends."""
    from msmlp.diagnose.runners import Target  # imports onnx: only once a candidate is named

    path, at, backend = str(text).rpartition("@")
    if not at or backend == AUTO:
        path = path if at else str(text)
        if not Path(path).is_file():
            raise InputError(f"candidate {path!r} does not exist or is not a file")
        target = Target(Path(path), AUTO)
    else:
        target = Target.parse(text)
    if target.path.suffix.lower() in PLAN_SUFFIXES and target.backend not in (AUTO, "tensorrt"):
        raise InputError(f"candidate {text!r} is a TensorRT plan; run it @tensorrt (or @auto)")
    spec = Spec(target.path, target.backend, read_artifact(target.path))
    spec.config  # noqa: B018 - fail now, not after the others have loaded
    return spec


def open_candidate(spec: Spec, threads: int | None) -> Backend:
    """The unloaded backend for ``spec``, through :func:`msmlp.runtime.open_backend`."""
    if spec.path.suffix.lower() in PLAN_SUFFIXES:
        return open_backend(engine=spec.path)
    if spec.backend == AUTO:
        return open_backend(onnx=spec.path, backend="auto", threads=threads)
    from msmlp.diagnose.runners import layer_targets
    from msmlp.runtime.registry import Request

    backend, options = layer_targets()[spec.backend]  # parse_candidate checked the name
    return backend.open(Request(spec.path, "onnx", threads=threads, artifact=spec.artifact, **options))


__all__ = ["AUTO", "Spec", "open_candidate", "parse_candidate"]
