"""The recipe files that rebuild the bundled checkpoints, and the chains they form.

* ``recipes/NAME.toml`` (repo root): the options of the run that made ``models/pretrained/NAME.pt``, the ones
  that differ from ``python -m models.train``'s defaults plus model, dataset, seed and name. A checkpoint
  option (``init_from``, ``ft_teacher``) names another recipe, which resolves to ``<out>/<that name>.pt``.
  ``python -m models.train --recipe recipes/NAME.toml [--out DIR] [more options]`` replays one.
* The *chain* of a checkpoint: its ``init_from`` links from the first run that started from scratch
  (e.g. ``resnet20_fmnist`` -> ``skipnet_resnet20_fmnist_sp`` -> ``..._a0.75`` -> ``..._a0.75_fta6kd``);
  ``manifest.json`` records it with the epochs and training time summed over it.

Its command line is ``models.zoo`` (``export``, ``bundle``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from .data import REPO_ROOT
from .errors import UsageError
from .factory import PRETRAINED, bundled_names
from .options import check_recipe, option_argv, option_defaults, parse_args, run_option_classes
from .registry import method_of, recipe_of

RECIPES = REPO_ROOT / "recipes"
DEFAULT_OUT = "models/pretrained"
# options that point at another checkpoint: a recipe names it, the run gets <out>/<name>.pt
CHECKPOINT_OPTIONS = ("init_from", "ft_teacher")
# options of where and how a run goes, not of what it trains: never written to a recipe
ENVIRONMENT_OPTIONS = frozenset(
    {"out", "resume", "no_progress", "device", "data_dir", "download", "workers", "tensorboard", "recipe"}
)
ALWAYS = ("name", "model", "dataset", "seed")


# --- recipe files -------------------------------------------------------------------------------------


def command_argv(command: str) -> list[str]:
    """The arguments of a manifest command (``python -m models.train ...`` or ``torchrun ... -m models.train ...``)."""
    words = shlex.split(command)
    if "models.train" not in words:
        raise ValueError(f"not a models.train command: {command!r}")
    return words[words.index("models.train") + 1 :]


def recipe_from_command(command: str) -> dict:
    """A recipe (TOML-ready dict) from a manifest command: the options that differ from the defaults plus
    model, dataset, seed and name; checkpoint paths become recipe names; ``model_args`` a table."""
    parsed, recipe_of_run = parse_args(command_argv(command))
    args = vars(parsed)
    defaults = option_defaults(*run_option_classes(recipe_of_run))
    recipe = {key: args[key] for key in ALWAYS}
    for key, value in args.items():
        if key in recipe or key in ENVIRONMENT_OPTIONS or value == defaults.get(key) or value is None:
            continue
        if key in CHECKPOINT_OPTIONS:
            value = Path(value).name.removesuffix(".pt")
        elif key == "model_args":
            value = json.loads(value)
        recipe[key] = value
    return recipe


def load_recipe(path: str | os.PathLike) -> dict:
    """A recipe file, each key checked against the options of its model's method (a clear error names a bad one)."""
    try:
        with open(path, "rb") as f:
            recipe = tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"no recipe {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"recipe {path} is not TOML: {e}") from None
    if not isinstance(recipe.get("model"), str):
        raise UsageError(f'recipe {path} names no model (model = "...")')
    try:
        method = recipe_of(method_of(recipe["model"]))
    except KeyError as e:
        raise UsageError(f"recipe {path}: {str(e).strip(chr(39))}") from None
    check_recipe(
        {k: json.dumps(v) if k == "model_args" else v for k, v in recipe.items()},
        run_option_classes(method),
        f"recipe {path}",
    )
    return recipe


def recipe_path(name: str) -> Path:
    return RECIPES / f"{name}.toml"


