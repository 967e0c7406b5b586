"""How fast the app answers a question: ``python -m tools.interaction_bench [--repeats N]``.

Prints the server-side time to recompute one image's intervened trace after a forced decision plus a knob
move (a bundled SkipNet and DS-Net; target < 0.3 s), and an 11-value knob sweep over the 500-image subset
(target < 10 s on 2 cores). Numbers only, no assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from routescope.analysis.core.catalog import PRETRAINED, sample_images
from routescope.analysis.core.images import load_model_input
from routescope.analysis.core.kinds import decision_controls
from routescope.analysis.core.table import load_test_images
from routescope.analysis.core.trace import trace_batch
from routescope.analysis.core.tradeoff import knob_values
from routescope.analysis.core.sweeps import knob_sweep
from routescope.analysis.core.testsets import in_memory_test_set
from routescope.models.checkpoint import load_checkpoint

MODELS = ("skipnet_resnet20_fmnist_a0.75_fta6kd", "dsnet_resnet20_fmnist")


def intervention_seconds(model: torch.nn.Module, repeats: int) -> float:
    """Median seconds to decode a sample and trace it with its first decision flipped and the first knob moved."""
    data = sample_images()[0].read_bytes()
    x = load_model_input(data, model.meta, "sample").tensor
    control = decision_controls(trace_batch(model, x, ["sample"], structure=False)[0]["decisions"], model)[0]
    other = [o for o in control.options if o != control.value][0] if control.options else not control.value
    knob, spec = next(iter(model.knobs().items()))
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        x = load_model_input(data, model.meta, "sample").tensor
        trace_batch(
            model,
            x,
            ["sample"],
            structure=False,
            overrides={control.layer: {control.field: control.override(other)}},
            knobs={knob: (spec["low"] + spec["high"]) / 2 + i * 1e-3},
        )
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.interaction_bench", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--values", type=int, default=11, help="knob values of the sweep")
    args = p.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}")
    images, labels = load_test_images()
    for name in MODELS:
        model = load_checkpoint(PRETRAINED / f"{name}.pt")
        print(
            f"{name}: intervened trace + knob change {intervention_seconds(model, args.repeats):.3f} s (target < 0.3 s)"
        )
        knob = next(iter(model.knobs()))
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as store:  # traced afresh, not read from the table store
            test_set = in_memory_test_set(images, labels, model.meta)
            knob_sweep(model, knob, knob_values(model, knob, args.values), test_set, root=Path(store))
        print(
            f"{name}: {args.values}-value {knob} sweep over {len(images)} images {time.perf_counter() - start:.2f} s "
            "(target < 10 s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
