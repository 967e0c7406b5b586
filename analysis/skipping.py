"""SkipNet statistics over a dataset table: skip ratios, blocks executed, response to input scale."""
from __future__ import annotations

import pandas as pd
import torch

from analysis.dataset_table import dataset_table, layer_columns


def skip_ratios(table: pd.DataFrame) -> pd.Series:
    """Fraction of images that skip each gated block, in network order."""
    executed = table[layer_columns(table, "executed")]
    return 1 - executed.mean().rename(lambda c: c.split("/")[0])


def blocks_executed(table: pd.DataFrame) -> pd.Series:
    """Gated blocks executed per image."""
    return table[layer_columns(table, "executed")].sum(axis=1)


def rescale(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Zoom the content of uint8 images by ``scale`` about the centre, keeping the size (zero fill)."""
    n, c, h, w = images.shape
    theta = torch.tensor([[1 / scale, 0, 0], [0, 1 / scale, 0]], dtype=torch.float32).expand(n, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, (n, c, h, w), align_corners=False)
    out = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def scale_response(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   scales=(0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5)) -> pd.DataFrame:
    """Mean blocks executed and accuracy when the objects are shown smaller or larger."""
    rows = []
    for scale in scales:
        table = dataset_table(model, rescale(images, scale), labels)
        rows.append({"scale": scale, "blocks_executed": blocks_executed(table).mean(), "accuracy": table["correct"].mean(),
                     "macs": table["macs"].mean()})
    return pd.DataFrame(rows)
