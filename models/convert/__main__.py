"""``python -m models.convert SOURCE --from LAYOUT --out P.pt``: a published checkpoint as a RouteScope checkpoint."""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from .base import convert_file, layouts


def main(argv: list[str] | None = None) -> int:
    known = layouts()
    parser = argparse.ArgumentParser(
        prog="python -m models.convert",
        description="Convert a published checkpoint (read without running its code) into a RouteScope checkpoint.",
        epilog="layouts:\n" + "\n".join(f"  {name:<24} {layout.summary}" for name, layout in known.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="the published file (.pth, .pth.tar, .safetensors)")
    parser.add_argument("--from", dest="layout", choices=sorted(known), help="its layout (default: recognised)")
    parser.add_argument("--out", required=True, help="the RouteScope checkpoint to write (.pt)")
    args = parser.parse_args(argv)
    try:
        path = convert_file(args.source, args.out, args.layout)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
