"""RouteScope backend: ``create_model``, ``list_models``, ``load_checkpoint``."""
from . import resnet  # noqa: F401  (registers the models)
from . import skipnet  # noqa: F401
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
