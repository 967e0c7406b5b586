"""Reusable dynamic layers (timm's ``layers/``): the pieces methods build their networks from."""
from .exit_head import EXIT_HEADS, ExitHead

__all__ = ["EXIT_HEADS", "ExitHead"]
