"""Seed statistics of finished runs: ``python -m analysis.experiments DIR [DIR|CKPT ...] [--markdown] [--json]``.

One row per (data set, architecture, method, RePr ranking); what each column means is in ``analysis.core.runs``.
"""

from __future__ import annotations

import argparse
import sys

from routescope.analysis.core.runs import (
    collect_runs,
    display_table,
    markdown_table,
    measured_on,
    summarize_runs,
    table_json,
)
from routescope.analysis.core.testsets import add_test_set_arguments, test_set_of
from routescope.models.data import DataNotFoundError
from routescope.models.checkpoint import CheckpointError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.experiments", description=__doc__.split("\n")[0])
    p.add_argument(
        "sources", nargs="+", metavar="DIR|CKPT", help="folders of finished checkpoints and/or checkpoint files"
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="print a markdown table")
    fmt.add_argument("--json", action="store_true", help="print JSON records (accuracies as fractions)")
    add_test_set_arguments(p, when_absent="the accuracy each run recorded on its own test set")
    args = p.parse_args(argv)
    problems: list[str] = []
    try:
        runs = collect_runs(args.sources, on_error=problems.append)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if args.dataset:  # accuracy on the chosen test set, not the one each run recorded
        try:
            runs = measured_on(runs, lambda meta: test_set_of(args, meta))
        except (DataNotFoundError, CheckpointError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"test accuracy measured on {args.dataset}", file=sys.stderr)
    for row in runs[runs["test_acc"].isna()].itertuples():
        print(f"skipped {row.path}: no metrics.test_acc (an unfinished run?)", file=sys.stderr)
    table = summarize_runs(runs)
    if table.empty:
        print("error: no evaluated checkpoint found", file=sys.stderr)
        return 2
    if args.json:
        print(table_json(table))
    elif args.markdown:
        print(markdown_table(display_table(table)))
    else:
        print(display_table(table).to_string(index=False))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
