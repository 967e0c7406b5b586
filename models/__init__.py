"""RouteScope backend: ``create_model``, ``list_models``, ``load_checkpoint``."""
from . import condconv, convnet, dgconv, dsnet, resnet, skipnet  # noqa: F401  (importing a family registers its models and recipe)
from . import repr as _repr  # noqa: F401  (RePr; the module name shadows the builtin only inside the package)
from . import early_exit  # noqa: F401
from .recipes import early_exit as _early_exit_recipe  # noqa: F401
from .checkpoint import CheckpointError, load_checkpoint
from .registry import create_model, list_models, register_model

__all__ = ["CheckpointError", "create_model", "list_models", "load_checkpoint", "register_model"]
