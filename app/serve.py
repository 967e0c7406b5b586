"""``streamlit run app/streamlit_app.py ARGS``, warmed first: ``python -m routescope.app.serve ARGS``.

Streamlit runs the app's script only when a browser connects, so the first visitor used to pay for the process's
one-time work: importing torch, pandas and plotly (about 2 s here) and PyTorch's lazy import of its meta kernels on
the first checkpoint load (about 1 s). This launcher does that work before the server listens (the featured
SkipNet loaded and traced once on a sample image), then hands over to Streamlit's own command line in the same
process, so the first prediction appears as fast as any later one.
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "streamlit_app.py"


def warm_up() -> None:
    """The process's one-time imports and lazy initialisations, as the first page view would do them."""
    import pandas  # noqa: F401 (the pages' libraries; the app's own modules are left to Streamlit's runtime, which
    import plotly.express  # noqa: F401 (sets up their caches when the script first runs)
    import torch

    import routescope.analysis.core.attributions  # noqa: F401 (captum)
    from routescope.analysis.core.catalog import bundled_checkpoints, featured_names, sample_images
    from routescope.analysis.core.images import load_model_input
    from routescope.models.checkpoint import load_checkpoint
    from routescope.models.trace import traced_forward

    bundled = bundled_checkpoints()
    names = [n for n in featured_names() if n in bundled] or list(bundled)
    samples = sample_images()
    if not names or not samples:
        return
    model = load_checkpoint(bundled[names[0]])
    pixels = load_model_input(samples[0].read_bytes(), model.meta, samples[0].name)
    with torch.no_grad():
        traced_forward(model, pixels.tensor)


def main(argv: list[str] | None = None) -> int:
    from streamlit.web import cli

    try:
        warm_up()
    except Exception as e:  # noqa: BLE001 (a warm-up that fails must not stop the server: the first visit pays)
        print(f"warm-up skipped: {e}", file=sys.stderr)
    sys.argv = ["streamlit", "run", str(SCRIPT), *(sys.argv[1:] if argv is None else argv)]
    return cli.main()


if __name__ == "__main__":
    raise SystemExit(main())
