"""Golden outputs of timm's own CondConv EfficientNets, for ``tests/test_convert_timm.py`` (which runs without timm).

Run in a THROWAWAY environment, never the project's (timm imports torchvision, which does not load beside the CPU
build of PyTorch; see docs/convert/timm_condconv.md)::

    python3 -m venv /tmp/timmvenv
    /tmp/timmvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm safetensors
    /tmp/timmvenv/bin/python -m tools.make_timm_golden

For each model it dumps timm's key table (key -> shape, and the fan-in of every conv/linear weight) to
``tests/data/layouts/timm_cc_b0_{4e,8e}.json`` and loads a seeded draw of weights made from that table alone
(``draw_state``: the test draws the same tensors without timm). A draw alone lets activations fade or blow up over
16 blocks, so the BatchNorm running statistics are measured once with timm on seeded images (``calibrate``) and
stored in the golden file as float16 (the only weights it holds). Then it runs seeded inputs through timm's forward
in eval mode and saves the logits and every CondConv block's routing weights (forward hooks on ``routing_fn``, with
the sigmoid timm applies) to ``tests/data/timm_cc_golden.npz`` (about 200 KB).

This module imports only torch and numpy at import time, so the test imports ``draw_state`` and ``golden_inputs``
from it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = REPO / "tests" / "data" / "layouts"
GOLDEN = REPO / "tests" / "data" / "timm_cc_golden.npz"
SEED = 0
# timm model -> key table it shares (the untrained efficientnet_cc_b0_4e has the tf_ variant's keys and shapes)
MODELS = {
    "tf_efficientnet_cc_b0_4e": "timm_cc_b0_4e",
    "tf_efficientnet_cc_b0_8e": "timm_cc_b0_8e",
    "efficientnet_cc_b0_4e": "timm_cc_b0_4e",
}
INPUTS = {"square": (2, 3, 224, 224), "odd": (1, 3, 99, 131)}  # 224: the checkpoints' size; odd: the padding rule
CALIBRATION = (4, 3, 224, 224)  # more images that set the BatchNorm statistics (``calibrate``)
ROUTING_GAIN = 0.5  # routing_fn weights relative to fan-in scale: routings differ, none saturates


def table_path(table: str) -> Path:
    return LAYOUTS / f"{table}.json"


def read_table(table: str) -> dict:
    return json.loads(table_path(table).read_text())


def draw_state(table: dict, stats: np.ndarray | None = None, seed: int = SEED) -> dict[str, torch.Tensor]:
    """Weights for every key of ``table`` (``{"keys": {key: shape}, "fan_in": {key: n}}``), drawn in the table's
    order from one seeded generator: conv/linear weights N(0, 1/fan_in) (routing weights ``ROUTING_GAIN`` times
    larger), BatchNorm gamma U(0.75, 1.25), beta and biases N(0, 0.1^2), running mean 0 and running var 1.

    ``stats`` (from the golden file) replaces the BatchNorm running statistics: every ``running_mean`` then every
    ``running_var``, in the table's order, as measured by ``calibrate`` (so activations stay of order one through
    the 16 blocks, and different images give different logits and routings)."""
    g = torch.Generator().manual_seed(seed)
    keys, fan_in = table["keys"], table["fan_in"]
    state: dict[str, torch.Tensor] = {}
    for key, shape in keys.items():
        prefix, leaf = key.rsplit(".", 1)
        is_bn = f"{prefix}.running_var" in keys
        if leaf == "num_batches_tracked":
            state[key] = torch.zeros(shape, dtype=torch.int64)
        elif leaf == "running_mean":
            state[key] = torch.zeros(shape)
        elif leaf == "running_var":
            state[key] = torch.ones(shape)
        elif leaf == "bias":
            state[key] = 0.1 * torch.randn(shape, generator=g)
        elif is_bn and leaf == "weight":
            state[key] = 0.75 + 0.5 * torch.rand(shape, generator=g)
        elif leaf == "weight":
            gain = ROUTING_GAIN if prefix.endswith("routing_fn") else 1.0
            state[key] = torch.randn(shape, generator=g) * (gain / math.sqrt(fan_in[key]))
        else:
            raise ValueError(f"no draw rule for {key}")
    if stats is not None:
        flat = torch.from_numpy(np.asarray(stats, dtype=np.float32))
        at = 0
        for key in stat_keys(table):
            n = math.prod(keys[key])
            state[key] = flat[at : at + n].reshape(keys[key]).clone()
            at += n
        if at != len(flat):
            raise ValueError(f"{len(flat)} BatchNorm statistics for {at} running_mean/running_var values")
    return state


def stat_keys(table: dict) -> list[str]:
    """The running statistics of ``table``: every ``running_mean``, then every ``running_var``."""
    keys = list(table["keys"])
    return [k for k in keys if k.endswith(".running_mean")] + [k for k in keys if k.endswith(".running_var")]


def structured_images(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Images with content at every scale (a 7x7 random field upsampled, plus noise), already normalized: unlike
    white noise, they differ from one another after a global pool, so their routings differ."""
    b, c, h, w = shape
    low = torch.randn(b, c, 7, 7, generator=generator)
    smooth = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return smooth + 0.5 * torch.randn(shape, generator=generator)


