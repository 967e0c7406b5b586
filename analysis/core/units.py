"""How RouteScope writes its numbers, in one place: MACs in millions (``20.2 M``), shares and accuracies as
percentages (``94.2%``, ``65%`` of the dense network), latencies in milliseconds (``1.23 ms``), throughput in images
per second (``6,365 img/s``), counts with thousands separators (``275,877``). Value formatters for text, and the
plotly axis formats and hover formats the charts use (MACs are plotted in millions, shares as fractions).

No Streamlit here: the app's tables (``app.formatting``) and the charts of ``analysis`` both read these."""

from __future__ import annotations

import math

MILLION = 1e6


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def macs(value: float | None, digits: int = 1) -> str:
    """MACs in millions: ``20.2 M``."""
    return "–" if _missing(value) else f"{value / MILLION:.{digits}f} M"


def percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.9422`` -> ``94.2%`` (``digits=0``: ``65%``)."""
    return "–" if _missing(fraction) else f"{fraction * 100:.{digits}f}%"


def change(fraction: float) -> str:
    """A relative change, signed: ``-0.35`` -> ``-35%``, ``0.03`` -> ``+3%`` (st.metric reads the sign)."""
    return f"{fraction * 100:+.0f}%"


def ms(value: float | None, digits: int = 2) -> str:
    """Milliseconds: ``1.23 ms``."""
    return "–" if _missing(value) else f"{value:.{digits}f} ms"


def throughput(images_per_s: float | None) -> str:
    """Images per second: ``6,365 img/s``."""
    return "–" if _missing(images_per_s) else f"{images_per_s:,.0f} img/s"


def count(n: float | None) -> str:
    """A count with thousands separators: ``275,877``."""
    return "–" if _missing(n) else f"{int(n):,}"


def params(n: float | None) -> str:
    """A parameter count in millions: ``0.28 M params``."""
    return "–" if _missing(n) else f"{n / MILLION:.2f} M params"


def width(ratio: float) -> str:
    """A DS-Net width ratio: ``0.25×`` (of the stage's full channels), ``1×``."""
    return f"{ratio:g}×"


# --- plotly: MAC values divided by MILLION before plotting, shares plotted as fractions --------------------------

MACS_HOVER = "%{y:.2f} M MACs"


def macs_axis(title: str = "MACs per image") -> dict:
    """An axis of MACs plotted in millions: ticks ``20 M``, the unit in the title."""
    return dict(title=f"{title} (millions)", ticksuffix=" M")


def percent_axis(title: str, full: bool = False) -> dict:
    """An axis of fractions shown as percentages (``full``: fixed to 0-100%)."""
    return dict(title=title, tickformat=".0%", **({"range": [0, 1.0]} if full else {}))
