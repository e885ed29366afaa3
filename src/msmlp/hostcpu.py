"""The host CPU: its model and the instruction-set flags that decide msmlp's CPU paths, read once from
``/proc/cpuinfo``, and ``MSMLP_CPU_MASK``, which hides flags so a machine can run as if it lacked them.

Everything that decides from CPU features asks :func:`host_cpu` (OpenVINO's BF16 hint, ``--backend auto``,
the export's BF16 step), so the mask reaches all of them, and benchmark records carry
:meth:`HostCpu.record`. The mask changes msmlp's decisions only: the libraries underneath (OpenVINO,
ONNX Runtime, PyTorch) still use whatever instructions the CPU has for their own kernels.

``MSMLP_CPU_MASK`` is a comma-separated list of flag names (:data:`FEATURES`) or groups
(:data:`GROUPS`: ``bf16``, ``amx``, ``vnni``), e.g. ``MSMLP_CPU_MASK=bf16,amx,vnni``.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from typing import Any

from msmlp.errors import InputError

MASK_ENV = "MSMLP_CPU_MASK"
CPUINFO = "/proc/cpuinfo"
# The flags a decision or a figure depends on; the rest of /proc/cpuinfo is not recorded.
FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
GROUPS: dict[str, tuple[str, ...]] = {
    "bf16": ("avx512_bf16", "amx_bf16"),  # native BF16 compute
    "amx": ("amx_tile", "amx_bf16", "amx_int8"),
    "vnni": ("avx512_vnni", "avx_vnni"),  # INT8 dot products outside AMX
}


@dataclass(frozen=True)
class HostCpu:
    """What the CPU reports (``detected``) and what ``MSMLP_CPU_MASK`` hides from msmlp (``masked``).

    ``known`` is False where the flags cannot be read (no ``/proc/cpuinfo``, e.g. macOS); callers then
    go by what their library reports instead.
    """

    model: str
    detected: frozenset[str]
    masked: frozenset[str]
    known: bool

    @property
    def flags(self) -> frozenset[str]:
        """The flags msmlp decides by: the detected ones less the masked ones."""
        return self.detected - self.masked

    def lacks(self, group: str) -> bool:
        """Whether the CPU has none of ``group``'s flags as far as msmlp may tell (not when unknown,
        unless the mask hides the group)."""
        wanted = frozenset(GROUPS[group])
        return not (self.flags & wanted) and (self.known or bool(self.masked & wanted))

    def mask_note(self, group: str | None = None) -> str:
        """`` (avx512_bf16 masked by MSMLP_CPU_MASK)`` where the mask hides a flag of ``group`` the CPU
        has (any flag without a group), else empty: a reason must say the lack is simulated."""
        hidden = self.masked & self.detected
        if group is not None:
            hidden &= frozenset(GROUPS[group])
        return f" ({', '.join(sorted(hidden))} masked by {MASK_ENV})" if hidden else ""

    def record(self) -> dict[str, Any]:
        """The CPU for a benchmark record: model, the relevant flags it has, and the mask where set."""
        found: dict[str, Any] = {
            "model": self.model,
            "flags": sorted(self.detected) if self.known else None,
        }
        if self.masked:
            found["masked"] = sorted(self.masked)
        return found


def host_cpu() -> HostCpu:
    """This machine's CPU under the current ``MSMLP_CPU_MASK`` (read on every call, so a test can set
    it; the cpuinfo file is read once)."""
    model, flags = _read_cpuinfo()
    return HostCpu(
        model=model,
        detected=frozenset(flags or ()),
        masked=parse_mask(os.environ.get(MASK_ENV, "")),
        known=flags is not None,
    )


def parse_mask(text: str) -> frozenset[str]:
    """The flags a mask names (groups expanded); an unknown name is an error that lists the known ones."""
    found: set[str] = set()
    for name in (part.strip().lower() for part in text.replace(" ", ",").split(",")):
        if not name:
            continue
        if name in GROUPS:
            found.update(GROUPS[name])
        elif name in FEATURES:
            found.add(name)
        else:
            raise InputError(
                f"{MASK_ENV}={text!r}: {name!r} is not a CPU feature msmlp knows; use the groups "
                f"{', '.join(GROUPS)} or the flags {', '.join(FEATURES)}"
            )
    return frozenset(found)


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset[str] | None]:
    """The model name and the :data:`FEATURES` among the flags of the first processor in a
    ``/proc/cpuinfo`` text; None for what the text does not say (ARM kernels write no ``flags``)."""
    model: str | None = None
    flags: frozenset[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key == "model name" and model is None:
            model = value.strip() or None
        elif key == "flags" and flags is None:
            flags = frozenset(value.split()) & frozenset(FEATURES)
        if model is not None and flags is not None:
            break
    return model, flags


@functools.lru_cache(maxsize=1)
def _read_cpuinfo() -> tuple[str, frozenset[str] | None]:
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            model, flags = parse_cpuinfo(f.read())
    except OSError:
        model, flags = None, None
    return model or platform.processor() or "unknown", flags
