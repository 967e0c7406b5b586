"""Early-exit training (Shallow-Deep Networks, Kaya et al. ICML 2019): every exit learns at once.

The loss of a step is ``CE(final) + sum_i w_i * L_i`` over the internal exits. SDN's schedule: ``w_i``
starts at 0.01 and grows linearly with the epoch to its cap ``tau_i``, the exit's depth as a fraction of
the network (so shallow exits, which hurt the shared features most, weigh least). ``L_i`` is the exit's
cross-entropy, or with ``--exit-distill d`` ``(1 - d) * CE + d * T^2 KL(final_T || exit_T)``: distilled
from the final exit (self-distillation, a common addition to SDN, off by default). ``--exit-ic-only``
trains the heads alone on a frozen backbone (SDN's "IC-only" setting); BatchNorm statistics stay frozen
then too. ``--exit-calibrate POINTS`` (with ``--holdout N``) picks the threshold after training on training
images kept out of training, never on the test set.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from ..layers.exit_head import EXIT_HEADS
from ..options import option, options_of
from ..registry import register_recipe
from ..stages import Stage, StepOutput, distillation_loss, unwrap


def sdn_weights(depths: list[float], epoch: int, epochs: int) -> list[float]:
    """SDN's per-exit loss weights at ``epoch`` (0-based) of ``epochs``: ``min(tau, 0.01 + epoch * tau / epochs)``."""
    return [min(tau, 0.01 + epoch * tau / max(1, epochs)) for tau in depths]


class JointExitStage(Stage):
    """All exits trained together with SDN's weight schedule (SGD, cosine, as every supervised stage)."""

    def __init__(
        self,
        epochs: int,
        lr: float,
        weight_decay: float = 5e-4,
        distill_weight: float = 0.0,
        ic_only: bool = False,
        calibrate: float | None = None,
    ) -> None:
        super().__init__("joint-exits" if not ic_only else "exit-heads", epochs, lr, weight_decay)
        if not 0.0 <= distill_weight <= 1.0:
            raise UsageError(f"--exit-distill must be in [0, 1], not {distill_weight}")
        self.distill_weight, self.ic_only, self.calibrate = distill_weight, ic_only, calibrate
        self.epoch = 0
        self.calibration: dict | None = None

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if not self.ic_only:
            return super().parameters(model)
        return [p for p in unwrap(model).exits.parameters() if p.requires_grad]

    def on_stage_start(self, trainer) -> None:
        self.epoch = 0

    def on_epoch_end(self, trainer, epoch: int) -> None:
        self.epoch = epoch + 1
        if self.calibrate is not None and self.epoch == self.epochs:
            if trainer.holdout_data is None:
                raise UsageError("--exit-calibrate needs held-out training images: pass --holdout N")
            self.calibration = calibrate_threshold(
                unwrap(trainer.model), trainer.holdout_data, trainer.info.mean, trainer.info.std, self.calibrate
            )
            set_threshold(unwrap(trainer.model), self.calibration["threshold"])

    def exit_weights(self, model: nn.Module) -> list[float]:
        return sdn_weights(unwrap(model).exit_depths(), self.epoch, self.epochs)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        if self.ic_only:
            unwrap(model).eval()  # frozen backbone: its BatchNorm statistics stay as trained
        outputs = model(x, all_exits=True)
        final = outputs[-1]
        loss = F.cross_entropy(final, y)
        d = self.distill_weight
        for weight, logits in zip(self.exit_weights(model), outputs[:-1]):
            term = F.cross_entropy(logits, y)
            if d > 0:
                term = (1 - d) * term + d * distillation_loss(logits, final.detach())
            loss = loss + weight * term
        return StepOutput(loss, final)

    def epoch_record(self) -> dict:
        record = {"exit_weight_scale": round(min(1.0, 0.01 + self.epoch / max(1, self.epochs)), 4)}
        if self.calibration is not None and self.epoch == self.epochs:
            record["exit_calibration"] = self.calibration
        return record

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))


CALIBRATION_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999)


