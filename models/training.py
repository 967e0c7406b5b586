"""The training engine: one loop runs every method's recipe (a list of ``stages.Stage``).

After every epoch the whole state (weights, optimizer, schedule, stage state, history, RNG) goes atomically to
``OUT/NAME.last.pt``, so ``--resume`` continues a killed run at the epoch it was in; the finished model goes to
``OUT/NAME.pt`` with its measured metrics, and ``OUT/manifest.json`` records how it was made.
Multi-process (DDP; gloo on CPU, nccl on GPU) when started by ``torchrun``. The command line is ``models.train``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from . import checkpoint as ckpt
from .data import DatasetInfo, augment, collate_batch, normalize
from .devices import resolve_device
from .errors import UsageError
from .evaluation import evaluate
from .factory import read_manifest
from .inference import fast_form
from .manifest import write_manifest_entry
from .protocol import RouteScopeModel
from .recipe_files import chain_fields
from .stages import Stage


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


class Trainer:
    """Runs ``stages`` in order on ``model``; checkpoints after every epoch."""

    def __init__(
        self, model: nn.Module, stages: list[Stage], train_data, test_data, info: DatasetInfo, args: argparse.Namespace
    ) -> None:
        self.model, self.stages, self.info, self.args = model, stages, info, args
        self.device = resolve_device(args.device)
        self.holdout_data = None
        if args.holdout:
            if not 0 < args.holdout < len(train_data):
                raise UsageError(f"--holdout must be between 1 and {len(train_data) - 1}, not {args.holdout}")
            keep = len(train_data) - args.holdout
            train_data, self.holdout_data = (
                Subset(train_data, range(keep)),
                Subset(train_data, range(keep, len(train_data))),
            )
        self.train_data, self.test_data = train_data, test_data
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.preserve_format
        self.model.to(self.device, memory_format=self.memory_format)
        self.net: nn.Module = model
        if self.world > 1:
            self.net = DistributedDataParallel(model, find_unused_parameters=model.method != "baseline")
        self.name = args.name or f"{args.model}_{info.name}"
        self.out = Path(args.out)
        self.history: list[dict] = []
        self.position = (0, 0)  # (stage index, epoch within stage) to run next
        self.elapsed = 0.0
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self._resume_state: dict | None = None
        self.writer = open_tensorboard(args.tensorboard) if args.tensorboard and is_main_process() else None
        launcher = f"torchrun --nproc_per_node {self.world}" if self.world > 1 else "python"
        # the command that makes this run from scratch: a resumed run records what it continues, not --resume
        argv = [a for a in getattr(args, "argv", []) if a != "--resume"]
        self.command = f"{launcher} -m models.train " + shlex.join(argv)

    # --- data ----------------------------------------------------------------------------------------
    def loader(self, data, train: bool, epoch: int = 0) -> DataLoader:
        sampler = DistributedSampler(
            data, num_replicas=self.world, rank=self.rank, shuffle=train, seed=self.args.seed, drop_last=train
        )
        sampler.set_epoch(epoch)
        batch = max(1, self.args.batch_size // self.world) if train else 500
        return DataLoader(
            data,
            batch_size=batch,
            sampler=sampler,
            drop_last=train,
            collate_fn=collate_batch,
            num_workers=self.args.workers,
            persistent_workers=False,
        )

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images.to(self.device), self.info.mean, self.info.std)
        return x.contiguous(memory_format=self.memory_format)

    def steps_per_epoch(self) -> int:
        steps = len(self.train_data) // self.args.batch_size
        return min(steps, self.args.limit_batches) if self.args.limit_batches else steps

    # --- state ---------------------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.out / f"{self.name}.last.pt"

    def meta(self) -> dict:
        return {
            "name": self.name,
            "method": self.model.method,
            "dataset": self.info.name,
            "classes": list(self.info.classes),
            "input_size": list(self.info.input_size),
            "mean": list(self.info.mean),
            "std": list(self.info.std),
            "dark_background": self.info.dark_background,
            "metrics": {},
            "recipe": {
                "stages": [{"name": s.name, "epochs": s.epochs, "lr": s.lr} for s in self.stages],
                "args": {
                    k: v
                    for k, v in vars(self.args).items()
                    if k not in ("resume", "no_progress", "argv", "recipe", "tensorboard")
                },
            },
            "history": self.history,
        }

    def save_last(self) -> None:
        stage_index, _ = self.position
        stage_state = self.stages[stage_index].state_dict() if stage_index < len(self.stages) else {}
        state = {
            "position": list(self.position),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "stage_state": stage_state,
            "elapsed": self.elapsed,
            "rng": torch.get_rng_state(),
        }
        ckpt.save_checkpoint(self.last_path, self.model, self.meta(), train_state=state)

    def resume(self) -> None:
        if not self.last_path.exists():
            print(f"--resume: {self.last_path} does not exist, starting from scratch", file=sys.stderr)
            return
        payload = ckpt.read_checkpoint(self.last_path)
        if payload["arch"] != self.model.arch or "train_state" not in payload:
            raise ckpt.CheckpointError(f"{self.last_path}: not a resumable run of {self.model.arch}")
        self.model.load_state_dict(payload["state_dict"])
        state = payload["train_state"]
        self.history = list(payload["meta"].get("history", []))
        self.position = tuple(state["position"])
        self.elapsed = float(state["elapsed"])
        torch.set_rng_state(state["rng"])
        self._resume_state = state
        if is_main_process():
            print(
                f"resumed {self.last_path} at stage {self.position[0]} epoch {self.position[1]} "
                f"({self.elapsed / 60:.1f} min so far)"
            )

    # --- loop ----------------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        """``OUT/NAME.metrics.jsonl``: one JSON line per finished epoch (its history row), readable while it runs."""
        return self.out / f"{self.name}.metrics.jsonl"

    def sync_metrics(self) -> None:
        """Start the metrics file of a fresh run; on resume keep it (the next epochs append) unless it does not
        hold exactly the resumed history (killed between the checkpoint and the log), then write that."""
        path = self.metrics_path
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) != len(self.history) or not self.history:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(row) + "\n" for row in self.history))

    def log_epoch(self, row: dict) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and key not in ("epoch", "global_epoch")
                ):
                    self.writer.add_scalar(key, value, row["global_epoch"])
            self.writer.add_text("stage", row["stage"], row["global_epoch"])
            self.writer.flush()

    def fit(self) -> None:
        if is_main_process():
            self.sync_metrics()
        try:
            self._fit()
        finally:
            if self.writer is not None:
                self.writer.close()

    def _fit(self) -> None:
        for stage_index in range(self.position[0], len(self.stages)):
            stage = self.stages[stage_index]
            self.optimizer = stage.optimizer(self.model)
            self.scheduler = stage.scheduler(self.optimizer, max(1, stage.epochs * self.steps_per_epoch()))
            start_epoch = 0
            if self._resume_state is not None and stage_index == self.position[0]:
                state, self._resume_state = self._resume_state, None
                start_epoch = self.position[1]
                stage.load_state_dict(state["stage_state"])
                if start_epoch > 0 and state["optimizer"] is not None:
                    self.optimizer.load_state_dict(state["optimizer"])
                    self.scheduler.load_state_dict(state["scheduler"])
            if start_epoch == 0:
                stage.on_stage_start(self)
            for epoch in range(start_epoch, stage.epochs):
                tic = time.perf_counter()
                train_stats = self.train_epoch(stage, stage_index, epoch)
                stage.on_epoch_end(self, epoch)
                test_acc = self.test_accuracy()
                self.elapsed += time.perf_counter() - tic
                self.history.append(
                    {
                        "stage": stage.name,
                        "epoch": epoch,
                        "global_epoch": len(self.history),
                        **train_stats,
                        "test_acc": test_acc,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "elapsed_s": round(self.elapsed, 1),
                        **stage.epoch_record(),
                    }
                )
                self.position = (stage_index, epoch + 1) if epoch + 1 < stage.epochs else (stage_index + 1, 0)
                if is_main_process():
                    print(
                        f"[{stage.name}] epoch {epoch + 1}/{stage.epochs} loss {train_stats['train_loss']:.4f} "
                        f"train acc {train_stats['train_acc']:.4f} test acc {test_acc:.4f} "
                        f"({self.elapsed / 60:.1f} min)",
                        flush=True,
                    )
                    self.save_last()
                    self.log_epoch(self.history[-1])

    def train_epoch(self, stage: Stage, stage_index: int, epoch: int) -> dict:
        self.net.train()
        global_epoch = len(self.history)
        generator = torch.Generator().manual_seed(self.args.seed * 100_003 + global_epoch * 101 + self.rank)
        loader = self.loader(self.train_data, train=True, epoch=global_epoch)
        steps = self.steps_per_epoch()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(
            loader,
            total=steps,
            desc=f"{stage.name} {epoch + 1}/{stage.epochs}",
            leave=False,
            disable=self.args.no_progress or not is_main_process(),
        )
        for step, (images, labels) in enumerate(bar):
            if step >= steps:
                break
            x = self.to_input(images if self.args.no_augment else augment(images, self.info.hflip, generator))
            y = labels.to(self.device)
            out = stage.training_step(self.net, x, y)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            stage.after_optimizer_step(self)
            total_loss += out.loss.item() * len(y)
            correct += int((out.logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        stats = torch.tensor([total_loss, correct, seen], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(stats)
        return {
            "train_loss": stats[0].item() / max(1, stats[2].item()),
            "train_acc": stats[1].item() / max(1, stats[2].item()),
        }

    @torch.no_grad()
    def test_accuracy(self) -> float:
        """Top-1 accuracy on the test split (sharded over processes)."""
        self.model.eval()
        correct, seen = 0, 0
        for step, (images, labels) in enumerate(self.loader(self.test_data, train=False)):
            if self.args.limit_batches and step >= self.args.limit_batches:
                break
            correct += int((self.model(self.to_input(images)).argmax(1).cpu() == labels).sum())
            seen += len(labels)
        stats = torch.tensor([correct, seen], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(stats)
        return stats[0].item() / max(1, stats[1].item())

    def finish(self) -> Path:
        """Measure the final model with ``models.evaluate`` and write ``OUT/NAME.pt`` plus its manifest entry."""
        self.model.eval()
        served = fast_form(ckpt.inference_form(copy.deepcopy(self.model)))  # what load_checkpoint returns
        metrics = evaluate(
            served,
            self.test_data,
            self.info,
            limit=500 * self.args.limit_batches or None,
            progress=not self.args.no_progress,
        )
        meta = self.meta()
        meta["metrics"] = {**metrics, "train_wall_time_s": round(self.elapsed, 1)}
        final = self.out / f"{self.name}.pt"
        ckpt.save_checkpoint(final, self.model.cpu(), meta)
        write_manifest_entry(
            self.out / "manifest.json",
            self.name,
            {
                "file": final.name,
                "command": self.command,
                "seed": self.args.seed,
                "world_size": self.world,
                "wall_time_s": round(self.elapsed, 1),
                "machine": (
                    f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                    f"device {self.device.type}"
                ),
                "date": dt.date.today().isoformat(),
                "metrics": metrics,
                **self.chain_fields(),
            },
        )
        return final

    def chain_fields(self) -> dict:
        """``chain``, ``cumulative_epochs``, ``cumulative_wall_time_s``: this run's plus those of the run it started
        from (``--init-from``), read from the manifest beside that checkpoint (a parent without one counts as a
        first link of unknown history: the chain starts at it, its epochs and time are not counted)."""
        parent = None
        if self.args.init_from:
            source = Path(self.args.init_from)
            entry = read_manifest(source.parent).get(source.stem, {})
            parent = entry if "chain" in entry else {"chain": [source.stem]}
        return chain_fields(self.name, len(self.history), self.elapsed, parent)


def open_tensorboard(folder: str):
    """A ``SummaryWriter`` on ``folder``; tensorboard is optional, so its absence is a usage error."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "--tensorboard needs the tensorboard package (pip install tensorboard), "
            "which RouteScope does not install; the metrics are in OUT/NAME.metrics.jsonl either way"
        ) from None
    return SummaryWriter(folder)


def init_from(model: RouteScopeModel, path: str) -> None:
    """Copy every weight of ``path`` whose name and shape match; the rest (gates, routers) keep their init,
    except what the model can derive from the unmatched ones (``model.upcycle``: CondConv experts from dense
    kernels, DS-Net grid gates from global-pool gates)."""
    source = ckpt.read_checkpoint(path)["state_dict"]
    own = model.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ckpt.CheckpointError(f"{path}: no weight matches {model.arch}")
    model.load_state_dict(matched, strict=False)
    upcycled = model.upcycle({k: v for k, v in source.items() if k not in matched})
    if is_main_process():
        print(
            f"initialized {len(matched)}/{len(own)} tensors from {path}; new: {len(own) - len(matched)}"
            + (f" ({len(upcycled)} derived from unmatched ones by {type(model).__name__}.upcycle)" if upcycled else "")
        )


def setup_distributed(device: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
