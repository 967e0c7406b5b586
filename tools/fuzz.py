"""Fuzz the two untrusted inputs: images and checkpoints, through the same code as the app and the CLIs.

    python -m tools.fuzz                       # 2,000 image and 500 checkpoint cases, seed 0
    python -m tools.fuzz --images 200 --checkpoints 50 --seed 3

Images are real files (the samples in ``models/assets/samples``, re-encoded as PNG, JPEG, GIF, WebP and TIFF)
mutated by bit flips, byte overwrites, truncation, header edits (huge dimensions, with and without a fixed
CRC) and zero-size files; each goes through ``analysis.core.images.load_model_input`` as bytes (the app) or as
a file path (the CLI). The only acceptable outcomes are an ``ImageError`` or a valid model input (the shape
the model expects, finite values).

Checkpoints are the bundled ones mutated as files (flipped bytes, truncation, a truncated zip member) and as
payloads (NaN/inf weights, wrong dtypes and shapes, missing and extra tensors, config values of the wrong type,
huge widths, broken meta); each goes through ``models.checkpoint.load_checkpoint`` and ``check_usable`` (what
the app runs on an upload). The only acceptable outcomes are a ``CheckpointError`` or a usable model.

Every case runs in a worker process with a time limit (``--timeout``): a hang or a crash of the worker is a
failure too, and the worker is restarted. Exit status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import random
import struct
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from routescope.models.data import SAMPLE_IMAGES

PRETRAINED = Path(__file__).resolve().parent.parent / "models" / "pretrained"
# small and varied: one of each method the bundled files cover
CHECKPOINTS = (
    "convnet3_fmnist.pt",
    "resnet20_fmnist.pt",
    "skipnet_resnet20_fmnist_a1.pt",
    "dsnet_resnet20_fmnist.pt",
    "early_exit_resnet20_fmnist.pt",
    "dgconv_resnet20_fmnist_b0.5.pt",
    "repr_convnet3_fmnist.pt",
    "condconv_resnet20_fmnist.pt",
)
GRAY_META = {"input_size": [1, 28, 28], "mean": [0.286], "std": [0.353], "dark_background": True}
RGB_META = {"input_size": [3, 32, 32], "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}


@dataclass
class Case:
    kind: str  # "image" | "checkpoint"
    name: str  # what was done, e.g. "photo-sneaker.jpg/jpeg/bitflip"
    data: bytes
    via_path: bool = False
    meta: dict = field(default_factory=dict)


# --- the worker: runs one case, answers (outcome, detail) --------------------------------------------------


def run_case(case: Case) -> tuple[str, str]:
    """``("ok" | "ImageError" | "CheckpointError", message)``, or ``("failure", traceback)``."""
    import torch

    from routescope.analysis.core.images import ImageError, load_model_input
    from routescope.models.checkpoint import CheckpointError, check_usable, load_checkpoint

    try:
        if case.kind == "sleep":  # a hang on purpose: tests/test_fuzz.py checks the time limit with it
            time.sleep(3600)
        if case.kind == "image":
            with tempfile.TemporaryDirectory() as folder:
                source: bytes | Path = case.data
                if case.via_path:
                    source = Path(folder) / "input.bin"
                    source.write_bytes(case.data)
                out = load_model_input(source, case.meta, case.name)
            c, h, w = case.meta["input_size"]
            if tuple(out.tensor.shape) != (1, c, h, w) or out.tensor.dtype != torch.float32:
                return (
                    "failure",
                    f"model input of shape {tuple(out.tensor.shape)} {out.tensor.dtype}, want (1, {c}, {h}, {w})",
                )
            if not torch.isfinite(out.tensor).all():
                return "failure", "model input is not finite"
            return "ok", ""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "upload.pt"
            path.write_bytes(case.data)
            model = check_usable(load_checkpoint(path))
        return "ok", model.arch
    except ImageError as e:
        return ("ImageError", str(e)) if case.kind == "image" else ("failure", traceback.format_exc())
    except CheckpointError as e:
        return ("CheckpointError", str(e)) if case.kind == "checkpoint" else ("failure", traceback.format_exc())
    except Exception:
        return "failure", traceback.format_exc()


def _worker(conn) -> None:
    import warnings

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")  # Pillow warns about every corrupt tag; the outcome is what counts
    import torch

    torch.set_num_threads(1)
    while True:
        try:
            case = conn.recv()
        except EOFError:
            return
        if case is None:
            return
        start = time.perf_counter()
        outcome, detail = run_case(case)
        conn.send((outcome, detail, time.perf_counter() - start))


class Runner:
    """One worker process at a time; a case past ``timeout`` seconds, or a worker that dies, is a failure and
    the worker is replaced."""

    def __init__(self, timeout: float) -> None:
        self.timeout, self.context, self.process = timeout, mp.get_context("spawn"), None

    def _start(self) -> None:
        self.conn, child = self.context.Pipe()
        self.process = self.context.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def _stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.process = None

    def run(self, case: Case) -> tuple[str, str, float]:
        if self.process is None or not self.process.is_alive():
            self._start()
        start = time.perf_counter()
        self.conn.send(case)
        # the first case also waits for the worker's imports
        if self.conn.poll(self.timeout + 30 if not getattr(self, "warm", False) else self.timeout):
            try:
                self.warm = True
                return self.conn.recv()
            except EOFError:
                pass
        elapsed = time.perf_counter() - start
        alive = self.process.is_alive()
        self._stop()
        self.warm = False
        return ("failure", f"timed out after {elapsed:.1f} s" if alive else "the worker process died", elapsed)

    def close(self) -> None:
        if self.process is not None:
            try:
                self.conn.send(None)
                self.process.join(5)
            finally:
                self._stop()


# --- image cases --------------------------------------------------------------------------------------------


def _encodings(path: Path) -> dict[str, bytes]:
    """The sample as it is, and re-encoded in each format the fuzzer covers."""
    from PIL import Image

    img = Image.open(path)
    img.load()
    out = {path.suffix.lstrip(".").lower(): path.read_bytes()}
    for fmt, mode in (("png", None), ("jpeg", "RGB"), ("gif", "P"), ("webp", None), ("tiff", None)):
        buffer = io.BytesIO()
        (img.convert(mode) if mode else img).save(buffer, fmt.upper())
        out[fmt] = buffer.getvalue()
    if img.mode != "RGBA":  # a frame sequence and a transparent image
        buffer = io.BytesIO()
        frames = [img.convert("P"), img.convert("P").rotate(90)]
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
        out["gif-animated"] = buffer.getvalue()
    return out


def _png_dims(data: bytes, w: int, h: int, fix_crc: bool) -> bytes:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return data
    b = bytearray(data)
    b[16:24] = struct.pack(">II", w, h)
    if fix_crc:
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    return bytes(b)


def _jpeg_dims(data: bytes, w: int, h: int) -> bytes:
    b = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        i = data.find(marker, 2)
        if i > 0:
            b[i + 5 : i + 9] = struct.pack(">HH", h, w)
            break
    return bytes(b)


def _gif_dims(data: bytes, w: int, h: int) -> bytes:
    b = bytearray(data)
    b[6:10] = struct.pack("<HH", w, h)
    i = data.find(b"\x2c", 13)  # the first image descriptor
    if i > 0 and i + 9 <= len(b):
        b[i + 5 : i + 9] = struct.pack("<HH", w, h)
    return bytes(b)


def _tiff_dims(data: bytes, w: int, h: int) -> bytes:
    if data[:2] not in (b"II", b"MM"):
        return data
    e = "<" if data[:2] == b"II" else ">"
    b = bytearray(data)
    ifd = struct.unpack(e + "I", data[4:8])[0]
    count = struct.unpack(e + "H", data[ifd : ifd + 2])[0]
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag, typ = struct.unpack(e + "HH", data[at : at + 4])
        if tag in (256, 257):
            value = w if tag == 256 else h
            b[at + 8 : at + 12] = struct.pack(
                e + ("HH" if typ == 3 else "I"), *((min(value, 65535), 0) if typ == 3 else (value,))
            )
    return bytes(b)


def _webp_dims(data: bytes, w: int, h: int) -> bytes:
    b = bytearray(data)
    chunk = data[12:16]
    if chunk == b"VP8X":
        b[24:27], b[27:30] = (w - 1).to_bytes(3, "little"), (h - 1).to_bytes(3, "little")
    elif chunk == b"VP8 " and len(b) >= 30:
        b[26:30] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)
    elif chunk == b"VP8L" and len(b) >= 25:
        bits = ((w - 1) & 0x3FFF) | (((h - 1) & 0x3FFF) << 14)
        b[21:25] = struct.pack("<I", bits | (struct.unpack("<I", data[21:25])[0] & 0xF0000000))
    return bytes(b)


HEADER_EDITS = {
    "png": _png_dims,
    "jpeg": _jpeg_dims,
    "jpg": _jpeg_dims,
    "gif": _gif_dims,
    "gif-animated": _gif_dims,
    "tiff": _tiff_dims,
    "webp": _webp_dims,
}


def _mutate_bytes(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One byte-level mutation; what it was and the result."""
    b = bytearray(data)
    choice = rng.random()
    if choice < 0.3:
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return "bitflip", bytes(b)
    if choice < 0.5:
        i = rng.randrange(min(len(b), 64))  # the header region
        n = rng.randint(1, 8)
        b[i : i + n] = bytes(rng.randrange(256) for _ in range(n))
        return "header-bytes", bytes(b)
    if choice < 0.7:
        return "truncate", bytes(b[: rng.randrange(len(b))])
    if choice < 0.8:
        i = rng.randrange(len(b))
        return "insert", bytes(b[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + b[i:])
    if choice < 0.9:
        i, j = sorted(rng.randrange(len(b)) for _ in range(2))
        return "delete", bytes(b[:i] + b[j:])
    return "extreme-bytes", bytes(b[: rng.randrange(len(b))] + bytes([rng.choice((0, 255))]) * rng.randint(1, 4096))


def image_cases(n: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    samples = sorted(p for p in SAMPLE_IMAGES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    encoded = [(p.name, fmt, data) for p in samples for fmt, data in _encodings(p).items()]
    cases = [
        Case("image", "empty/zero-size", b"", False, GRAY_META),
        Case("image", "empty/zero-size-path", b"", True, GRAY_META),
    ]
    while len(cases) < n:
        name, fmt, data = rng.choice(encoded)
        meta = GRAY_META if rng.random() < 0.75 else RGB_META
        roll = rng.random()
        if roll < 0.2 and fmt in HEADER_EDITS:
            w, h = rng.choice(
                [(65535, 65535), (100_000, 100_000), (6000, 6000), (1, 100_000), (0, 0), (1, 1), (7000, 5000)]
            )
            edit = HEADER_EDITS[fmt]
            if edit is _png_dims:
                mutated = edit(data, w, h, rng.random() < 0.7)
            else:  # 16-bit fields (24-bit in WebP's VP8X)
                mutated = edit(data, max(1, min(w, 65535)), max(1, min(h, 65535)))
            what = f"dims-{w}x{h}"
        elif roll < 0.25:
            what, mutated = "as-is", data
        else:
            what, mutated = _mutate_bytes(rng, data)
            if rng.random() < 0.2:  # two mutations
                more, mutated = _mutate_bytes(rng, mutated or b"\0")
                what += "+" + more
        cases.append(Case("image", f"{name}/{fmt}/{what}", mutated, rng.random() < 0.3, meta))
    return cases[:n]


# --- checkpoint cases ---------------------------------------------------------------------------------------


def _save(payload: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _truncate_member(rng: random.Random, data: bytes) -> bytes:
    """Rewrite the zip with one member (a tensor's storage or the pickle) cut short."""
    source = zipfile.ZipFile(io.BytesIO(data))
    names = source.namelist()
    victim = rng.choice(names)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name in names:
            content = source.read(name)
            target.writestr(name, content[: rng.randrange(len(content) + 1)] if name == victim else content)
    return out.getvalue()


def _payload_mutation(rng: random.Random, payload: dict) -> str:
    """Edit ``payload`` in place; what was done."""
    import torch

    state, config, meta = payload["state_dict"], payload["config"], payload["meta"]
    floats = [k for k, v in state.items() if v.is_floating_point() and v.numel()]
    key = rng.choice(floats)
    roll = rng.randrange(22)
    if roll == 0:
        t = state[key].clone()
        t.view(-1)[rng.randrange(t.numel())] = rng.choice([float("nan"), float("inf"), -float("inf")])
        state[key] = t
        return f"nonfinite-weight:{key}"
    if roll == 1:
        state[key] = state[key].to(rng.choice([torch.float64, torch.float16, torch.int64, torch.bfloat16]))
        return f"dtype:{key}"
    if roll == 2:
        shape = list(state[key].shape)
        shape[rng.randrange(len(shape))] += rng.choice([1, -1]) if shape else 1
        state[key] = torch.zeros([max(s, 0) for s in shape])
        return f"shape:{key}"
    if roll == 3:
        state[key] = state[key].reshape(-1)
        return f"flattened:{key}"
    if roll == 4:
        del state[key]
        return f"missing:{key}"
    if roll == 5:
        state[f"extra.{rng.randrange(100)}"] = torch.zeros(3)
        return "extra-tensor"
    if roll == 6:
        config["widths"] = rng.choice([[4096, 4096, 4096], [2048, 2048, 2048], [10**9] * 3, [1024] * 3])
        return f"huge-widths:{config['widths'][0]}"
    if roll == 7:
        config["widths"] = rng.choice(
            [
                "16,32,64",
                [16, 32],
                [16.0, 32.0, 64.0],
                [0, 32, 64],
                [-16, 32, 64],
                [True, 32, 64],
                [[16], 32, 64],
                None,
                {},
                [16, 32, 64, 128],
            ]
        )
        return f"widths-type:{config['widths']!r}"
    if roll == 8:
        config["num_classes"] = rng.choice(["10", 10.0, 0, -1, 10**12, None, True, [10]])
        return f"num_classes:{config['num_classes']!r}"
    if roll == 9:
        config["in_chans"] = rng.choice(["1", 0, 3, 1000, 2**40, 1.5])
        return f"in_chans:{config['in_chans']!r}"
    if roll == 10:
        config[rng.choice(["depth", "bogus", "__class__", "widths_choices", "gate"])] = rng.choice(
            [1, "x", [1, 2], None]
        )
        return "config-key"
    if roll == 11:
        payload["config"] = rng.choice([[], "x", None, 3])
        return "config-not-a-dict"
    if roll == 12:
        payload["arch"] = rng.choice(["resnet21", "", None, 3, ["resnet20"], "resnet110"])
        return f"arch:{payload['arch']!r}"
    if roll == 13:
        meta["input_size"] = rng.choice(
            [
                [1, 100000, 100000],
                [1, 2, 2],
                [3, 28, 28],
                [1, 28],
                "1x28x28",
                [1, 0, 28],
                [1, 28.0, 28],
                [64, 28, 28],
                None,
            ]
        )
        return f"input_size:{meta['input_size']!r}"
    if roll == 14:
        meta["classes"] = rng.choice([[], ["a"] * 3, "abc", None, list(range(10)), ["x"] * 11])
        return f"classes:{str(meta['classes'])[:30]}"
    if roll == 15:
        meta[rng.choice(["mean", "std"])] = rng.choice(
            [[0.0], [0.1, 0.2], [float("nan")], "0.3", [], None, [0.5, 0.5, 0.5]]
        )
        return "normalization"
    if roll == 16:
        meta.pop(rng.choice(["name", "method", "dataset", "classes", "input_size", "mean", "std", "metrics", "recipe"]))
        return "meta-key-missing"
    if roll == 17:
        payload["meta"] = rng.choice([[], "meta", None])
        return "meta-not-a-dict"
    if roll == 18:
        payload["state_dict"] = rng.choice([[], {"a": 1}, None, {1: torch.zeros(1)}])
        return "state-dict-not-a-dict"
    if roll == 19:
        payload[rng.choice(["format", "version"])] = rng.choice([None, 2, "routescope", 1.0])
        return "format-version"
    if roll == 20:
        state[key] = state[key] * rng.choice([1e30, 1e38, -1e38, 0.0])
        return f"extreme-weight:{key}"
    config.update(
        {
            k: v
            for k, v in rng.choice(
                [
                    {"gate": "nope"},
                    {"head": "x"},
                    {"threshold": "high"},
                    {"num_experts": 0},
                    {"gate_grid": 10**6},
                    {"widths_choices": [0.5]},
                    {"ste": 3},
                    {"dynamic_stages": [7]},
                    {"exits": ["nowhere"]},
                ]
            ).items()
        }
    )
    return "builder-value"


def checkpoint_cases(n: int, seed: int) -> list[Case]:
    import torch

    rng = random.Random(seed)
    files = {name: (PRETRAINED / name).read_bytes() for name in CHECKPOINTS if (PRETRAINED / name).is_file()}
    if not files:
        return []
    cases = [Case("checkpoint", "empty/zero-size", b"")]
    while len(cases) < n:
        name = rng.choice(sorted(files))
        data = files[name]
        roll = rng.random()
        if roll < 0.1:
            cases.append(Case("checkpoint", f"{name}/as-is", data))
        elif roll < 0.4:
            what, mutated = _mutate_bytes(rng, data)
            cases.append(Case("checkpoint", f"{name}/{what}", mutated))
        elif roll < 0.5:
            cases.append(Case("checkpoint", f"{name}/truncated-member", _truncate_member(rng, data)))
        else:
            payload = torch.load(io.BytesIO(data), weights_only=True)
            what = _payload_mutation(rng, payload)
            cases.append(Case("checkpoint", f"{name}/{what}", _save(payload)))
    return cases[:n]


# --- the run -----------------------------------------------------------------------------------------------


def fuzz(n_images: int, n_checkpoints: int, seed: int = 0, timeout: float = 60.0, progress: bool = False) -> dict:
    """Run the seeded cases; a summary dict (cases, outcomes by kind, slowest case, failures)."""
    cases = image_cases(n_images, seed) + checkpoint_cases(n_checkpoints, seed)
    runner = Runner(timeout)
    outcomes: Counter = Counter()
    failures, slowest = [], ("", 0.0)
    start = time.perf_counter()
    try:
        for i, case in enumerate(cases):
            outcome, detail, seconds = runner.run(case)
            outcomes[f"{case.kind}: {outcome}"] += 1
            if outcome == "failure":
                failures.append((case.kind, case.name, detail))
            if seconds > slowest[1]:
                slowest = (f"{case.kind} {case.name}", seconds)
            if progress and (i + 1) % 100 == 0:
                print(f"  {i + 1}/{len(cases)} cases, {len(failures)} failures", file=sys.stderr, flush=True)
    finally:
        runner.close()
    return {
        "cases": len(cases),
        "images": n_images,
        "checkpoints": n_checkpoints,
        "seed": seed,
        "outcomes": dict(sorted(outcomes.items())),
        "failures": failures,
        "slowest": slowest,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000, help="image cases (default 2000)")
    p.add_argument("--checkpoints", type=int, default=500, help="checkpoint cases (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    args = p.parse_args(argv)
    summary = fuzz(args.images, args.checkpoints, args.seed, args.timeout, progress=True)
    print(f"python -m tools.fuzz --images {args.images} --checkpoints {args.checkpoints} --seed {args.seed}")
    print(
        f"cases: {summary['cases']} ({args.images} images, {args.checkpoints} checkpoints), "
        f"{summary['seconds']:.0f} s on {os.cpu_count()} CPUs"
    )
    for outcome, count in summary["outcomes"].items():
        print(f"  {outcome}: {count}")
    print(f"slowest case: {summary['slowest'][0]} ({summary['slowest'][1]:.2f} s)")
    print(f"failures: {len(summary['failures'])}")
    for kind, name, detail in summary["failures"][:20]:
        print(f"--- {kind} {name}\n{detail.strip()[-1500:]}")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
