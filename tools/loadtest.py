"""Load test: N concurrent real browser sessions against ``streamlit run``, each uploading its own image.

    python -m tools.loadtest                        # 8 sessions, 200 uploads
    python -m tools.loadtest --sessions 2 --uploads 10

Starts the app on a free loopback port, opens ``--sessions`` headless Chromium pages (playwright, the system
Chromium) and has them upload ``--uploads`` different images in all (the samples in ``models/assets/samples``
and seeded variants of them: mirrored, rotated, brightened, cropped), each page a fresh session per upload
(``?model=NAME``). Every session must show its own image's prediction, the one ``analysis.core.trace.trace_batch``
gives for the same image and model, and no exception; the server must stay up. Prints p50/p95 upload-to-ready,
the server's peak RSS (sampled from /proc) and its RSS after the warm-up round and at the end, with the verdict
(end RSS within ``1.25 x warm + 64 MiB``). Bounded: loopback only, at most 16 sessions and 2,000 uploads, a global
``--deadline``; the server is stopped on the way out. Not a timed test: the numbers describe this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from tools.serve import ServerError, running_app
from routescope.models.data import SAMPLE_IMAGES

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
MAX_SESSIONS, MAX_UPLOADS = 16, 2000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` different images: the samples, then seeded variants of them (PNG)."""
    rng = random.Random(seed)
    samples = sorted(p for p in SAMPLE_IMAGES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    out = []
    for k in range(n):
        source = samples[k % len(samples)]
        if k < len(samples):
            path = folder / f"load-{k:04d}-{source.name}"
            shutil.copy(source, path)
        else:
            img = Image.open(source).convert("RGB")
            edit = rng.randrange(4)
            if edit == 0:
                img = ImageOps.mirror(img)
            elif edit == 1:
                img = img.rotate(rng.uniform(-15, 15), expand=False, fillcolor=img.getpixel((0, 0)))
            elif edit == 2:
                img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
            else:
                w, h = img.size
                d = max(1, min(w, h) // 12)
                img = img.crop((rng.randrange(d), rng.randrange(d), w - rng.randrange(d), h - rng.randrange(d)))
            path = folder / f"load-{k:04d}-{source.stem}.png"
            img.save(path)
        out.append(path)
    return out


def expected_labels(model_name: str, images: list[Path]) -> dict[str, str]:
    """What the app must show: ``trace_batch`` on the same input, model and form."""
    from routescope.analysis.core.catalog import bundled_checkpoints
    from routescope.analysis.core.images import load_model_input
    from routescope.analysis.core.trace import trace_batch
    from routescope.models.checkpoint import load_checkpoint

    model = load_checkpoint(bundled_checkpoints()[model_name])
    labels = {}
    for path in images:
        x = load_model_input(path.read_bytes(), model.meta, path.name).tensor
        labels[path.name] = trace_batch(model, x, [path.name], structure=False)[0]["prediction"]["label"]
    return labels


class Sampler(threading.Thread):
    """The server's RSS every 0.2 s; ``peak`` and ``last``."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.last, self.stop = pid, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.last = rss_bytes(self.pid)
            except OSError:
                return
            self.peak = max(self.peak, self.last)
            self.stop.wait(0.2)


async def drive(
    url: str,
    model: str,
    images: list[Path],
    sessions: int,
    deadline: float,
    wait_s: float,
    results: list,
    warmed: asyncio.Event,
    on_warm,
) -> None:
    from playwright.async_api import async_playwright, expect

    queue: asyncio.Queue = asyncio.Queue()
    for path in images:
        queue.put_nowait(path)
    done_first = 0

    async def session(browser, k: int) -> None:
        nonlocal done_first
        context = await browser.new_context(viewport={"width": 1300, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(wait_s * 1000)
        try:
            while not queue.empty() and time.monotonic() < deadline:
                path = queue.get_nowait()
                record = {"image": path.name, "session": k}
                try:
                    await page.goto(f"{url}/?model={model}")
                    predictions = (
                        page.get_by_test_id("stMetric").filter(has_text="Prediction").get_by_test_id("stMetricValue")
                    )
                    await expect(predictions).to_have_count(1, timeout=wait_s * 1000)  # the default sample
                    await expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=wait_s * 1000)
                    start = time.perf_counter()
                    await page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(path)
                    await expect(page.get_by_text(f"{path.name}: the exact input the model saw")).to_be_visible(
                        timeout=wait_s * 1000
                    )
                    await expect(predictions).to_have_count(2, timeout=wait_s * 1000)
                    await expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=wait_s * 1000)
                    record["seconds"] = time.perf_counter() - start
                    record["label"] = (await predictions.all_inner_texts())[-1].strip()
                    record["exceptions"] = await page.get_by_test_id("stException").count()
                except Exception as e:  # a step that failed is a result to report, not the end of the run
                    record["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                results.append(record)
                done_first += 1
                if done_first == sessions:
                    on_warm()
                    warmed.set()
        finally:
            await context.close()

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            await asyncio.gather(*(session(browser, k) for k in range(sessions)))
        finally:
            await browser.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__.split("\n")[0])
    p.add_argument(
        "--sessions", type=int, default=8, help=f"concurrent browser sessions (1..{MAX_SESSIONS}, default 8)"
    )
    p.add_argument("--uploads", type=int, default=200, help=f"uploads in all (default 200, at most {MAX_UPLOADS})")
    p.add_argument("--model", default=None, help="bundled model (default: the first SkipNet)")
    p.add_argument("--deadline", type=float, default=3600, help="global time limit in seconds (default 3600)")
    p.add_argument("--wait", type=float, default=300, help="seconds one browser step may take (default 300)")
    args = p.parse_args(argv)
    if not 1 <= args.sessions <= MAX_SESSIONS or not 1 <= args.uploads <= MAX_UPLOADS:
        p.error(f"--sessions must be 1..{MAX_SESSIONS} and --uploads 1..{MAX_UPLOADS}")
    if not CHROMIUM.exists():
        print(f"error: no Chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    from routescope.analysis.core.catalog import bundled_checkpoints

    bundled = bundled_checkpoints()
    model = args.model or next((n for n in bundled if n.startswith("skipnet")), next(iter(bundled)))
    if model not in bundled:
        print(f"error: {model!r} is not a bundled model", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.deadline
    folder = Path(tempfile.mkdtemp(prefix="routescope-load-"))
    images = make_images(folder, args.uploads)
    expected = expected_labels(model, images)
    try:
        with running_app(folder / "server.log", timeout_s=max(1.0, deadline - time.monotonic())) as app:
            server = app.process
            sampler = Sampler(server.pid)
            sampler.start()
            start_rss = rss_bytes(server.pid)
            warm = {}
            results: list[dict] = []
            t0 = time.perf_counter()
            asyncio.run(
                drive(
                    app.url,
                    model,
                    images,
                    args.sessions,
                    deadline,
                    args.wait,
                    results,
                    asyncio.Event(),
                    lambda: warm.setdefault("rss", rss_bytes(server.pid)),
                )
            )
            wall = time.perf_counter() - t0
            time.sleep(5)  # closed sessions let go of their state
            end_rss = rss_bytes(server.pid)
            sampler.stop.set()
            alive = server.poll() is None
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    ok = [r for r in results if "seconds" in r]
    errors = [r for r in results if "error" in r]
    wrong = [r for r in ok if r["label"] != expected[r["image"]]]
    exceptions = sum(r.get("exceptions", 0) for r in ok)
    times = [r["seconds"] for r in ok]
    warm_rss = warm.get("rss", start_rss)
    bound = 1.25 * warm_rss + 64 * 2**20
    mib = 2**20
    print(f"python -m tools.loadtest --sessions {args.sessions} --uploads {args.uploads} (model {model})")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(
        f"uploads: {len(results)} of {args.uploads} done in {wall:.0f} s; {len(ok)} ready, {len(errors)} failed steps, "
        f"{len(wrong)} wrong predictions, {exceptions} exceptions shown; server up at the end: {alive}"
    )
    if times:
        print(
            f"upload to ready: p50 {statistics.median(times):.2f} s, p95 {percentile(times, 0.95):.2f} s, "
            f"max {max(times):.2f} s"
        )
    print(
        f"server RSS: at start {start_rss / mib:.0f} MiB, "
        f"after the first {args.sessions} uploads {warm_rss / mib:.0f} MiB, "
        f"peak {sampler.peak / mib:.0f} MiB, at the end {end_rss / mib:.0f} MiB (bound {bound / mib:.0f} MiB)"
    )
    for r in (errors + wrong)[:10]:
        what = r.get("error") or f"shown {r['label']!r}, expected {expected[r['image']]!r}"
        print(f"  {r['image']} (session {r['session']}): {what}")
    passed = len(ok) == args.uploads and not wrong and not exceptions and alive and end_rss <= bound
    print(f"verdict: {'PASS' if passed else 'FAIL'}")
    shutil.rmtree(folder, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
