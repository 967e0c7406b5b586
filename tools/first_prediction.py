"""How long a new user waits for the first prediction: a freshly started server, a fresh headless Chromium (empty
cache), ``/`` opened once.

    python -m tools.first_prediction            # 3 fresh starts
    python -m tools.first_prediction --starts 1

Prints, per start, the seconds from opening the page to the Inspect heading, to the prediction (its metric), and
to the prediction's chart drawn (plotly). Loopback only, the server stopped on the way out. Not a timed test: the
numbers describe this machine (the first start after ``make install`` is the one a new user sees).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tools.serve import running_app

TIMEOUT_MS = 300_000


def one_start(browser_path: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto("about:blank")  # the browser is up before the clock starts
        with running_app(Path(folder) / "server.log") as app:
            started = time.perf_counter()
            page.goto(f"{app.url}/")
            page.get_by_role("heading", name="Inspect").wait_for(timeout=TIMEOUT_MS)
            heading = time.perf_counter() - started
            page.get_by_test_id("stMetricValue").first.wait_for(timeout=TIMEOUT_MS)
            prediction = time.perf_counter() - started
            page.locator(".js-plotly-plot").filter(has_text="Top classes").first.wait_for(timeout=TIMEOUT_MS)
            chart = time.perf_counter() - started
        browser.close()
    return {"heading_s": heading, "prediction_s": prediction, "chart_s": chart}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.first_prediction", description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=3, help="fresh server and browser starts (at most 10)")
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or "/usr/bin/chromium"
    for i in range(min(max(args.starts, 1), 10)):
        times = one_start(browser)
        print(
            f"start {i + 1}: heading {times['heading_s']:.1f} s, prediction {times['prediction_s']:.1f} s, "
            f"its chart {times['chart_s']:.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
