"""Paper-style figures: ``python -m analysis.figures --out DIR [--only METHOD] [--checkpoint P ...]``.

Writes ``NAME.pdf`` (TrueType fonts embedded), ``NAME.png`` and ``NAME.txt`` (the caption) for every
registered figure whose method has a checkpoint; the app's Figures page shows the same figures.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from routescope.analysis.core.catalog import bundled_checkpoints
from routescope.analysis.core.figures import FigureContext, default_test_set, load_figure_modules, write_figures
from routescope.models.checkpoint import CheckpointError
from routescope.models.data import TEST_SET_NAMES, DataNotFoundError
from routescope.models.devices import add_device_argument, resolve_device
from routescope.models.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.figures", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--only",
        default=None,
        help="only the figures of one method (as a checkpoint meta names it, e.g. skipnet, early_exit)",
    )
    p.add_argument(
        "--checkpoint", action="append", default=[], help="use these checkpoints instead of the bundled ones"
    )
    p.add_argument(
        "--dataset",
        default=None,
        choices=TEST_SET_NAMES,
        help="test images of the data-set level figures (default: the full Fashion-MNIST test set when installed, "
        "else the bundled subset); every model's tables are stored, so a second run reads them",
    )
    p.add_argument("--data-dir", default=os.environ.get("ROUTESCOPE_DATA"))
    add_device_argument(p)
    args = p.parse_args(argv)
    load_figure_modules()
    checkpoints = {Path(c).stem: Path(c) for c in args.checkpoint} or bundled_checkpoints()
    try:
        context = FigureContext(
            checkpoints, args.dataset or default_test_set(), args.data_dir, resolve_device(args.device)
        )
        written = write_figures(context, args.out, args.only)
    except (CheckpointError, DataNotFoundError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
