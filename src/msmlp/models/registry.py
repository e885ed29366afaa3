"""Model registry: a model name is its builder, and each carries a deployment config.

Export and runtime read the :class:`DeployConfig` instead of hard-coding input sizes or normalisation.
A model's ``DeployConfig.family`` names a registered :class:`FamilySpec`, which tools read instead of
guessing block types, layer groups or norms from names.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msmlp.errors import InputError
from msmlp.extras import require_extra
from msmlp.models.config import DeployConfig
from msmlp.models.family import FamilySpec

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    config: DeployConfig


_REGISTRY: dict[str, ModelEntry] = {}
_FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    """Register a family's declaration; its models name it in ``DeployConfig.family``."""
    if spec.name in _FAMILIES:
        raise ValueError(f"family {spec.name!r} registered twice")
    _FAMILIES[spec.name] = spec
    return spec


def unregister_family(name: str) -> None:
    """Remove a family (tests that define their own); its models must be unregistered first."""
    users = [n for n, e in _REGISTRY.items() if e.config.family == name]
    if users:
        raise ValueError(f"family {name!r} still has registered models {users}; unregister them first")
    _FAMILIES.pop(name, None)


def get_family(name: str) -> FamilySpec:
    """The declaration of family ``name`` (a ``DeployConfig.family``), or a clear error."""
    try:
        return _FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(_FAMILIES)) or "none"
        raise InputError(
            f"model family {name!r} has no registered FamilySpec (known: {known}); declare one and "
            "register it with msmlp.models.registry.register_family"
        ) from None

# Importing a family's module registers its models; done on the first lookup, so that importing
# ``msmlp.models`` (for ``DeployConfig``) stays free of torch.
FAMILY_MODULES = ("msmlp.models.msmlp", "msmlp.models.s2mlpv2")


def _registry() -> dict[str, ModelEntry]:
    if not _REGISTRY:
        require_extra("export", "a registered model (the PyTorch reference)", modules=("torch",))
    for module in FAMILY_MODULES:
        importlib.import_module(module)
    return _REGISTRY


def register_model(config: DeployConfig) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name, with the deployment config the model carries.

    ``config.family`` must name a registered family: a model tools know nothing about fails here.
    """
    get_family(config.family)

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, config)
        return builder

    return wrap


def unregister_model(name: str) -> None:
    """Remove a registered model (tests that register their own); unknown names are an error."""
    _entry(name)
    del _REGISTRY[name]


def list_models(pattern: str = "*", *, test: bool | None = None) -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. ``list_models("msmlp*")``.

    ``test=True`` keeps only the small test configurations, ``test=False`` only the full-size models.
    """
    names = sorted(n for n in _registry() if fnmatch.fnmatch(n, pattern))
    if test is None:
        return names
    return [n for n in names if bool(_REGISTRY[n].config.extra.get("test_config")) == test]


def _entry(name: str) -> ModelEntry:
    try:
        return _registry()[name]
    except KeyError:
        normal = {n.lower().replace("-", "_").replace("/", "_"): n for n in _REGISTRY}
        key = name.lower().replace("-", "_").replace("/", "_")
        close = [normal[k] for k in difflib.get_close_matches(key, list(normal), n=3, cutoff=0.5)]
        hint = f"did you mean {', '.join(close)}?" if close else f"known models: {', '.join(list_models())}"
        raise InputError(f"unknown model {name!r}; {hint} (`msmlp models` lists them)") from None


def get_config(name: str) -> DeployConfig:
    """The deployment config of a registered model."""
    return _entry(name).config


def model_family(model: nn.Module) -> FamilySpec:
    """The family declaration of a model built by :func:`create_model` (it carries ``deploy_config``)."""
    config = getattr(model, "deploy_config", None)
    if not isinstance(config, DeployConfig):
        raise InputError(
            f"{type(model).__name__} carries no deploy_config, so its family is unknown; build it with "
            "msmlp.create_model or pass its FamilySpec (family=)"
        )
    return get_family(config.family)


def create_model(name: str, pretrained: str | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model in eval mode, optionally loading a checkpoint file.

    ``pretrained`` is a path to a checkpoint (a plain state dict, or one under ``model`` or
    ``state_dict``). ``overrides`` go to the builder (e.g. ``num_classes``).
    """
    entry = _entry(name)
    model = entry.builder(**overrides)
    model.deploy_config = entry.config if not overrides else _override_config(entry.config, overrides)
    model.model_name = name
    if pretrained is not None:
        from msmlp.models.checkpoint import load_checkpoint

        load_checkpoint(model, pretrained)
    return model.eval()


def _override_config(config: DeployConfig, overrides: dict[str, Any]) -> DeployConfig:
    from dataclasses import replace

    if "num_classes" in overrides:
        return replace(config, num_classes=int(overrides["num_classes"]))
    return config
