"""RePr training (Prakash et al., CVPR 2019): N prune / train-sub-network / re-initialize cycles inside one
stage of standard training, for any conv net of the backend (``method = "repr"``).

Schedule (one stage, ``RePrStage``, with internal phases, so the whole run has ONE learning-rate schedule
and the same ``--epochs`` as standard training): for each of N cycles, train the full net S1 epochs, rank
and drop p% of the filters, train the sub-network S2 epochs, re-initialize the dropped filters; then
train the full net to the end. ``N * (S1 + S2) < epochs`` is required (the re-initialized filters must be
trained). Drops and re-inits happen at the END of an epoch (``on_epoch_end``): the history row of that
epoch carries ``repr_event`` and ``repr_test_acc_before`` (accuracy before the event, one extra test
pass), while its ``test_acc`` is measured after it. Each row has ``repr_phase`` ("full", "pruned" or
"final": how that epoch trained), so a figure can shade the pruned epochs; the row of each re-init
carries the complete cycle record (``repr_cycle_record``; collect them with ``repr_record(history)``).

Design decisions and deviations from the paper (the convs it touches: ``models.repr``):

- Overlap score: mean over the F - 1 other filters (the paper divides by the layer's filter count); see
  ``models.layers.filter_overlap``. Ranking is global over all prunable layers, as in the paper; a layer never
  loses its last filter. Note that raw overlap is not scale-free across layers: random filters of
  dimension D = C*k*k overlap by about sqrt(2 / (pi * D)), so a global ranking takes more filters from
  layers with a small input dimension (the record's per-layer ``dropped`` shows it). Alternatives:
  ``norm`` (lowest L2 norm of the raw weights dropped, globally) and ``random``.
- The learning rate follows the Trainer's one cosine schedule over all epochs (the paper does not tie
  its schedule to the cycles); RePr and standard training therefore differ only in the cycles.
- Masking: a dropped filter has zero weights, zero conv bias and zero affine of the BatchNorm that
  follows it; gradient hooks on those parameters multiply their gradients by the mask (so DDP also
  averages masked gradients), the weights are re-zeroed after every optimizer step, and the optimizer
  state of those rows (SGD momentum, Adam moments) is zeroed at the drop and at the re-init, so momentum
  never revives a dropped filter nor pushes a new one along its old direction.
- Re-initialization: directions orthogonal to the layer's surviving filters AND to the dropped filters'
  old values, from the null space of the complete QR of the stacked rows (``null_space_directions``).
  Where that null space has fewer dimensions than the filters to re-initialize (C*k*k <= survivors +
  dropped), the remaining filters get random Gaussian directions; the cycle record counts them per layer
  and carries a warning, and Python's ``warnings`` says so. New filters are scaled to the mean L2 norm of
  the layer's surviving filters (their trained scale; Kaiming fan-out norm if there are none), conv bias
  0; the BatchNorm of a re-initialized channel gets weight = mean |weight| of the surviving channels
  (1 if none), bias 0, and fresh running statistics (mean 0, var 1), so a new channel enters at its
  layer's typical scale (a block's last BN is zero-initialized and stays small; 1 would be a jolt).
- Randomness (random ranking, QR mixing, fallbacks) comes from generators seeded by (seed, cycle), not
  from the global RNG: every DDP process makes the same choice and a resumed run the same as an
  uninterrupted one.
- Record: ``RePrStage.state_dict()`` holds the masks, the dropped filters' old values and the cycle
  records, so ``--resume`` in a pruned phase continues masked.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import warnings

import torch
import torch.nn as nn

from ..errors import UsageError
from ..layers.filter_overlap import (
    RANKINGS,
    filter_scores,
    flatten_filters,
    kaiming_filter_norm,
    null_space_directions,
    rank_scores,
    select_global,
)
from ..options import option, options_of
from ..registry import register_recipe
from ..repr import BUFFER, FilterLayer, prunable_layers
from ..stages import Stage, StepOutput, unwrap


# --- masking and re-initialization of filters -------------------------------------------------------------


def _rows(rows: list[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(rows, dtype=torch.long, device=device)


@torch.no_grad()
def zero_filters(layer: FilterLayer, rows: list[int] | torch.Tensor) -> None:
    """Zero the weights, bias and BN affine of the given output filters."""
    for p in layer.params():
        p[_rows(rows, p.device)] = 0


@torch.no_grad()
def reset_optimizer_rows(
    optimizer: torch.optim.Optimizer | None, layer: FilterLayer, rows: list[int] | torch.Tensor
) -> None:
    """Zero every per-parameter optimizer state (momentum, Adam moments) in the rows of these filters."""
    if optimizer is None:
        return
    for p in layer.params():
        for value in optimizer.state.get(p, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                value[_rows(rows, value.device)] = 0


@torch.no_grad()
def reinitialize_filters(
    layer: FilterLayer, rows: list[int], old: torch.Tensor, generator: torch.Generator | None = None
) -> dict:
    """New values for the filters ``rows``: orthogonal to the survivors and to ``old`` (their values at the drop).

    Returns how many got an orthogonal direction and how many fell back to a random one.
    """
    weight = layer.conv.weight
    n = len(rows)
    alive = torch.ones(weight.shape[0], dtype=torch.bool)
    alive[rows] = False
    survivors = flatten_filters(weight.cpu()[alive])
    directions = null_space_directions(torch.cat([survivors, flatten_filters(old.cpu())]), n, generator)
    orthogonal = directions.shape[0]
    if orthogonal < n:
        extra = torch.randn(n - orthogonal, survivors.shape[1], generator=generator, dtype=torch.float64)
        directions = torch.cat([directions, extra / extra.norm(dim=1, keepdim=True)])
    norms = survivors.norm(dim=1)
    scale = float(norms.mean()) if len(norms) and float(norms.mean()) > 0 else kaiming_filter_norm(weight)
    index = _rows(rows, weight.device)
    weight[index] = (directions * scale).reshape(n, *weight.shape[1:]).to(weight)
    if layer.conv.bias is not None:
        layer.conv.bias[index] = 0
    bn = layer.bn
    if bn is not None:
        if bn.affine:
            kept = bn.weight[alive.to(bn.weight.device)].abs()
            bn.weight[index] = float(kept.mean()) if len(kept) else 1.0
            bn.bias[index] = 0
        if bn.track_running_stats and bn.running_mean is not None:
            bn.running_mean[index] = 0
            bn.running_var[index] = 1
    return {"orthogonal": orthogonal, "fallback": n - orthogonal}


# --- the training stage ------------------------------------------------------------------------------------


def _scores_json(scores: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {name: [round(float(s), 6) for s in v] for name, v in scores.items()}


class RePrStage(Stage):
    """Standard supervised training with N prune / train-sub-network / re-initialize cycles inside it."""

    def __init__(
        self,
        epochs: int,
        lr: float,
        weight_decay: float = 5e-4,
        s1: int = 3,
        s2: int = 2,
        cycles: int = 2,
        prune: float = 0.3,
        ranking: str = "orthogonality",
        seed: int = 0,
        measure_events: bool = True,
    ) -> None:
        super().__init__("repr", epochs, lr, weight_decay)
        if ranking not in RANKINGS:
            raise UsageError(f"unknown RePr ranking {ranking!r}; choose one of {', '.join(RANKINGS)}")
        if s1 < 1 or s2 < 1 or cycles < 0:
            raise UsageError(
                f"RePr needs --repr-s1 >= 1, --repr-s2 >= 1 and --repr-cycles >= 0 (got {s1}, {s2}, {cycles})"
            )
        if not 0.0 < prune < 1.0:
            raise UsageError(f"--repr-prune is a fraction in (0, 1), got {prune}")
        if cycles and cycles * (s1 + s2) >= epochs:
            raise UsageError(
                f"the RePr schedule needs more than N*(S1+S2) = {cycles * (s1 + s2)} epochs so that the last "
                f"re-initialized filters are trained, but --epochs is {epochs}; lower --repr-cycles/-s1/-s2"
            )
        self.s1, self.s2, self.cycles, self.fraction, self.ranking = s1, s2, cycles, prune, ranking
        self.seed, self.measure_events = seed, measure_events
        self.masks: dict[str, torch.Tensor] = {}  # layer -> bool (F,), True = alive; only while pruned
        self.old: dict[str, torch.Tensor] = {}  # layer -> dropped filters' values at the drop
        self.cycle_records: list[dict] = []  # one record per cycle (the last one possibly in progress)
        self._row: dict = {}
        self._handles: list = []
        self._hooked: int | None = None

    # schedule
    def phase(self, epoch: int) -> tuple[str, int | None, str | None]:
        """(phase the epoch trains in, its cycle, the event at its end: "prune", "reinit" or None)."""
        period = self.s1 + self.s2
        cycle, within = divmod(epoch, period)
        if cycle >= self.cycles:
            return "final", None, None
        event = "prune" if within == self.s1 - 1 else "reinit" if within == period - 1 else None
        return ("full" if within < self.s1 else "pruned"), cycle, event

    def pruned_epochs(self, cycle: int) -> list[int]:
        start = cycle * (self.s1 + self.s2) + self.s1
        return list(range(start, start + self.s2))

    def _generator(self, cycle: int, event: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + cycle * 2 + event)

    # trainer hooks
    def on_stage_start(self, trainer) -> None:
        self._remove_hooks()
        self.masks, self.old, self.cycle_records, self._row = {}, {}, [], {}

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        self._install_hooks(unwrap(model))  # after --resume in a pruned phase the hooks come back here
        return super().training_step(model, x, y)

    def after_optimizer_step(self, trainer) -> None:
        if self.masks:
            self._install_hooks(trainer.model)
            for layer in self._masked_layers(trainer.model):
                zero_filters(layer, (~self.masks[layer.name]).nonzero().flatten())

    def on_epoch_end(self, trainer, epoch: int) -> None:
        phase, cycle, event = self.phase(epoch)
        row: dict = {"repr_phase": phase, "repr_cycle": cycle}
        if event is not None:
            measure = getattr(trainer, "test_accuracy", None)
            acc = measure() if self.measure_events and callable(measure) else None
            row.update(repr_event=event, repr_test_acc_before=acc)
            optimizer = getattr(trainer, "optimizer", None)
            if event == "prune":
                self.prune(trainer.model, optimizer, cycle, epoch, acc)
            else:
                row["repr_cycle_record"] = self.reinitialize(trainer.model, optimizer, cycle, epoch, acc)
        self._row = row

    def epoch_record(self) -> dict:
        """Extra keys for the history row of the epoch that just ended (JSON-safe)."""
        return dict(self._row)

    # the two events
    def prune(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        cycle: int,
        epoch: int,
        test_acc: float | None = None,
    ) -> dict[str, list[int]]:
        """Rank every prunable filter of the network, drop the top fraction, mask them."""
        layers = prunable_layers(model)
        generator = self._generator(cycle, 0)
        ranks = {layer.name: rank_scores(layer.conv.weight, self.ranking, generator) for layer in layers}
        dropped = select_global(ranks, self.fraction)
        overlap = {layer.name: filter_scores(layer.conv.weight) for layer in layers}
        self.masks, self.old = {}, {}
        for layer in layers:
            rows = dropped[layer.name]
            buffer = getattr(layer.conv, BUFFER, None)
            if buffer is not None:
                buffer.zero_()
                buffer[_rows(rows, buffer.device)] = True
            if not rows:
                continue
            alive = torch.ones(layer.conv.out_channels, dtype=torch.bool)
            alive[rows] = False
            self.masks[layer.name] = alive
            self.old[layer.name] = layer.conv.weight.detach()[_rows(rows, layer.conv.weight.device)].cpu().clone()
            zero_filters(layer, rows)
            reset_optimizer_rows(optimizer, layer, rows)
        self._remove_hooks()
        self._install_hooks(model)
        self.cycle_records.append(
            {
                "cycle": cycle,
                "ranking": self.ranking,
                "fraction": self.fraction,
                "prune_after_epoch": epoch,
                "pruned_epochs": self.pruned_epochs(cycle),
                "reinit_after_epoch": None,
                "n_filters": sum(layer.conv.out_channels for layer in layers),
                "n_dropped": sum(len(v) for v in dropped.values()),
                "dropped": {name: rows for name, rows in dropped.items() if rows},
                "overlap_before": _scores_json(overlap),
                "overlap_after": None,
                "reinit": {},
                "warnings": [],
                "test_acc_before_prune": test_acc,
                "test_acc_before_reinit": None,
            }
        )
        return dropped

    def reinitialize(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        cycle: int,
        epoch: int,
        test_acc: float | None = None,
    ) -> dict:
        """Give the dropped filters new orthogonal values, unmask them; returns the finished cycle record."""
        generator = self._generator(cycle, 1)
        fresh = {"cycle": cycle, "warnings": [], "reinit": {}}
        if not self.cycle_records or self.cycle_records[-1]["cycle"] != cycle:
            self.cycle_records.append(fresh)
        record = self.cycle_records[-1]
        self._remove_hooks()
        for layer in self._masked_layers(model):
            rows = (~self.masks[layer.name]).nonzero().flatten().tolist()
            info = reinitialize_filters(layer, rows, self.old[layer.name], generator)
            reset_optimizer_rows(optimizer, layer, rows)
            record["reinit"][layer.name] = info
            if info["fallback"]:
                message = (
                    f"RePr cycle {cycle}: {layer.name} has a null space of {info['orthogonal']} dimensions for "
                    f"{len(rows)} filters; {info['fallback']} re-initialized randomly (not orthogonal)"
                )
                record["warnings"].append(message)
                warnings.warn(message, stacklevel=2)
        self.masks, self.old = {}, {}
        record.update(
            reinit_after_epoch=epoch,
            test_acc_before_reinit=test_acc,
            overlap_after=_scores_json(
                {layer.name: filter_scores(layer.conv.weight) for layer in prunable_layers(model)}
            ),
        )
        return record

    @property
    def record(self) -> list[dict]:
        return self.cycle_records

    # gradient masking
    def _masked_layers(self, model: nn.Module) -> list[FilterLayer]:
        return [layer for layer in prunable_layers(model) if layer.name in self.masks]

    def _install_hooks(self, model: nn.Module) -> None:
        if not self.masks or self._hooked == id(model):
            return
        self._remove_hooks()
        for layer in self._masked_layers(model):
            for p in layer.params():
                keep = self.masks[layer.name].to(p.device, p.dtype).view(-1, *([1] * (p.ndim - 1)))
                self._handles.append(p.register_hook(lambda grad, keep=keep: grad * keep))
        self._hooked = id(model)

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._hooked = [], None

    # checkpointing (train_state of OUT/NAME.last.pt)
    def state_dict(self) -> dict:
        return {
            "masks": {k: v.clone() for k, v in self.masks.items()},
            "old": {k: v.clone() for k, v in self.old.items()},
            "cycles": [dict(c) for c in self.cycle_records],
            "row": dict(self._row),
        }

    def load_state_dict(self, state: dict) -> None:
        self._remove_hooks()
        self.masks = {k: v.bool().cpu() for k, v in state.get("masks", {}).items()}
        self.old = {k: v.cpu() for k, v in state.get("old", {}).items()}
        self.cycle_records = [dict(c) for c in state.get("cycles", [])]
        self._row = dict(state.get("row", {}))


# --- recipe and CLI ----------------------------------------------------------------------------------------


@dataclass
class RePrOptions:
    repr_s1: int = option(3, "epochs of full training before each drop")
    repr_s2: int = option(2, "epochs of sub-network training after each drop")
    repr_cycles: int = option(2, "number N of prune/re-initialize cycles; then full training to --epochs")
    repr_prune: float = option(0.3, "fraction of filters dropped per cycle")
    repr_ranking: str = option(
        "orthogonality", "which filters to drop: highest overlap, lowest weight norm, or random", choices=RANKINGS
    )


@register_recipe("repr", name="RePr", options=RePrOptions, title="RePr (paper: S1=20, S2=10, N=3, p=0.3)")
def repr_recipe(args: argparse.Namespace) -> list[Stage]:
    """One stage of ``--epochs`` with ``--repr-cycles`` prune/re-init cycles inside it."""
    opt = options_of(RePrOptions, args)
    return [
        RePrStage(
            args.epochs,
            args.lr,
            args.weight_decay,
            s1=opt.repr_s1,
            s2=opt.repr_s2,
            cycles=opt.repr_cycles,
            prune=opt.repr_prune,
            ranking=opt.repr_ranking,
            seed=args.seed,
        )
    ]
