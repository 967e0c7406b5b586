"""``manifest.json`` beside a folder of checkpoints: how each was made and what it measured."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_manifest_entry(path: Path, name: str, entry: dict) -> None:
    """Merge one model's entry into a JSON manifest (atomic replace)."""
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest[name] = {**manifest.get(name, {}), **entry}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
