"""Training options, declared once as dataclasses: the command line, the recipe files and the checkpoint meta read them.

Each field is one option: its type hint is the type, its default the default, ``option(help=...)`` the help text and
any choices. ``add_options`` makes the argparse flags (``rl_epochs`` -> ``--rl-epochs``, a ``bool`` -> a switch),
``options_of`` reads a parsed namespace back into the dataclass, ``check_recipe`` refuses a recipe file's unknown key
by name, and ``option_argv`` turns recipe values back into flags (``models.zoo``), without argparse's internals.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

from .data import DATASET_NAMES
from .errors import UsageError
from .registry import Recipe, method_of, recipe_of

T = TypeVar("T")


def option(
    default: Any = None, help: str = "", choices: Iterable[str] | None = None, metavar: str | None = None
) -> Any:
    """A dataclass field that is a command-line option."""
    return dataclasses.field(
        default=default, metadata={"help": help, "choices": tuple(choices) if choices else None, "metavar": metavar}
    )


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(hint: Any) -> type:
    """``float | None`` -> float; ``int`` -> int; a plain type stays itself."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner
    return hint


def option_types(cls: type) -> dict[str, type]:
    """``{field: scalar type}`` of an options dataclass (``None`` allowed wherever the default is None)."""
    hints = typing.get_type_hints(cls)
    return {f.name: _scalar_type(hints[f.name]) for f in dataclasses.fields(cls)}


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type) -> None:
    """One flag per field of ``cls``."""
    kinds = option_types(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if kinds[f.name] is bool:
            if f.default is not False:
                raise TypeError(f"{cls.__name__}.{f.name}: a switch defaults to False")
            parser.add_argument(flag(f.name), action="store_true", help=meta.get("help"))
        else:
            parser.add_argument(
                flag(f.name),
                type=kinds[f.name],
                default=f.default,
                choices=meta.get("choices"),
                metavar=meta.get("metavar"),
                help=meta.get("help"),
            )


def options_of(cls: type[T], args: argparse.Namespace | Mapping[str, Any]) -> T:
    """``cls`` from parsed arguments; a field the namespace lacks (a recipe called from code) keeps its default."""
    values = args if isinstance(args, Mapping) else vars(args)
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def option_defaults(*classes: type) -> dict[str, Any]:
    return {f.name: f.default for cls in classes for f in dataclasses.fields(cls)}


def check_recipe(recipe: Mapping[str, Any], classes: Iterable[type], source: str) -> None:
    """A ``UsageError`` naming the first key of ``recipe`` that no options class declares, or a value of the wrong
    type (a recipe file is read before any training starts)."""
    kinds: dict[str, type] = {}
    for cls in classes:
        kinds.update(option_types(cls))
    for key, value in recipe.items():
        if key not in kinds:
            raise UsageError(f"{source}: unknown option {key!r}; known: {', '.join(sorted(kinds))}")
        kind = kinds[key]
        ok = (
            value is None
            or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (kind is not float and isinstance(value, kind))
            or (kind is str and isinstance(value, dict))
        )
        if not ok:
            raise UsageError(f"{source}: option {key!r} must be {kind.__name__}, not {value!r}")


def option_argv(values: Mapping[str, Any], classes: Iterable[type]) -> list[str]:
    """The command-line flags that give ``values`` (a switch is present when true, absent when false)."""
    kinds: dict[str, type] = {}
    for cls in classes:
        kinds.update(option_types(cls))
    argv: list[str] = []
    for key, value in values.items():
        if kinds[key] is bool:
            argv += [flag(key)] if value else []
        elif value is not None:
            argv += [flag(key), str(value)]
    return argv


@dataclasses.dataclass
class TrainOptions:
    """What every ``models.train`` run takes, whatever the method."""

    model: str = option(None, "registered model name (see models.list_models())")
    model_args: str = option("{}", 'JSON of extra builder arguments, e.g. \'{"gate": "rnn"}\'')
    dataset: str = option("fashion-mnist", choices=DATASET_NAMES)
    data_dir: str | None = option(None, "folder with the data set (else $ROUTESCOPE_DATA, then system paths)")
    download: bool = option(False, "download Fashion-MNIST if it is not found")
    image_size: int = option(32, "side of ImageFolder images")
    epochs: int = option(15)
    batch_size: int = option(128, "global batch size (split over processes)")
    lr: float = option(0.1)
    weight_decay: float = option(5e-4)
    no_augment: bool = option(
        False, "train on the images as they are (no random crop/flip; the RePr paper's ConvNet setting)"
    )
    seed: int = option(0)
    out: str = option("runs", "output folder")
    name: str | None = option(None, "checkpoint name (default: MODEL_DATASET)")
    resume: bool = option(False, "continue from OUT/NAME.last.pt")
    init_from: str | None = option(
        None,
        "start from the matching weights of another checkpoint (e.g. a SkipNet from the plain ResNet)",
        metavar="CHECKPOINT",
    )
    device: str | None = option(
        None, "cpu, cuda, cuda:N or mps (default: $ROUTESCOPE_DEVICE, else cuda when available, else cpu)"
    )
    workers: int = option(0, "DataLoader workers (useful for ImageFolder)")
    limit_batches: int = option(0, "stop each epoch after N batches (smoke tests)")
    holdout: int = option(
        0, "keep the last N training images out of training, for stages that calibrate on unseen images", metavar="N"
    )
    no_progress: bool = option(False, "no tqdm bars")
    tensorboard: str | None = option(
        None, "also write TensorBoard scalars to DIR (needs the optional tensorboard package)", metavar="DIR"
    )
    recipe: str | None = option(
        None,
        "take the options of a recipe file (recipes/NAME.toml); options given beside it "
        "override the file's; its checkpoint names resolve to OUT/NAME.pt (OUT default "
        "models/pretrained)",
        metavar="FILE",
    )


def build_parser(recipe: Recipe | None = None) -> argparse.ArgumentParser:
    """``models.train``'s parser: ``TrainOptions`` plus the options of ``recipe`` (the chosen model's method)."""
    p = argparse.ArgumentParser(
        prog="python -m models.train", description="Train a registered model.", allow_abbrev=False
    )
    add_options(p, TrainOptions)
    if recipe is not None and recipe.options is not None:
        add_options(p.add_argument_group(recipe.title or recipe.method), recipe.options)
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Recipe]:
    """Two passes: ``--model`` names the method, whose recipe adds its own options; any other method's option
    is then an unknown argument (an error), not a value silently stored in the checkpoint's meta."""
    known, _ = build_parser().parse_known_args(argv)
    if known.model is None:
        build_parser().error("the following arguments are required: --model")
    try:
        recipe = recipe_of(method_of(known.model))
    except KeyError as e:
        build_parser().error(str(e).strip("'\""))
    return build_parser(recipe).parse_args(argv), recipe


def run_option_classes(recipe: Recipe) -> tuple[type, ...]:
    """The options classes of a run of ``recipe``'s method."""
    return (TrainOptions,) if recipe.options is None else (TrainOptions, recipe.options)
