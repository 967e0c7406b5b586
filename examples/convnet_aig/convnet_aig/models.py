"""A ConvNet-AIG-style gated ResNet (Veit & Belongie, "Convolutional Networks with Adaptive Inference Graphs",
ECCV 2018), in plain PyTorch: nothing here knows RouteScope.

Every residual block has a gate that reads the block's input (global average pooling, a two-layer MLP, two logits:
off and on). In training the gate is a hard Gumbel-softmax sample (straight-through gradient); at inference it is
the argmax. As in the paper's code the execution is MASKED: the block's residual branch is computed for every image
and multiplied by the gate, so a gated-off block saves nothing on the clock (RouteScope shows this as executed MACs
above the decided ones).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]


class Gate(nn.Module):
    """Two logits (off, on) from the block input: global average pooling, then a two-layer MLP."""

    def __init__(self, channels: int, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, 2)
        with torch.no_grad():  # open at the start of training, as the paper initialises its gates
            self.fc2.bias.copy_(torch.tensor([0.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.bn(self.fc1(x.mean((2, 3))))))


class GatedBlock(nn.Module):
    """A basic residual block whose residual branch is multiplied by its gate (0 or 1 per image)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.gate = Gate(cin)
        self.residual = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(), *conv_bn(cout, cout))
        downsample = stride != 1 or cin != cout
        self.shortcut = nn.Sequential(*conv_bn(cin, cout, stride, kernel=1)) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor, gated: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and its gate per image (ones when ``gated`` is False: the plain ResNet block)."""
        if gated:
            logits = self.gate(x)
            if self.training:
                g = F.gumbel_softmax(logits, tau=1.0, hard=True)[:, 1]
            else:
                g = logits.argmax(1).to(x.dtype)
        else:
            g = x.new_ones(x.shape[0])
        out = self.residual(x) * g.view(-1, 1, 1, 1)  # masked: computed for every image, then multiplied
        return F.relu(out + self.shortcut(x)), g


class ConvNetAIG(nn.Module):
    """A CIFAR-style ResNet-8 (three stages of one gated block) for small grayscale images."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, widths: tuple[int, int, int] = (8, 16, 32)) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(in_chans, widths[0]), nn.ReLU())
        cins = (widths[0], *widths[:-1])
        self.blocks = nn.ModuleList(
            GatedBlock(cin, cout, 1 if i == 0 else 2) for i, (cin, cout) in enumerate(zip(cins, widths))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor, gated: bool = True, return_gates: bool = False):
        """Logits; with ``return_gates`` also the gates (N, blocks) for the target-rate loss of training."""
        x = self.stem(x)
        gates = []
        for block in self.blocks:
            x, g = block(x, gated)
            gates.append(g)
        logits = self.fc(torch.flatten(self.pool(x), 1))
        return (logits, torch.stack(gates, 1)) if return_gates else logits
