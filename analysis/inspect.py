"""Routing traces on the command line: ``python -m analysis.inspect --checkpoint P IMAGE [IMAGE ...]``.

Prints one JSON object per image (JSON lines, see docs/trace.md); ``--override LAYER.FIELD=VALUE`` forces a
decision and ``--knob NAME=VALUE`` moves an inference setting, as ``traced_forward`` does. A folder stands for
every image in it (recursively, in name order); a whole test set's table is ``analysis.table``. An unreadable
image gets one line on stderr and the others still get their traces; the exit status is non-zero if anything
failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from routescope.analysis.core.images import ImageError, load_model_input
from routescope.analysis.core.interventions import parse_interventions
from routescope.analysis.core.trace import trace_batch
from routescope.models.checkpoint import CheckpointError
from routescope.models.data import ImageFolderImages
from routescope.models.devices import add_device_argument, resolve_device
from routescope.models.loading import add_model_arguments, model_from_arguments
from routescope.models.trace import check_interventions


def image_paths(arguments: list[str]) -> list[str]:
    """The arguments, each folder replaced by the image files under it (name order)."""
    paths: list[str] = []
    for argument in arguments:
        folder = Path(argument)
        if folder.is_dir():
            paths += [str(p) for p in sorted(folder.rglob("*")) if p.suffix.lower() in ImageFolderImages.EXTENSIONS]
        else:
            paths.append(argument)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.inspect", description=__doc__.split("\n")[0])
    add_model_arguments(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="an image file, or a folder of them")
    p.add_argument("--no-structure", action="store_true", help="omit the per-model 'structure' entries")
    p.add_argument("--indent", type=int, default=None, help="pretty-print (then it is no longer JSON lines)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="LAYER.FIELD=VALUE",
        help="force a decision, e.g. layer2.1.executed=false, layer3.width=0.25, layer3.0.weights=[1,0,0,0]",
    )
    p.add_argument(
        "--knob", action="append", default=[], metavar="NAME=VALUE", help="an inference setting, e.g. threshold=0.7"
    )
    add_device_argument(p)
    args = p.parse_args(argv)
    try:
        overrides, knobs = parse_interventions(args.override, args.knob)
        model = model_from_arguments(args, map_location=resolve_device(args.device))
        overrides, knobs = check_interventions(model, overrides, knobs)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for path in image_paths(args.images):
        try:
            model_input = load_model_input(path, model.meta)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        record = trace_batch(
            model, model_input.tensor, [path], structure=not args.no_structure, overrides=overrides, knobs=knobs
        )[0]
        record["preprocessing"] = model_input.notes
        print(json.dumps(record, indent=args.indent), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
