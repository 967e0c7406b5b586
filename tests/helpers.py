"""Shared test helpers: models that look trained, inputs on which dynamic decisions differ, images a user may bring,
a tiny training run, and driving the app with AppTest. Test modules import from here (and fixtures come from
conftest.py), never from one another."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import pickle
import re
import struct
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from routescope.models.data import CIFAR10, FASHION_MNIST

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
PRETRAINED = REPO / "models" / "pretrained"


# --- the bundled checkpoints ----------------------------------------------------------------------------------------


def flagships() -> dict[str, Path]:
    """One bundled checkpoint per method (its featured flagship) plus the dense ResNet: every decision kind and a
    static net."""
    from routescope.analysis.core.catalog import bundled_checkpoints, featured

    bundled = bundled_checkpoints(PRETRAINED)
    return {
        **{e["flagship"]: bundled[e["flagship"]] for e in featured(PRETRAINED).values()},
        "resnet20_fmnist": bundled["resnet20_fmnist"],
    }


def every_bundled_checkpoint() -> list:
    """The name of every bundled checkpoint as pytest parameters, for the whole-zoo sweeps: the ``flagships()`` run by
    default, the others are marked ``heavy`` (``make test-all`` or ``pytest -m heavy`` runs them)."""
    from routescope.analysis.core.catalog import bundled_checkpoints

    default = set(flagships())
    return [
        pytest.param(name, marks=() if name in default else pytest.mark.heavy)
        for name in sorted(bundled_checkpoints(PRETRAINED))
    ]


@torch.no_grad()
def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BN affine and running statistics (as after training), so residual branches are not zero."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model


def routing_decisions(trace) -> list:
    """A trace's decisions, image by image, without the scores that float rounding may move (probabilities, weights,
    confidences): what two forms of one model must agree on exactly."""
    return [
        [
            {k: v for k, v in d.items() if k not in ("probability", "probabilities", "weights", "confidence")}
            for d in row
        ]
        for row in trace.decisions
    ]


def varied_images(n: int = 8, seed: int = 1) -> torch.Tensor:
    """Inputs with different brightness and contrast, so gates disagree across the batch."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 3.0, n).view(-1, 1, 1, 1)
    shift = torch.linspace(-2.0, 2.0, n)[torch.randperm(n, generator=g)].view(-1, 1, 1, 1)
    return torch.randn(n, 1, 28, 28, generator=g) * scale + shift


# --- images a user may bring --------------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kw)
    return buffer.getvalue()


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 1x1 PNG whose header claims a huge size: a decompression bomb that is cheap to make."""
    data = bytearray(encode(Image.new("L", (1, 1))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def shoe_on_white(size=(300, 200), mode="RGB") -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste((20, 20, 20), (60, 80, 240, 150))
    return img.convert(mode)


# --- training -----------------------------------------------------------------------------------------------------

TRAIN_ARGS = [
    "--model",
    "resnet8",
    "--dataset",
    "fashion-mnist",
    "--epochs",
    "2",
    "--batch-size",
    "32",
    "--limit-batches",
    "3",
    "--no-progress",
    "--lr",
    "0.05",
]


def train_tiny(fmnist_dir, out, *extra) -> int:
    """``python -m models.train`` of a tiny two-epoch resnet8 named ``tiny`` into ``out`` (``extra`` on top)."""
    from routescope.models import train

    return train.main([*TRAIN_ARGS, "--data-dir", str(fmnist_dir), "--out", str(out), "--name", "tiny", *extra])


def kill_training_at_epoch(monkeypatch, epoch: int) -> None:
    """Make ``models.train.Trainer`` die (KeyboardInterrupt, as a killed process) when epoch ``epoch`` (1-based) starts;
    undo with ``monkeypatch.undo()`` or a new ``setattr`` before resuming."""
    from routescope.models import train

    original = train.Trainer.train_epoch
    calls = {"n": 0}

    def dies(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt("killed")
        return original(self, *a, **k)

    monkeypatch.setattr(train.Trainer, "train_epoch", dies)


def run_args(**options):
    """A ``models.train`` namespace: every common option at its default (``models.options.TrainOptions``), ``options``
    on top; a method's own options left out take their declared defaults (``options_of``)."""
    import argparse

    from routescope.models.options import TrainOptions, option_defaults

    return argparse.Namespace(**{**option_defaults(TrainOptions), **options})


# --- the app under AppTest ----------------------------------------------------------------------------------------

APP = str(REPO / "app" / "streamlit_app.py")
TIMEOUT = 600  # per script run: generous for a loaded 2-core machine; a hang still fails
TINY_META = {
    "name": "tiny",
    "method": "baseline",
    "dataset": "fashion-mnist",
    "classes": list(FASHION_MNIST.classes),
    "input_size": [1, 28, 28],
    "mean": [0.286],
    "std": [0.353],
    "dark_background": True,
    "metrics": {"test_acc": 0.5},
    "recipe": {},
}


