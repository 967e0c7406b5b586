"""Shared test helpers: models that look trained, and inputs on which dynamic decisions differ."""
import torch
import torch.nn as nn


@torch.no_grad()
def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BN affine and running statistics (as after training), so residual branches are not zero."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model


def varied_images(n: int = 8, seed: int = 1) -> torch.Tensor:
    """Inputs with different brightness and contrast, so gates disagree across the batch."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 3.0, n).view(-1, 1, 1, 1)
    shift = torch.linspace(-2.0, 2.0, n)[torch.randperm(n, generator=g)].view(-1, 1, 1, 1)
    return torch.randn(n, 1, 28, 28, generator=g) * scale + shift


def kill_training_at_epoch(monkeypatch, epoch: int) -> None:
    """Make ``models.train.Trainer`` die (KeyboardInterrupt, as a killed process) when epoch ``epoch`` (1-based) starts;
    undo with ``monkeypatch.undo()`` or a new ``setattr`` before resuming."""
    from models import train

    original = train.Trainer.train_epoch
    calls = {"n": 0}

    def dies(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt("killed")
        return original(self, *a, **k)

    monkeypatch.setattr(train.Trainer, "train_epoch", dies)


def run_args(**options):
    """A ``models.train`` namespace: every common option at its default (``models.options.TrainOptions``), ``options``
    on top; a method's own options left out take their declared defaults (``options_of``)."""
    import argparse

    from models.options import TrainOptions, option_defaults

    return argparse.Namespace(**{**option_defaults(TrainOptions), **options})
