"""What tools need to know about a model family, declared by the family (as timm's pretrained config
declares ``first_conv`` and ``classifier``), so no tool guesses it from class names or name patterns.

A family file declares one :class:`FamilySpec` and registers it (:func:`msmlp.models.registry.register_family`);
its models name it in ``DeployConfig.family``. :func:`family_layout` resolves the declaration against a
built model: which module paths are residual blocks, which layer group (sensitivity, compare-layers) each
module belongs to, which modules' exported nodes FP16 keeps in FP32, which parameters are layer scales.
A declaration that does not fit the model (a block child in no group, no block at all) is an error here,
not a wrong answer later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch.nn as nn

from msmlp.errors import InputError
from msmlp.models.layers import FUSED_NAMES

GRAPH_GROUP = "graph"  # nodes outside every module (top-level glue)
_CONTAINERS = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


@dataclass(frozen=True)
class BlockSpec:
    """One residual block type: which of its child modules form which layer group.

    ``groups``: group name (e.g. ``"mix"``, ``"mlp"``) -> the block's child module names in it; every
    child must be in one. ``own``: the group of the nodes the block computes itself (residual adds,
    layer scale, shift glue). ``layer_scales``: the block's parameters that start near zero and keep it
    inert until trained (synthetic weights redraw them so the block contributes).
    """

    type: type[nn.Module]
    groups: Mapping[str, tuple[str, ...]]
    own: str
    layer_scales: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.type, type) and issubclass(self.type, nn.Module)):
            raise TypeError(f"BlockSpec.type must be an nn.Module subclass, got {self.type!r}")
        if not self.groups or self.own not in self.groups:
            raise ValueError(
                f"BlockSpec for {self.type.__name__}: own group {self.own!r} must be one of the declared "
                f"groups {sorted(self.groups)}"
            )

    def group_of_child(self, child: str) -> str | None:
        return next((g for g, children in self.groups.items() if child in children), None)


@dataclass(frozen=True)
class FamilySpec:
    """A family's declaration. Every field is required: an empty tuple says "none", on purpose.

    ``fp32_norms``: module types whose exported nodes stay FP32 in an FP16 graph (norms written out op
    by op square the activations, and FP16 overflows there). ``shift_forms``: the builders'
    ``shift_form`` values, the deployment form first (empty: the builders take no ``shift_form``). ``plugin_shifts``: the fused shift slots
    (:data:`msmlp.models.layers.FUSED_NAMES`) that ``shift="plugin"`` exports as plugin nodes.
    ``classifier``: the module path of the final Linear (timm's pretrained-config ``classifier``); a
    checkpoint's class count is the row count of its ``<classifier>.weight``. ``input_stride``: the total
    stride of the family's builders, so any input side that is a multiple of it runs (0: only the
    registered input size).
    """

    name: str
    blocks: tuple[BlockSpec, ...]
    fp32_norms: tuple[type[nn.Module], ...]
    shift_forms: tuple[str, ...]
    plugin_shifts: tuple[str, ...]
    classifier: str
    input_stride: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("FamilySpec.name must not be empty")
        if not self.blocks:
            raise ValueError(f"family {self.name!r} declares no block types; tools need its residual blocks")
        unknown = [s for s in self.plugin_shifts if s not in FUSED_NAMES]
        if unknown:
            raise ValueError(f"family {self.name!r}: plugin shifts {unknown} are not among {FUSED_NAMES}")
        if not self.classifier:
            raise ValueError(
                f"family {self.name!r} declares no classifier; name its final Linear (e.g. 'head')"
            )
        if self.input_stride < 0:
            raise ValueError(f"family {self.name!r}: input_stride {self.input_stride} must be >= 0")

    def block_spec(self, module: nn.Module) -> BlockSpec | None:
        return next((b for b in self.blocks if isinstance(module, b.type)), None)


@dataclass(frozen=True)
class FamilyLayout:
    """A family's declaration resolved on one model: per module path, its group and what it is."""

    family: str
    groups: Mapping[str, str]  # module path ("" is the model) -> layer group
    blocks: tuple[str, ...]  # module paths of the residual blocks, in model order
    fp32_modules: frozenset[str]  # module paths whose nodes FP16 keeps in FP32
    layer_scales: tuple[str, ...] = field(default=())  # full parameter names

    def group(self, path: str) -> str:
        """The group of module ``path`` or of the nearest enclosing module this layout knows."""
        parts = path.split(".") if path else []
        for end in range(len(parts), 0, -1):
            found = self.groups.get(".".join(parts[:end]))
            if found is not None:
                return found
        return GRAPH_GROUP

    def keeps_fp32(self, path: str) -> bool:
        """Whether module ``path`` is, or sits inside, a module whose nodes FP16 keeps in FP32."""
        parts = path.split(".") if path else []
        return any(".".join(parts[:end]) in self.fp32_modules for end in range(1, len(parts) + 1))


def family_layout(model: nn.Module, spec: FamilySpec) -> FamilyLayout:
    """Resolve ``spec`` on ``model``; raise :class:`InputError` where the declaration does not fit."""
    modules = dict(model.named_modules())
    blocks = {path: b for path, m in modules.items() if path and (b := spec.block_spec(m)) is not None}
    if not blocks:
        declared = ", ".join(b.type.__name__ for b in spec.blocks)
        raise InputError(
            f"{type(model).__name__} has no block of family {spec.name!r}'s declared types ({declared}); "
            "declare its residual block in the family's FamilySpec"
        )
    groups: dict[str, str] = {}
    scales: list[str] = []
    for path, bspec in blocks.items():
        groups[path] = f"{path}/{bspec.own}"
        for child, _ in modules[path].named_children():
            kind = bspec.group_of_child(child)
            if kind is None:
                raise InputError(
                    f"family {spec.name!r}: child {child!r} of block {path} ({bspec.type.__name__}) is in none "
                    f"of the declared groups {dict(bspec.groups)}; add it to the BlockSpec"
                )
            groups[f"{path}.{child}"] = f"{path}/{kind}"
        for name in bspec.layer_scales:
            if not isinstance(getattr(modules[path], name, None), nn.Parameter):
                raise InputError(
                    f"family {spec.name!r}: block {path} has no parameter {name!r} (layer_scales)"
                )
            scales.append(f"{path}.{name}")
    for path in modules:
        if path and not any(path == b or path.startswith(b + ".") for b in blocks):
            groups[path] = _outer_group(path, modules)
    fp32 = frozenset(p for p, m in modules.items() if p and isinstance(m, spec.fp32_norms))
    return FamilyLayout(spec.name, groups, tuple(blocks), fp32, tuple(scales))


def _outer_group(path: str, modules: Mapping[str, nn.Module]) -> str:
    """A module outside the blocks groups under its outermost enclosing module that is neither a
    container nor an element of one (``layers.0.downsample.proj`` -> ``layers.0.downsample``)."""
    parts = path.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        parent = modules.get(".".join(parts[: end - 1]))
        module = modules.get(prefix)
        if module is not None and not isinstance(module, _CONTAINERS) and not isinstance(parent, _CONTAINERS):
            return prefix
    return path
