"""Decisions of a small bundled model carried over to a deeper network of the same method (the bench's
``--scale paper``): layers are matched by stage and relative position, so ``layer2.1`` of a ResNet-20 stands for
the middle third of ``layer2`` in a ResNet-110."""
from __future__ import annotations

import re

_BLOCK = re.compile(r"layer(\d+)\.(\d+)$")


def block_position(layer: str, blocks_per_stage: int) -> float | None:
    """Where a block sits in the network, in (0, 1]: ``layer2.1`` of 3 blocks per stage is 5/9."""
    match = _BLOCK.match(layer)
    if match is None:
        return None
    stage, index = int(match[1]), int(match[2])
    return ((stage - 1) * blocks_per_stage + index + 1) / (3 * blocks_per_stage)


def nearest_layer(layer: str, blocks_per_stage: int, candidates: list[str], candidate_blocks: int) -> str:
    """The candidate block (of a network with ``candidate_blocks`` per stage) nearest in position to ``layer``;
    names that are not blocks (``fc``) map to themselves."""
    where = block_position(layer, blocks_per_stage)
    if where is None:
        return layer
    blocks = [c for c in candidates if block_position(c, candidate_blocks) is not None]
    return min(blocks, key=lambda c: abs(block_position(c, candidate_blocks) - where))
