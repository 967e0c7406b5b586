"""Seed statistics of finished runs (``python -m analysis.experiments`` prints them).

One row per (data set, architecture, method, RePr ranking): its runs, their distinct seeds (fewer than runs
when two runs share a seed, e.g. the same run copied into two folders) and the mean, sample
standard deviation (ddof 1; undefined for one run), min and max of their test accuracy
(``meta["metrics"]["test_acc"]``, measured by ``models.evaluate`` at the end of training). Groups come from
each checkpoint's own arch and meta, never from its file name: the seed-0 runs are bundled as
``convnet3_fmnist.pt``, the others live in ``models/pretrained/experiments/...`` as ``convnet3_s1.pt``.
``varies`` names the training options (other than the seed and where files went) that are not the same
over a group's runs, so a mean over runs that are not replicates does not pass unnoticed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import pandas as pd

from routescope.analysis.core.catalog import bundled_checkpoints, read_checkpoints
from routescope.models.checkpoint import CheckpointError, training_args

if TYPE_CHECKING:
    from routescope.analysis.core.testsets import TestSet

RUN_COLUMNS = ("name", "path", "dataset", "arch", "method", "ranking", "seed", "test_acc", "args")
GROUP_KEYS = ("dataset", "arch", "method", "ranking")
STAT_COLUMNS = ("test_acc_mean", "test_acc_std", "test_acc_min", "test_acc_max")
TABLE_COLUMNS = (*GROUP_KEYS, "n_runs", "n_seeds", "seeds", *STAT_COLUMNS, "varies")
# options that say where a run read or wrote, or are group keys already: they may differ between replicates
IGNORED_ARGS = frozenset({"seed", "name", "out", "data_dir", "download", "device", "workers", "model", "dataset"})


def checkpoint_paths(sources: Iterable[str | Path]) -> list[Path]:
    """The finished checkpoints (``*.pt``, not resumable ``*.last.pt``) of folders, plus files given directly; each
    once."""
    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            paths.extend(bundled_checkpoints(source).values())
        elif source.is_file():
            paths.append(source)
        else:
            raise CheckpointError(f"{source}: no such checkpoint file or folder")
    unique: dict[Path, Path] = {}
    for path in paths:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


_RUN_VARIANTS: dict[str, Callable[[dict], str | None]] = {}


def register_run_variant(method: str, variant: Callable[[dict], str | None]) -> None:
    """Runs of ``method`` that differ by ``variant(meta)`` (e.g. RePr's filter ranking) are grouped apart; the
    method's analysis module registers it."""
    _RUN_VARIANTS[method] = variant


def run_variant(meta: dict) -> str | None:
    from routescope.analysis.core.kinds import load_method_modules

    load_method_modules()
    variant = _RUN_VARIANTS.get(meta.get("method"))
    return variant(meta) if variant is not None else None


def plain_arch(arch: str, method: str | None) -> str:
    """The plain architecture a method's model is built on: registered names are ``<method>_<plain>``
    (``repr_convnet3`` -> ``convnet3``, ``skipnet_resnet20`` -> ``resnet20``)."""
    return arch.removeprefix(f"{method}_") if method and method != "baseline" else arch


def seed_of(meta: dict, path: Path | None = None) -> int | None:
    """The run's ``--seed``: from its meta's training args, else from the ``manifest.json`` beside the file."""
    seed = training_args(meta).get("seed")
    if seed is None and path is not None and (manifest := path.parent / "manifest.json").is_file():
        entries = json.loads(manifest.read_text())
        entry = entries.get(meta.get("name")) or next((e for e in entries.values() if e.get("file") == path.name), {})
        seed = entry.get("seed")
    return None if seed is None else int(seed)


def run_row(meta: dict, arch: str, path: Path | None = None) -> dict:
    """What the table needs of one run; ``test_acc`` is NaN for a run that was never evaluated."""
    accuracy = (meta.get("metrics") or {}).get("test_acc")
    return {
        "name": meta.get("name"),
        "path": None if path is None else str(path),
        "dataset": meta.get("dataset"),
        "arch": arch,
        "method": meta.get("method"),
        "ranking": run_variant(meta),
        "seed": seed_of(meta, path),
        "test_acc": math.nan if accuracy is None else float(accuracy),
        "args": training_args(meta),
    }


def collect_runs(sources: Iterable[str | Path], on_error: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per checkpoint (read without building the model); unreadable files raise, or go to ``on_error``."""
    payloads = read_checkpoints(checkpoint_paths(sources), on_error)
    return runs_frame([run_row(payload["meta"], payload["arch"], path) for path, payload in payloads])


def measured_on(runs: pd.DataFrame, test_set_for: Callable[[dict], "TestSet"]) -> pd.DataFrame:
    """The runs with ``test_acc`` measured again on another test set (``test_set_for(meta)``) from each model's
    stored per-image table (a model and set are traced once, across runs); NaN where the set has no labels the model
    knows. The recorded accuracy is the one of the run's own test set."""
    from routescope.analysis.core.table_store import stored_table
    from routescope.analysis.core.testsets import open_test_set
    from routescope.models.checkpoint import load_checkpoint

    measured = runs.copy()
    for index, path in measured["path"].items():
        model = load_checkpoint(path)
        correct = stored_table(model, open_test_set(test_set_for(model.meta), model.meta))["correct"].dropna()
        measured.at[index, "test_acc"] = correct.astype(float).mean() if len(correct) else math.nan
    return measured


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    """``run_row`` rows as the table ``summarize_runs`` and ``group_members`` read."""
    return _none_for_missing(pd.DataFrame(rows, columns=list(RUN_COLUMNS)), "ranking")


def _none_for_missing(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """pandas turns None into NaN; keep None (NaN keys never compare equal, so groups would split)."""
    frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _varying_args(args: list[dict]) -> str:
    """Options with more than one value among the runs that record them (older checkpoints lack newer options)."""
    keys = sorted({k for a in args for k in a} - IGNORED_ARGS)
    return ", ".join(
        k for k in keys if len({json.dumps(a[k], sort_keys=True, default=str) for a in args if k in a}) > 1
    )


def _sort_key(key: tuple) -> tuple:
    dataset, arch, method, ranking = key
    return (str(dataset), plain_arch(str(arch), method), method != "baseline", str(method), str(ranking))


def summarize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Group the evaluated runs by (dataset, arch, method, ranking): seeds, mean/std/min/max test accuracy."""
    groups: dict[tuple, list[dict]] = {}
    for row in runs.to_dict("records"):
        if not math.isnan(row["test_acc"]):
            groups.setdefault(tuple(row[k] for k in GROUP_KEYS), []).append(row)
    table = []
    for key in sorted(groups, key=_sort_key):
        members = groups[key]
        accuracy = pd.Series([r["test_acc"] for r in members], dtype="float64")
        seeds = sorted({int(r["seed"]) for r in members if r["seed"] is not None and not pd.isna(r["seed"])})
        table.append(
            {
                **dict(zip(GROUP_KEYS, key)),
                "n_runs": len(members),
                "n_seeds": len(seeds),
                "seeds": seeds,
                "test_acc_mean": accuracy.mean(),
                "test_acc_std": accuracy.std(ddof=1),
                "test_acc_min": accuracy.min(),
                "test_acc_max": accuracy.max(),
                "varies": _varying_args([r["args"] for r in members]),
            }
        )
    return _none_for_missing(pd.DataFrame(table, columns=list(TABLE_COLUMNS)), "ranking")


def group_members(runs: pd.DataFrame, group: pd.Series | dict) -> pd.DataFrame:
    """The evaluated runs behind one row of ``summarize_runs`` (None matches None, as in its grouping)."""
    mask = runs["test_acc"].notna()
    for key in GROUP_KEYS:
        mask &= runs[key].map(lambda value, want=group[key]: value == want)
    return runs[mask]


def seeds_table(sources: Iterable[str | Path], on_error: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The table for folders and/or checkpoint files (e.g. ``models/pretrained/experiments/repr_fmnist`` and
    ``models/pretrained/convnet3_fmnist.pt``)."""
    return summarize_runs(collect_runs(sources, on_error))


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracies in percent with two decimals, seeds as a list, '-' where a value does not apply."""
    shown = table.copy()
    for column in STAT_COLUMNS:
        shown[column] = [("-" if pd.isna(v) else f"{v * 100:.2f}") for v in table[column]]
    shown["ranking"] = table["ranking"].map(lambda r: r or "-")
    shown["seeds"] = table["seeds"].map(lambda s: ",".join(map(str, s)) or "?")
    shown["varies"] = table["varies"].map(lambda v: v or "-")
    return shown.rename(columns={c: c.replace("test_acc_", "acc_") + " (%)" for c in STAT_COLUMNS})


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (pandas' ``to_markdown`` needs tabulate, which RouteScope does not ship)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def table_json(table: pd.DataFrame) -> str:
    """Records with raw fractions; an undefined std (one seed) is null."""
    records = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in table.to_dict("records")
    ]
    return json.dumps(records, indent=2)
