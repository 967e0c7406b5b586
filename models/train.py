"""Train a model: ``python -m models.train --model resnet20 --dataset fashion-mnist [--recipe recipes/NAME.toml]``.

The command line of ``models.training`` (the engine): options from ``models.options``, a killed run continues
with ``--resume``. Multi-process: ``torchrun --nproc_per_node 2 -m models.train ...``.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.distributed as dist

from . import checkpoint as ckpt
from . import options
from .data import DataNotFoundError, load_dataset
from .devices import resolve_device
from .errors import UsageError
from .recipe_files import expand_recipe
from .registry import Recipe, build_model
from .training import Trainer, init_from, is_main_process, setup_distributed


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Recipe]:
    """The run's options (``models.options``), with ``--recipe FILE`` expanded first."""
    return options.parse_args(expand_recipe(list(sys.argv[1:] if argv is None else argv)))


def parse_model_args(text: str, model: str) -> dict:
    """``--model-args``: a JSON object of builder keywords, each known to the builder and of its type."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--model-args is not JSON ({e})") from None
    if not isinstance(value, dict):
        raise UsageError("--model-args must be a JSON object of builder arguments")
    try:
        ckpt.check_config(model, value)
    except UsageError as e:
        raise UsageError(f"--model-args: {e}") from None
    return value


def main(argv: list[str] | None = None) -> int:
    args, recipe = parse_args(argv)
    args.argv = expand_recipe(list(sys.argv[1:] if argv is None else argv))  # a recipe run records its options
    try:
        args.device = str(resolve_device(args.device))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_distributed(args.device)
    torch.manual_seed(args.seed)
    try:
        train_data, info = load_dataset(args.dataset, "train", args.data_dir, args.download, args.image_size)
        test_data, _ = load_dataset(args.dataset, "test", args.data_dir, args.download, args.image_size)
        model_args = {
            **parse_model_args(args.model_args, args.model),
            **(recipe.model_args(args) if recipe.model_args else {}),
        }
        model = build_model(args.model, num_classes=len(info.classes), in_chans=info.input_size[0], **model_args)
        if args.init_from:
            init_from(model, args.init_from)
        trainer = Trainer(model, recipe.stages(args), train_data, test_data, info, args)
        if args.resume:
            trainer.resume()
        trainer.fit()
        if is_main_process():
            final = trainer.finish()
            print(f"saved {final}")
    except (
        DataNotFoundError,
        UsageError,
    ) as e:  # what the user can fix (CheckpointError is one); a bug keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
