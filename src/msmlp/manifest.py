"""``model.json``: the one writer of the export's description of its folder (read back by
:func:`msmlp.artifacts.read_artifact`)."""

from __future__ import annotations

import datetime as dt
import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from msmlp.artifacts import FORMAT, MANIFEST, ONNX_FILES, read_json
from msmlp.features import BATCH_DIM, FeatureLayout
from msmlp.fileio import file_sha256, write_text_atomic
from msmlp.models.config import DeployConfig


class Manifest:
    """``model.json``: the export's description of every verified artefact in its folder.

    Opening an existing manifest for the same model keeps the entries whose files are still there with
    the recorded hash, so ``--int8`` after an earlier ``--fp16`` run lists both; entries whose file is
    gone or changed are dropped. Written atomically after every committed artefact. The content is
    private: it changes only through the methods below, and is read back by
    :func:`msmlp.artifacts.read_artifact` from the file.
    """

    def __init__(self, out: Path, data: dict[str, Any]) -> None:
        self.out = Path(out)
        self._data = data

    @classmethod
    def open(
        cls,
        out: str | Path,
        *,
        model: str,
        config: DeployConfig,
        weights: Mapping[str, Any],
        opset: int,
        batch: tuple[int, int, int],
        versions: Mapping[str, str] | None = None,
    ) -> Manifest:
        """``versions``: the tool versions to record (default: :func:`tool_versions` of the core
        libraries; the export adds each backend's distributions from the backend table)."""
        out = Path(out)
        data: dict[str, Any] = {
            "format": FORMAT,
            "model": model,
            "family": config.family,
            "config": json.loads(json.dumps(config.to_dict())),  # as read back: lists, not tuples
            "weights": dict(weights),
            "opset": opset,
            "batch": list(batch),
            "input": {"name": config.input_name, "shape": ["batch", *config.input_size], "dtype": "float32"},
            "output": {
                "name": config.output_name,
                "shape": ["batch", config.num_classes],
                "dtype": "float32",
            },
            "artifacts": {},
            "verification": {},
            "versions": dict(versions) if versions is not None else tool_versions(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        old = read_json(out / MANIFEST)
        same = old and all(
            old.get(k) == data[k] for k in ("format", "model", "config", "weights", "opset", "batch")
        )
        if same:
            for name, entry in (old.get("artifacts") or {}).items():
                file = out / name
                if isinstance(entry, dict) and file.is_file() and entry.get("sha256") == file_sha256(file):
                    data["artifacts"][name] = entry
                    if entry.get("precision") and entry.get("verification") and file.suffix == ".onnx":
                        data["verification"][entry["precision"]] = entry["verification"]
            for key, summary in (old.get("verification") or {}).items():  # backend variants (bf16, ...)
                if isinstance(summary, dict) and summary.get("file") in data["artifacts"]:
                    data["verification"].setdefault(key, summary)
            data["onnx"] = old.get("onnx") if "model.onnx" in data["artifacts"] else None
        return cls(out, data)

    def entry(self, name: str) -> dict[str, Any] | None:
        found = self._data["artifacts"].get(name)
        return found if isinstance(found, dict) else None

    def add(self, path: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Record a committed artefact (its hash and size are taken from the file)."""
        path = Path(path)
        full = {**entry, "sha256": file_sha256(path), "bytes": path.stat().st_size}
        self._data["artifacts"][path.name] = full
        precision = full.get("precision")
        if precision and full.get("verification") and path.suffix == ".onnx":
            self._data["verification"][precision] = full["verification"]
        if path.name == ONNX_FILES["fp32"]:
            self._data["onnx"] = {"file": path.name, "sha256": full["sha256"], "bytes": full["bytes"]}
        return full

    def remove(self, name: str) -> None:
        """Forget an artefact whose file was deleted, and every verification recorded for that file."""
        self._data["artifacts"].pop(name, None)
        recorded = self._data["verification"]
        for key in [
            k
            for k, v in recorded.items()
            if isinstance(v, dict) and (v.get("file") or ONNX_FILES.get(k)) == name
        ]:
            del recorded[key]

    def record_verification(self, key: str, summary: Mapping[str, Any]) -> None:
        """Record a verification that is not an artefact of its own (a graph on another backend, e.g. BF16
        on OpenVINO); ``summary["file"]`` names the graph, so the entry is dropped with that file."""
        self._data["verification"][key] = dict(summary)

    def record_features(self, layout: FeatureLayout) -> None:
        """A feature export: its named outputs (channels, stride per output, like timm's
        ``feature_info``) and input sizes replace the classifier's one logits output; the shapes are the
        ones the graph's own inputs and outputs declare."""
        self._data.pop("output", None)
        self._data["features"] = layout.to_dict()
        self._data["input"]["shape"] = [BATCH_DIM, self._data["input"]["shape"][1], *layout.input_dims()]
        self._data["outputs"] = [
            {"name": o.name, "shape": [BATCH_DIM, o.channels, *layout.output_dims(o)], "dtype": "float32"}
            for o in layout.outputs
        ]

    def record_timings(self, timings: Mapping[str, float]) -> None:
        """Seconds per export step, for the record."""
        self._data["timings_s"] = dict(timings)

    def record_skipped(self, skipped: Mapping[str, str]) -> None:
        """Steps that did not run and why (e.g. BF16 on a CPU without it)."""
        self._data["skipped"] = dict(skipped)

    def write(self) -> Path:
        path = self.out / MANIFEST
        write_text_atomic(path, json.dumps(self._data, indent=2, default=str) + "\n")
        return path


def tool_versions(distributions: Sequence[str] = ()) -> dict[str, str]:
    """Versions of the libraries an artefact depends on, for the record: the core ones, then
    ``distributions`` (each backend's packages, from the backend table)."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for dist in ("msmlp", "torch", "onnx", "onnxslim", "nvidia-modelopt", *distributions):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found