def recipe_argv(recipe: dict, out: str = DEFAULT_OUT) -> list[str]:
    """The ``models.train`` arguments of a recipe, writing to ``out`` (its checkpoint options resolve there)."""
    values = {
        key: str(Path(out) / f"{value}.pt")
        if key in CHECKPOINT_OPTIONS
        else json.dumps(value)
        if key == "model_args"
        else value
        for key, value in recipe.items()
    }
    return [*option_argv(values, run_option_classes(recipe_of(method_of(recipe["model"])))), "--out", str(out)]


def expand_recipe(argv: list[str]) -> list[str]:
    """``--recipe FILE`` in ``argv`` replaced by the recipe's options; the other arguments follow (and so
    override the file's); checkpoint options resolve in ``--out`` if given, else ``models/pretrained``."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--recipe")
    pre.add_argument("--out", default=DEFAULT_OUT)
    known, _ = pre.parse_known_args(argv)
    if known.recipe is None:
        return list(argv)
    rest, skip = [], False
    for i, word in enumerate(argv):
        if skip:
            skip = False
        elif word == "--recipe":
            skip = True
        elif not word.startswith("--recipe="):
            rest.append(word)
    return [*recipe_argv(load_recipe(known.recipe), known.out), *rest]


# --- chains -------------------------------------------------------------------------------------------


def recipe_links(name: str, recipes: dict[str, dict] | None = None) -> dict[str, str]:
    """``{option: recipe name}`` of the checkpoints the run of ``name`` reads (``init_from``, ``ft_teacher``)."""
    recipe = (recipes or {}).get(name) or load_recipe(recipe_path(name))
    return {key: recipe[key] for key in CHECKPOINT_OPTIONS if key in recipe}


def chain(name: str, recipes: dict[str, dict] | None = None) -> list[str]:
    """The ``init_from`` links that end in ``name``, first run first."""
    links, seen = [name], {name}
    while (parent := recipe_links(links[0], recipes).get("init_from")) is not None:
        if parent in seen:
            raise ValueError(f"init_from cycle through {parent!r}")
        links.insert(0, parent)
        seen.add(parent)
    return links


def build_order(name: str, recipes: dict[str, dict] | None = None) -> list[str]:
    """Every recipe ``name`` needs (its chain and, before any link, the teachers it distils from), in order."""
    order: list[str] = []

    def visit(n: str, stack: tuple) -> None:
        if n in order:
            return
        if n in stack:
            raise ValueError(f"recipe cycle through {n!r}")
        for dep in recipe_links(n, recipes).values():
            visit(dep, stack + (n,))
        order.append(n)

    visit(name, ())
    return order


def run_epochs(recipe: dict) -> int:
    """Epochs one run of ``recipe`` trains (the sum over its method's stages)."""
    args, method = parse_args(recipe_argv(recipe))
    args = copy.copy(args)
    args.ft_teacher = None  # the count, not the teacher
    return sum(stage.epochs for stage in method.stages(args))


def chain_fields(name: str, own_epochs: int, own_wall_s: float, parent: dict | None) -> dict:
    """``chain``, ``cumulative_epochs`` and ``cumulative_wall_time_s`` of a run from its parent's entry."""
    parent = parent or {}
    return {
        "chain": [*parent.get("chain", []), name],
        "cumulative_epochs": int(parent.get("cumulative_epochs", 0)) + int(own_epochs),
        "cumulative_wall_time_s": round(float(parent.get("cumulative_wall_time_s", 0.0)) + float(own_wall_s), 1),
    }


def manifest_chain_fields(manifest: dict, recipes: dict[str, dict]) -> dict[str, dict]:
    """Chain fields of every manifest entry, from the entries' wall times and the recipes' epochs."""
    fields: dict[str, dict] = {}

    def of(name: str) -> dict:
        if name not in fields:
            parent = recipe_links(name, recipes).get("init_from")
            fields[name] = chain_fields(
                name, run_epochs(recipes[name]), manifest[name].get("wall_time_s", 0.0), of(parent) if parent else None
            )
        return fields[name]

    for name in manifest:
        of(name)
    return fields


# --- files --------------------------------------------------------------------------------------------


def recipe_text(recipe: dict, chain_links: list[str], sweep: list[str]) -> str:
    import tomli_w

    lines = [
        f"# Recipe of models/pretrained/{recipe['name']}.pt "
        "(generated by `python -m models.zoo export` from manifest.json).",
        f"# Rebuild: python -m models.train --recipe recipes/{recipe['name']}.toml   "
        f"(the whole chain: make bundle NAME={recipe['name']})",
    ]
    if len(chain_links) > 1:
        lines.append(f"# Chain (init_from links, first run first): {' -> '.join(chain_links)}")
    if sweep:
        lines.append(f"# Same parent, other options (a sweep from one checkpoint): {', '.join(sweep)}")
    return "\n".join(lines) + "\n" + tomli_w.dumps(recipe)


def write_metrics(name: str, history: list[dict], folder: Path) -> Path:
    path = Path(folder) / f"{name}.metrics.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in history))
    return path


def export(
    manifest_path: Path = PRETRAINED / "manifest.json", recipes_dir: Path = RECIPES, metrics: bool = False
) -> None:
    """Write ``recipes/NAME.toml`` for every manifest entry, the chain fields into the manifest, and (``metrics``)
    ``NAME.metrics.jsonl`` of every bundled checkpoint from its ``meta["history"]``."""
    from .manifest import write_manifest_entry

    manifest = json.loads(Path(manifest_path).read_text())
    recipes = {name: recipe_from_command(entry["command"]) for name, entry in manifest.items()}
    Path(recipes_dir).mkdir(parents=True, exist_ok=True)
    children: dict[str, list[str]] = {}
    for name, recipe in recipes.items():
        children.setdefault(recipe.get("init_from"), []).append(name)
    fields = manifest_chain_fields(manifest, recipes)
    for name, recipe in sorted(recipes.items()):
        siblings = (
            sorted(n for n in children.get(recipe.get("init_from"), []) if n != name) if "init_from" in recipe else []
        )
        (Path(recipes_dir) / f"{name}.toml").write_text(recipe_text(recipe, fields[name]["chain"], siblings))
        write_manifest_entry(Path(manifest_path), name, fields[name])
    print(f"wrote {len(recipes)} recipes to {recipes_dir} and chain fields to {manifest_path}")
    if metrics:
        from .checkpoint import read_checkpoint

        folder = Path(manifest_path).parent
        for name in bundled_names(folder):
            history = read_checkpoint(folder / f"{name}.pt")["meta"].get("history", [])
            write_metrics(name, history, folder)
        print(f"wrote the metrics files of {len(bundled_names(folder))} checkpoints to {folder}")


def bundle_commands(name: str, out: str = DEFAULT_OUT) -> list[tuple[str, list[str] | None]]:
    """``(name, argv)`` for every link ``name`` needs in order; ``argv`` is ``None`` where ``<out>/<link>.pt``
    exists already (skipped)."""
    steps = []
    for link in build_order(name):
        exists = (Path(out) / f"{link}.pt").exists()
        steps.append(
            (link, None if exists else ["--recipe", str(recipe_path(link).relative_to(REPO_ROOT)), "--out", str(out)])
        )
    return steps


def bundle(name: str, out: str = DEFAULT_OUT, dry_run: bool = False) -> int:
    for link, argv in bundle_commands(name, out):
        if argv is None:
            print(f"skip {link}: {Path(out) / (link + '.pt')} exists")
            continue
        command = [sys.executable if not dry_run else "python", "-m", "models.train", *argv]
        print(shlex.join(command), flush=True)
        if not dry_run:
            rc = subprocess.call(command, cwd=REPO_ROOT)
            if rc:
                print(f"error: {link} failed (exit {rc}); the links after it were not run", file=sys.stderr)
                return rc
    return 0
