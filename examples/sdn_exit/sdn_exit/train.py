"""Train the example for a few hundred steps on Fashion-MNIST, in plain PyTorch, and write ``weights.pt`` beside this
file: ``python -m sdn_exit.train [--data-dir DIR] [--steps N]``.

The loss is SDN's: a weighted sum of every classifier's cross-entropy, an internal classifier at depth tau weighted
tau (capped by SDN's schedule; here the fixed end value), the final classifier 1.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .models import SDN

MEAN, STD = 0.286, 0.353


def fashion_mnist(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split (the four original ``.gz`` files): images normalized (N, 1, 28, 28), labels."""
    with gzip.open(folder / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return (torch.from_numpy(images.copy()).float() / 255 - MEAN) / STD, torch.from_numpy(labels.copy()).long()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--out", default=str(Path(__file__).with_name("weights.pt")))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    images, labels = fashion_mnist(Path(args.data_dir))
    model = SDN().train()
    depths = [(i + 1) / len(model.blocks) for i in range(len(model.exits))] + [1.0]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(args.steps):
        batch = torch.randint(0, len(images), (128,))
        outputs = model(images[batch])
        loss = sum(w * F.cross_entropy(z, labels[batch]) for w, z in zip(depths, outputs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps - 1:
            accuracies = [round((z.argmax(1) == labels[batch]).float().mean().item(), 2) for z in outputs]
            print(f"step {step}: loss {loss.item():.3f} accuracy per exit {accuracies}")
    torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