def start(script: str = APP, params: dict | None = None) -> AppTest:
    """The whole app (or one page's script), run once without an exception; ``params``: its URL's query parameters
    (a shared link)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(script, default_timeout=TIMEOUT)
    for key, value in (params or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def page(name: str) -> AppTest:
    return start(str(REPO / "app" / "views" / f"{name}.py"))


def plotly_values(values: list | dict) -> list | np.ndarray:
    """A trace's data as plotly's JSON holds it: a list, or a numpy array encoded as ``{"dtype", "bdata"}``."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return values


def chart_data(at: AppTest) -> list[dict]:
    """The plotly figure JSON behind every chart of the page."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def array_shape(value) -> tuple:
    """Shape of a plotly array, whether plain lists or plotly's typed-array encoding."""
    if isinstance(value, dict):
        return tuple(int(n) for n in value["shape"].split(","))
    return np.asarray(value).shape


def fingerprint(model: torch.nn.Module) -> str:
    """Weights, buffers, grads, hooks, modes and plain attributes of every module, and the meta."""
    digest = hashlib.sha256(json.dumps(model.meta, sort_keys=True, default=repr).encode())
    for name, value in model.state_dict(keep_vars=True).items():
        digest.update(name.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        digest.update(f"{value.requires_grad}{value.grad is None}".encode())
    for name, module in model.named_modules():
        plain = {
            k: repr(v) for k, v in vars(module).items() if isinstance(v, (bool, int, float, str, tuple, type(None)))
        }
        hooks = [len(getattr(module, h)) for h in vars(module) if h.endswith("_hooks")]
        digest.update(repr((name, type(module).__name__, sorted(plain.items()), hooks)).encode())
    return digest.hexdigest()


# --- other data sets, written at test time ----------------------------------------------------------------------

CIFAR_META = {
    **TINY_META,
    "name": "tiny_cifar",
    "dataset": "cifar10",
    "classes": list(CIFAR10.classes),
    "input_size": [3, 32, 32],
    "mean": list(CIFAR10.mean),
    "std": list(CIFAR10.std),
    "dark_background": False,
}


def write_cifar10(root: Path, n: int = 12) -> tuple[np.ndarray, list[int]]:
    """CIFAR-10's python test batch and meta under ``root/cifar-10-batches-py``: ``n`` random images (label i % 10);
    returns the images (N, 3, 32, 32) and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = np.random.default_rng(0).integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
    labels = [i % 10 for i in range(n)]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10.classes]}, f)
    return data.reshape(n, 3, 32, 32), labels


# --- the SkipNet authors' published files, made here (tests/data/layouts) -------------------------------------------

LAYOUT_TABLES = Path(__file__).resolve().parent / "data" / "layouts"


def layout_table(arch: str) -> dict[str, list[int]]:
    """Their tensor names and shapes for ``arch`` (an SP or HRL, CIFAR-10 or CIFAR-100 name)."""
    base = arch.replace("_rl_", "_").replace("cifar100_", "cifar10_")
    shapes = json.loads((LAYOUT_TABLES / f"skipnet_{base}.json").read_text())
    if arch.startswith("cifar100_"):
        shapes["module.fc.weight"][0] = shapes["module.fc.bias"][0] = 100
    return shapes


@torch.no_grad()
def authors_state(arch: str, seed: int = 0) -> OrderedDict:
    """Random weights in their layout. The downsample shortcut registered twice shares its storage, as one module's
    tensors did in their ``state_dict()``; the last BN of each block is small so 54 residual blocks stay finite."""
    g = torch.Generator().manual_seed(seed)
    shapes = layout_table(arch)
    last_bn = ".bn3." if "imagenet" in arch else ".bn2."

    def uniform(shape, low, high):
        return torch.rand(shape, generator=g) * (high - low) + low

    state: OrderedDict = OrderedDict()
    for key, shape in shapes.items():
        twin = re.sub(r"group(\d+)_layer(\d+)\.downsample\.", r"group\1_ds\2.", key)
        leaf = key.rsplit(".", 1)[1]
        if twin != key:
            state[key] = state[twin].view(state[twin].shape)  # another tensor, the same storage
        elif key.startswith("module.control.proj"):
            state[key] = torch.randn(shape, generator=g) * 3.0 if leaf == "weight" else torch.zeros(shape)
        elif key.startswith("module.control.rnn"):
            state[key] = uniform(shape, -0.6, 0.6)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif key.startswith("module.fc"):
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif leaf == "weight":
            state[key] = uniform(shape, 0.05, 0.3) if last_bn in key else uniform(shape, 0.5, 1.5)
        elif leaf == "running_var":
            state[key] = uniform(shape, 0.5, 2.0)
        else:  # gate embedding bias, BN bias and running mean
            state[key] = uniform(shape, -0.2, 0.2)
    return state


def authors_file(arch: str, seed: int = 0) -> dict:
    """What their ``train_sp.py`` / ``train_rl.py`` saved."""
    progress = {"iter": 9999} if "cifar" in arch and "_rl_" in arch else {"epoch": 160}
    return {**progress, "arch": arch, "state_dict": authors_state(arch, seed), "best_prec1": 92.5}
