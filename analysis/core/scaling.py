"""Decisions of a small bundled model carried over to a bigger network of the same method (the bench's
``--scale paper``): blocks are matched by relative depth, stage-aware, so ``layer2.1`` of a ResNet-20 (three stages
of three blocks) stands for the middle of ``layer2`` in a ResNet-110 and for the block at 5/9 of the stages of a
ResNet-50 (four stages of 3, 4, 6 and 3 blocks); EfficientNet's ``blocks.S.J`` are placed the same way."""

from __future__ import annotations

import re
from typing import Iterable

_BLOCK = re.compile(r"(?:layer|blocks\.)(\d+)\.(\d+)$")  # ResNet's layer2.1, EfficientNet's (timm's) blocks.5.0


def block_positions(blocks: Iterable[str]) -> dict[str, float]:
    """Each block name's position in (0, 1]: block ``j`` of ``n`` in stage ``s`` of ``S`` is
    ``(s - 1 + (j + 1) / n) / S`` (``layer2.1`` of three stages of three blocks: 5/9), and each stage's (``layer2``:
    its end, 2/3); names that are not blocks are left out."""
    parsed = {name: (int(m[1]), int(m[2])) for name in blocks if (m := _BLOCK.match(name))}
    stages = sorted({s for s, _ in parsed.values()})
    per_stage = {s: 1 + max(j for t, j in parsed.values() if t == s) for s in stages}
    positions = {name: (stages.index(s) + (j + 1) / per_stage[s]) / len(stages) for name, (s, j) in parsed.items()}
    return {**positions, **{f"layer{s}": (i + 1) / len(stages) for i, s in enumerate(stages)}}


def nearest_layer(
    layer: str, network: Iterable[str], candidates: Iterable[str], candidate_network: Iterable[str]
) -> str:
    """The candidate block (or stage) nearest in position to ``layer``; positions are taken within each one's network
    (the block names of ``network`` and of ``candidate_network``). Other names (``fc``) map to themselves."""
    where = block_positions(network).get(layer)
    if where is None:
        return layer
    positions = block_positions(candidate_network)
    return min((c for c in candidates if c in positions), key=lambda c: abs(positions[c] - where))
