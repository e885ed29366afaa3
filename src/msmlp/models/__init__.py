"""Reference PyTorch backbones and their registry. Importing this registers every family."""

from msmlp.models import msmlp as _msmlp  # noqa: F401  (registers msmlp_*)
from msmlp.models import s2mlpv2 as _s2mlpv2  # noqa: F401  (registers s2mlpv2_*)
from msmlp.models.checkpoint import load_checkpoint, read_state_dict
from msmlp.models.registry import DeployConfig, create_model, get_config, list_models, register_model

__all__ = [
    "DeployConfig",
    "create_model",
    "get_config",
    "list_models",
    "load_checkpoint",
    "read_state_dict",
    "register_model",
]
