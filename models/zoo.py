"""The model zoo's command line: recipe files and chains of the bundled checkpoints (``models.recipe_files``).

python -m models.zoo export [--metrics]        # recipes/*.toml and the manifest's chain fields from the manifest
python -m models.zoo bundle NAME [--out DIR] [--dry-run]   # replay NAME's chain, skipping existing links
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .factory import PRETRAINED
from .recipe_files import DEFAULT_OUT, RECIPES, bundle, export, recipe_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.zoo", description="Recipes and chains of the bundled checkpoints."
    )
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser(
        "export", help="recipes/*.toml and the manifest's chain fields from models/pretrained/manifest.json"
    )
    e.add_argument("--manifest", default=str(PRETRAINED / "manifest.json"))
    e.add_argument("--recipes", default=str(RECIPES))
    e.add_argument("--metrics", action="store_true", help="also write NAME.metrics.jsonl of each bundled checkpoint")
    b = sub.add_parser("bundle", help="replay the chain of init_from links that ends in NAME")
    b.add_argument("name")
    b.add_argument("--out", default=DEFAULT_OUT)
    b.add_argument("--dry-run", action="store_true", help="print the commands, run none")
    args = p.parse_args(argv)
    if args.command == "export":
        export(Path(args.manifest), Path(args.recipes), args.metrics)
        return 0
    if not recipe_path(args.name).exists():
        print(
            f"error: no recipe {recipe_path(args.name)}; "
            f"known: {', '.join(sorted(p.stem for p in RECIPES.glob('*.toml')))}",
            file=sys.stderr,
        )
        return 2
    return bundle(args.name, args.out, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