@torch.no_grad()
def exit_accuracy(model: nn.Module, data, mean, std, thresholds) -> tuple[dict[float, float], float]:
    """Held-out accuracy of the early-exiting model at each threshold, and of the final exit alone.

    Every exit's logits are computed once (``all_exits``) and the exit rule (the first exit whose max softmax
    reaches the threshold, else the final one) is applied to them: the same choice and logits the exiting
    forward makes, for a whole grid at the price of one pass. For calibration only; inference really exits.
    """
    from torch.utils.data import DataLoader

    from ..data import collate_batch, normalize

    model.eval()
    outputs, labels = [], []
    for images, y in DataLoader(data, batch_size=500, collate_fn=collate_batch):
        outputs.append(
            torch.stack(model(normalize(images, mean, std).to(next(model.parameters()).device), all_exits=True)).cpu()
        )
        labels.append(y)
    logits, y = torch.cat(outputs, 1), torch.cat(labels)  # (exits, N, classes)
    confidence, predicted = logits.softmax(2).max(2)  # (exits, N)
    accuracy = {}
    for q in thresholds:
        reached = confidence >= q
        reached[-1] = True  # the final exit takes everything left
        first = reached.float().argmax(0)
        accuracy[q] = (predicted.gather(0, first[None])[0] == y).float().mean().item()
    return accuracy, (predicted[-1] == y).float().mean().item()


def calibrate_threshold(model: nn.Module, data, mean, std, tolerance: float) -> dict:
    """The lowest threshold of ``CALIBRATION_GRID`` whose held-out accuracy is within ``tolerance`` points of the
    final exit's on the same images (SDN picks its threshold on held-out data too); the highest if none is."""
    accuracy, final = exit_accuracy(model, data, mean, std, CALIBRATION_GRID)
    good = [q for q in CALIBRATION_GRID if accuracy[q] >= final - tolerance / 100]
    threshold = min(good) if good else max(CALIBRATION_GRID)
    return {
        "threshold": threshold,
        "tolerance_points": tolerance,
        "images": len(data),
        "final_exit_acc": round(final, 5),
        "accuracy": {f"{q:g}": round(a, 5) for q, a in accuracy.items()},
    }


def set_threshold(model: nn.Module, threshold: float) -> None:
    """Make ``threshold`` the model's operating point, saved with it (a builder argument in its config)."""
    model.threshold = float(threshold)
    model.arch_config["threshold"] = float(threshold)


@dataclass
class EarlyExitOptions:
    exits: str | None = option(
        None,
        "comma-separated blocks to put exit heads after (default: every block but the "
        "first and last in a short network, SDN's six positions in a deep one)",
    )
    exit_head: str = option("sdn", "exit head: SDN's mixed pooling to 4x4, or global pooling", choices=EXIT_HEADS)
    exit_threshold: float = option(
        0.9, "confidence (max softmax) at which an image leaves; a model setting, changeable at inference"
    )
    exit_distill: float = option(
        0.0, "weight in [0, 1] of distillation from the final exit in each internal exit's loss"
    )
    exit_ic_only: bool = option(False, "train only the exit heads, on the frozen backbone (SDN's IC-only)")
    exit_calibrate: float | None = option(
        None,
        "after training, set the threshold to the lowest one whose accuracy on "
        "the --holdout images is within POINTS of the final exit's (replaces "
        "--exit-threshold)",
        metavar="POINTS",
    )


def early_exit_model_args(args: argparse.Namespace) -> dict:
    opt = options_of(EarlyExitOptions, args)
    out = {"head": opt.exit_head, "threshold": opt.exit_threshold}
    if opt.exits:
        out["exits"] = [e.strip() for e in opt.exits.split(",") if e.strip()]
    return out


@register_recipe(
    "early_exit", name="Early exit", options=EarlyExitOptions, model_args=early_exit_model_args, title="early exit"
)
def early_exit_recipe(args: argparse.Namespace) -> list[Stage]:
    """One joint stage (``--epochs``, ``--lr``) of every exit's loss with SDN's schedule."""
    opt = options_of(EarlyExitOptions, args)
    return [
        JointExitStage(args.epochs, args.lr, args.weight_decay, opt.exit_distill, opt.exit_ic_only, opt.exit_calibrate)
    ]
