"""The registry of paper-style figures, shared by ``python -m analysis.figures`` and the app's Figures page.

Each figure is a function registered with ``@register_figure`` (in its method's module, ``analysis/methods``)
that receives a ``FigureContext`` (the checkpoints by method, cached dataset tables) and returns a
matplotlib figure. (A module of its own, so that running the CLI as ``__main__`` does not give the
per-method files a second copy of the registry.)
"""

from __future__ import annotations

import functools
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from routescope.analysis.core.table import easy_and_hard, load_test_images  # noqa: E402
from routescope.analysis.core.table_store import stored_frame, stored_table  # noqa: E402
from routescope.analysis.core.testsets import ModelImages, TestSet, in_memory_test_set, open_test_set  # noqa: E402
from routescope.models.checkpoint import load_checkpoint  # noqa: E402
from routescope.models.data import find_fashion_mnist  # noqa: E402

matplotlib.rcParams.update(
    {
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "svg.fonttype": "none",
        "figure.dpi": 110,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 9,
    }
)


@dataclass
class FigureSpec:
    name: str
    method: str
    caption: str
    make: Callable[["FigureContext"], plt.Figure]
    test_images: bool = True  # False: drawn from the checkpoints' stored metrics (full test set), not the images


FIGURES: dict[str, FigureSpec] = {}
# pyplot's current-figure state is global to the process, and the app's sessions are threads of one process:
# ``FIGURES[name].make`` draws one figure at a time
_DRAWING = threading.RLock()


def _one_at_a_time(make: Callable[["FigureContext"], plt.Figure]) -> Callable[["FigureContext"], plt.Figure]:
    @functools.wraps(make)
    def locked(context: "FigureContext") -> plt.Figure:
        with _DRAWING:
            return make(context)

    return locked


def register_figure(name: str, method: str, caption: str, test_images: bool = True):
    """Register ``make(context) -> Figure``; ``method`` is the model method it needs ("all" for any);
    ``test_images=False``: it reads the metrics stored in the checkpoints, not the context's test images."""

    def wrap(make: Callable[["FigureContext"], plt.Figure]) -> Callable:
        FIGURES[name] = FigureSpec(name, method, caption, _one_at_a_time(make), test_images)
        return make

    return wrap


def default_test_set() -> str:
    """The full Fashion-MNIST test set when it is installed, else the bundled 500-image subset (a fallback: its
    per-width or per-exit differences can be sampling noise)."""
    return "fashion-mnist" if find_fashion_mnist("test") else "fashion-mnist-subset"


