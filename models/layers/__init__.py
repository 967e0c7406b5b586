"""Reusable dynamic layers (timm's ``layers/``): the pieces methods build their networks from.

One module per layer family; methods import from it directly (``from .layers.condconv import CondConv2d``),
so a new family is a new file here and nothing in this ``__init__`` changes.
"""