def golden_inputs(seed: int = SEED) -> dict[str, torch.Tensor]:
    """The seeded inputs of the golden file."""
    g = torch.Generator().manual_seed(seed + 1)
    return {name: structured_images(shape, g) for name, shape in INPUTS.items()}


def checksum(tensors: dict[str, torch.Tensor]) -> float:
    """A number that changes when a draw changes (the test's guard against a different random stream)."""
    return float(sum(t.double().abs().sum() for t in tensors.values() if t.is_floating_point()))


def key_table(model) -> dict:
    """timm's state dict as ``{"keys": {key: shape}, "fan_in": {weight key: fan-in}}``, in timm's order."""
    import torch.nn as nn
    from timm.layers import CondConv2d

    fan_in = {}
    for name, module in model.named_modules():
        if isinstance(module, CondConv2d):
            fan_in[f"{name}.weight"] = math.prod(module.weight_shape[1:])
        elif isinstance(module, nn.Conv2d):
            fan_in[f"{name}.weight"] = math.prod(module.weight.shape[1:])
        elif isinstance(module, nn.Linear):
            fan_in[f"{name}.weight"] = module.in_features
    return {"keys": {k: list(v.shape) for k, v in model.state_dict().items()}, "fan_in": fan_in}


def table_text(table: dict) -> str:
    """The table as JSON with one key per line (small diffs when timm changes)."""
    parts = []
    for section, entries in table.items():
        lines = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in entries.items())
        parts.append(f"{json.dumps(section)}: {{\n{lines}\n}}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


@torch.no_grad()
def calibrate(model, table: dict) -> np.ndarray:
    """BatchNorm running statistics measured on seeded calibration images (one train-mode pass, cumulative
    averages), with the drawn weights: every running_mean then every running_var (as ``stat_keys``), as float16
    (var at least 1e-3), which is what the golden file stores and ``draw_state`` reads back."""
    model.load_state_dict(draw_state(table), strict=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    g = torch.Generator().manual_seed(SEED + 2)
    model.train()(torch.cat([golden_inputs()["square"], structured_images(CALIBRATION, g)]))
    model.eval()
    state = model.state_dict()
    parts = []
    for key in stat_keys(table):
        value = state[key].float().flatten()
        parts.append(value.clamp_min(1e-3) if key.endswith("running_var") else value)
    return torch.cat(parts).numpy().astype(np.float16)


@torch.no_grad()
def run_timm(name: str, table: dict, stats: np.ndarray, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """timm's logits and per-block routing weights for each input, with the drawn weights loaded strictly."""
    import timm

    model = timm.create_model(name, pretrained=False).eval()
    model.load_state_dict(draw_state(table, stats), strict=True)
    routing: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, n=n: routing.__setitem__(n, torch.sigmoid(o)))
        for n, module in model.named_modules()
        if n.endswith("routing_fn")
    ]
    out = {}
    for kind, x in inputs.items():
        routing.clear()
        out[f"{name}/{kind}/logits"] = model(x).numpy()
        for n, r in routing.items():
            out[f"{name}/{kind}/routing/{n.removesuffix('.routing_fn')}"] = r.numpy()
    for h in hooks:
        h.remove()
    return out


def main(argv: list[str] | None = None) -> None:
    import timm

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(GOLDEN))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    LAYOUTS.mkdir(parents=True, exist_ok=True)
    inputs = golden_inputs()
    golden: dict[str, np.ndarray] = {"inputs_checksum": np.float64(checksum(inputs))}
    for name, table_name in MODELS.items():
        model = timm.create_model(name, pretrained=False)
        table = key_table(model)
        if f"{table_name}/stats" not in golden:  # the first model of a table (a tf_ one) calibrates it
            path = table_path(table_name)
            path.write_text(table_text(table))
            golden[f"{table_name}/stats"] = calibrate(model, table)
            golden[f"{table_name}/weights_checksum"] = np.float64(
                checksum(draw_state(table, golden[f"{table_name}/stats"]))
            )
        elif table != read_table(table_name):
            raise SystemExit(f"{name}: its key table differs from {table_path(table_name)}")
        results = run_timm(name, table, golden[f"{table_name}/stats"], inputs)
        golden.update(results)
        logits = results[f"{name}/square/logits"]
        spread = max(float(np.ptp(v, axis=0).max()) for k, v in results.items() if "/square/routing/" in k)
        print(
            f"{name}: {len(table['keys'])} tensors, {sum(math.prod(s) for s in table['keys'].values()):,} values; "
            f"logits |max| {np.abs(logits).max():.2f}, differing by {np.abs(logits[0] - logits[1]).max():.2f}; "
            f"routing weights differ by up to {spread:.2f} between the images"
        )
    golden["timm_version"] = np.array(timm.__version__)
    golden["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(args.out, **golden)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KB) and {LAYOUTS}/*.json")


if __name__ == "__main__":
    main()