@dataclass
class FigureContext:
    """Checkpoints and test images shared by all figures of a run; tables are computed once per model.

    The app shares one context between sessions (threads): loading is under a lock, so each model, table and
    the images are made once, and ``table`` returns a copy (a figure may add columns to it)."""

    checkpoints: dict[str, Path]
    dataset: str = field(default_factory=lambda: default_test_set())
    data_dir: str | None = None
    device: torch.device | str = "cpu"
    # the test images as a model (its meta) takes them, where they are not a named data set (an uploaded zip);
    # ``dataset`` then only names them in captions
    source: Callable[[dict], ModelImages] | None = None
    _models: dict = field(default_factory=dict)
    _tables: dict = field(default_factory=dict)
    _images: tuple | None = None
    _test_images: dict = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def caption(self, spec: "FigureSpec") -> str:
        """The figure's caption, naming exactly the test images its numbers come from: the context's, or (a figure of
        the checkpoints' stored metrics) the full test set its own caption names, and not the chosen images."""
        if not spec.test_images:
            return f"{spec.caption} The chosen test images are not used."
        return f"{spec.caption} Test images: {self.dataset} ({len(self.images()[1]):,})."

    def model(self, name: str) -> torch.nn.Module:
        with self._lock:
            if name not in self._models:
                self._models[name] = load_checkpoint(self.checkpoints[name], map_location=self.device)
            return self._models[name]

    def models(self, method: str) -> dict[str, torch.nn.Module]:
        """All checkpoints of one method, by name (loads every checkpoint once to read its meta)."""
        return {n: m for n in self.checkpoints if (m := self.model(n)).meta["method"] == method or method == "all"}

    def images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every test image (uint8 N x C x H x W) and label, in memory: the galleries and a few whole-set figures
        use them. From ``source``, as the first checkpoint's model takes them (labels in its classes, -1: none)."""
        with self._lock:
            if self._images is None and self.source is not None:
                images = self.test_images(next(iter(self.checkpoints)))
                items = [images[i] for i in range(len(images))]
                self._images = (
                    torch.stack([image for image, _ in items]),
                    torch.tensor([label for _, label in items], dtype=torch.long),
                )
            elif self._images is None:
                self._images = load_test_images(self.dataset, self.data_dir)
            return self._images

    def test_images(self, name: str) -> ModelImages:
        """The test set as model ``name`` takes it (its size, channels and classes)."""
        with self._lock:
            if name not in self._test_images:
                meta = self.model(name).meta
                if self.source is not None:
                    self._test_images[name] = self.source(meta)
                elif self._images is not None:  # images given to the context
                    self._test_images[name] = in_memory_test_set(*self._images, meta, self.dataset)
                else:
                    self._test_images[name] = open_test_set(TestSet(self.dataset, self.data_dir), meta)
            return self._test_images[name]

    def stored(self, name: str, what: str, make: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """A data-set level result of model ``name`` (``what``: its name and parameters) made once, across runs."""
        return stored_frame(self.model(name), self.test_images(name), what, make)

    def table(self, name: str) -> pd.DataFrame:
        """Model ``name``'s per-image table, from the table store (traced once per model and test set, across
        runs: a second ``python -m analysis.figures`` reads them)."""
        with self._lock:
            if name not in self._tables:
                self._tables[name] = stored_table(self.model(name), self.test_images(name))
            return self._tables[name].copy()


def main_model(context: FigureContext, method: str, max_mac_ratio: float = 0.9) -> str:
    """The model a single-model figure shows: the most accurate one that saves compute (mean MACs below
    ``max_mac_ratio`` of dense, so the figure shows decisions that differ), else the most accurate."""
    models = context.models(method)
    metrics = {n: m.meta.get("metrics", {}) for n, m in models.items()}
    saving = [n for n in models if metrics[n].get("mac_ratio", 1.0) < max_mac_ratio] or list(models)
    return max(saving, key=lambda n: metrics[n].get("test_acc", 0))


def easy_hard_gallery(
    context: FigureContext, name: str, describe: Callable[[pd.Series], str] | None = None, k: int = 8
) -> plt.Figure:
    """Two rows of ``k`` test images, fewest MACs (easy) above most MACs (hard), with their mean brightness and
    contrast; ``describe(row)`` labels each image (default: class and MACs). Shared by every dynamic method."""
    table = context.table(name)
    images, _ = context.images()
    easy, hard = easy_and_hard(table, k)
    describe = describe or (lambda item: f"{item['class']}\n{item['macs'] / 1e6:.1f}M")
    figure, axes = plt.subplots(2, k, figsize=(k, 2.6), squeeze=False)
    for row, (title, subset) in enumerate((("easy", easy), ("hard", hard))):
        for ax in axes[row]:
            ax.axis("off")
        for ax, (index, item) in zip(axes[row], subset.iterrows()):
            ax.imshow(images[index].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set_title(describe(item), fontsize=6)
        axes[row][0].text(
            -0.3,
            0.5,
            f"{title}\nbright {subset['brightness'].mean():.2f}\ncontrast {subset['contrast'].mean():.2f}",
            transform=axes[row][0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
        )
    figure.suptitle(f"{name}: easy vs hard images", fontsize=9)
    return figure


def matching_baselines(baselines: dict[str, torch.nn.Module], like: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The plain models of the same depth and data set as ``like`` (the dense point of its trade-off curve)."""
    depth, dataset = getattr(like, "depth", None), like.meta.get("dataset")
    return {
        name: model
        for name, model in baselines.items()
        if depth is not None and getattr(model, "depth", None) == depth and model.meta.get("dataset") == dataset
    }


def figure_bytes(figure: plt.Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, bbox_inches="tight", dpi=200 if fmt == "png" else None)
    return buffer.getvalue()


def available_figures(context: FigureContext, only: str | None = None) -> list[FigureSpec]:
    """Figures whose method has at least one checkpoint in ``context``."""
    methods = {context.model(n).meta["method"] for n in context.checkpoints}
    return [
        spec
        for spec in FIGURES.values()
        if (only is None or spec.method in (only, "all")) and (spec.method == "all" or spec.method in methods)
    ]


def write_figures(context: FigureContext, out: Path, only: str | None = None, progress: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in tqdm(available_figures(context, only), desc="figures", disable=not progress):
        figure = spec.make(context)
        for fmt in ("pdf", "png"):
            path = out / f"{spec.name}.{fmt}"
            path.write_bytes(figure_bytes(figure, fmt))
            written.append(path)
        (out / f"{spec.name}.txt").write_text(context.caption(spec) + "\n")
        plt.close(figure)
    return written


def load_figure_modules() -> None:
    """Import every method module so its figures register (the CLI and the app call this, so they agree)."""
    from routescope.analysis.core.kinds import load_method_modules

    load_method_modules()


LABEL_OFFSETS = ((4, 3), (4, -9), (-4, 3), (-4, -9), (4, 10), (-4, 10), (4, -16), (-4, -16), (10, -3), (-10, -3))


def short_name(name: str) -> str:
    """A checkpoint's name as a point label: without the data set and the ResNet-20 backbone every bundled model
    shares (``skipnet_resnet20_fmnist_a0.75`` -> ``skipnet_a0.75``)."""
    short = name.replace("_fmnist", "").replace("_resnet20", "")
    return short or name


MARKER_RADIUS_PT = 3.5  # half a default scatter marker (6 pt across) and a little room


def place_labels(ax, points, fontsize: float = 5, **style) -> int:
    """Label points ``[(x, y, text), ...]`` (or ``(x, y, text, colour)``) without overlap: each label tries a few
    offsets around its point (right, below, left, ...) and takes the first that overlaps no label placed before it and
    stays inside the axes; one that fits nowhere is left out (the legend or a table names it). Returns how many were
    left out. The points' markers count as placed too: a label never covers another model's marker."""
    from matplotlib.transforms import Bbox

    figure = ax.figure
    renderer = figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    radius = MARKER_RADIUS_PT * figure.dpi / 72
    markers = [ax.transData.transform((x, y)) for x, y, *_ in points]
    placed = [Bbox.from_extents(mx - radius, my - radius, mx + radius, my + radius) for mx, my in markers]
    left_out = 0
    for x, y, text, *colour in points:
        for dx, dy in LABEL_OFFSETS:
            label = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=fontsize,
                ha="left" if dx >= 0 else "right",
                **({"color": colour[0]} if colour else {}),
                **style,
            )
            box = label.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
            label.remove()
        else:
            left_out += 1
    return left_out
