"""Every command of RouteScope, with the module that runs it: the user's commands, then the developers' tools.

A command's module keeps its own path (``python -m models.train ...`` is what the bundled checkpoints' manifests
record, and recipes replay those commands), so ``routescope train ...`` and ``python -m models.train ...`` are the
same program. The developer tools live in ``tools/`` and run from a checkout.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple


class Command(NamedTuple):
    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "train": Command(
        "routescope.models.train", "train a model from options or a recipe file (torchrun for several processes)"
    ),
    "evaluate": Command("routescope.models.evaluate", "accuracy and MACs of a checkpoint on a test set"),
    "convert": Command(
        "models.convert.__main__", "a published checkpoint (SkipNet authors', timm's CondConv) as a RouteScope one"
    ),
    "zoo": Command("routescope.models.zoo", "export the bundled checkpoints' recipes, or replay one's chain of runs"),
    "inspect": Command(
        "routescope.analysis.inspect", "trace images through a model: decisions, cost, prediction (JSON)"
    ),
    "table": Command(
        "analysis.table", "the per-image table of a model on a test set, as Parquet (resumable; torchrun shards it)"
    ),
    "sweep": Command("routescope.analysis.sweep", "accuracy and MACs of a model over the values of a budget knob"),
    "figures": Command("routescope.analysis.figures", "regenerate the figures (PDF and PNG) of the bundled models"),
    "results": Command(
        "routescope.analysis.results", "regenerate (or --check) the generated blocks of the README and docs"
    ),
    "experiments": Command("routescope.analysis.experiments", "seed statistics (mean and spread) of finished runs"),
    "schema": Command("routescope.analysis.schema", "the JSON Schema of the trace format (--write stores it in docs/)"),
}
TOOLS: dict[str, Command] = {
    "bench": Command("tools.bench", "speed of every model against its dense network, alternating (ABBA)"),
    "device-check": Command("tools.device_check", "same results on this device as on the CPU, and its speed"),
    "fuzz": Command("tools.fuzz", "mutated images and checkpoints only ever give a clear error"),
    "loadtest": Command("tools.loadtest", "several browser sessions uploading at once against a local app"),
    "interaction-bench": Command("tools.interaction_bench", "how fast the app answers each kind of question"),
    "table-bench": Command(
        "tools.table_bench", "images per second and peak memory of the per-image table (10,000 and 224x224 runs)"
    ),
    "make-samples": Command(
        "tools.make_samples", "regenerate the bundled test subset and sample images from the full test set"
    ),
}


def usage() -> str:
    rows = [f"  {name:<18} {c.summary}  [{c.module}]" for name, c in COMMANDS.items()]
    tools = [f"  {name:<18} {c.summary}  [{c.module}]" for name, c in TOOLS.items()]
    return "\n".join(
        [
            "usage: routescope COMMAND [options]   (routescope COMMAND --help for its options)",
            "",
            "commands:",
            *rows,
            "",
            "developer tools (from a checkout):",
            *tools,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name) or TOOLS.get(name)
    if command is None:
        print(f"error: no command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv = [f"routescope {name}", *rest]
    return importlib.import_module(command.module).main(rest) or 0
