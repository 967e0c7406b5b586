"""Budget-knob sweeps: ``python -m analysis.sweep --checkpoint P --knob NAME --values V1,V2,... [--dataset D] [--json]``.

For each value of one inference setting (``model.knobs()``: SkipNet's gate threshold, the early-exit
confidence threshold, DS-Net's width bias), the accuracy and the mean/min/max MACs each test image really
executed, on the same images. The model is never changed: the value travels in the trace of each call.
"""  # noqa: E501 (the first line is the --help description)

from __future__ import annotations

import argparse
import json
import sys
from routescope.analysis.core.sweeps import knob_sweep
from routescope.analysis.core.testsets import add_test_set_arguments, open_test_set, test_set_of
from routescope.models.checkpoint import CheckpointError
from routescope.models.data import DataNotFoundError
from routescope.models.devices import add_device_argument, resolve_device
from routescope.models.loading import add_model_arguments, model_from_arguments


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.sweep", description=__doc__.split("\n")[0])
    add_model_arguments(p)
    p.add_argument("--knob", required=True, help="an inference setting of the model (see --list)")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 0.3,0.5,0.7")
    add_test_set_arguments(p)
    p.add_argument(
        "--json", action="store_true", help="print a JSON list of {value, accuracy, macs_mean, macs_min, macs_max}"
    )
    add_device_argument(p)
    args = p.parse_args(argv)
    try:
        values = [float(v) for v in args.values.split(",") if v.strip()]
        model = model_from_arguments(args, map_location=resolve_device(args.device))
        test_set = test_set_of(args, model.meta)
        images = open_test_set(test_set, model.meta)
        table = knob_sweep(model, args.knob, values, images, bar=True)
    except (CheckpointError, DataNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                [
                    {k: (round(v, 6) if k == "accuracy" else v) for k, v in row.items()}
                    for row in table.to_dict("records")
                ]
            )
        )
    else:
        print(
            f"{model.meta['name']}: {args.knob} over {len(images):,} {test_set.label} images "
            f"(trained value {model.knobs()[args.knob]['default']:g})"
        )
        print(table.assign(accuracy=table["accuracy"] * 100).to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
