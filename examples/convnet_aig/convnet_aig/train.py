"""Train the example for a few hundred steps on Fashion-MNIST, in plain PyTorch, and write ``weights.pt`` beside this
file: ``python -m convnet_aig.train [--data-dir DIR] [--steps N]``.

The loss is ConvNet-AIG's: cross-entropy plus the target-rate loss, the squared gap between each gate's mean
activation over the batch and a target rate (here 0.6), so the gates learn to turn blocks off for some images.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .models import ConvNetAIG

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
    p.add_argument("--target-rate", type=float, default=0.6)
    p.add_argument("--out", default=str(Path(__file__).with_name("weights.pt")))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    images, labels = fashion_mnist(Path(args.data_dir))
    model = ConvNetAIG().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(args.steps):
        batch = torch.randint(0, len(images), (128,))
        logits, gates = model(images[batch], return_gates=True)
        rate_loss = ((gates.mean(0) - args.target_rate) ** 2).mean()
        loss = F.cross_entropy(logits, labels[batch]) + 2.0 * rate_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps - 1:
            accuracy = (logits.argmax(1) == labels[batch]).float().mean().item()
            print(f"step {step}: loss {loss.item():.3f} accuracy {accuracy:.2f} gate rates {gates.mean(0).tolist()}")
    torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
