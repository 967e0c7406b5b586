"""Real browser: ``streamlit run`` in a subprocess, headless Chromium picks a bundled SkipNet, uploads an image
and must see the prediction and the decision charts (the upload-to-ready time is measured and reported), then
flips one gate in the Intervene panel and must see the intervened prediction card and MACs update.

Skipped when Chromium or playwright is missing, unless ``ROUTESCOPE_REQUIRE_BROWSER=1`` (CI), where that fails.
The default run (``make test``, so CI) drives the browser through every page (the README's screenshots) and the root
URL; the upload, the Inspect-to-Compare and the Compare-on-a-zip sessions are marked ``heavy`` (``make test-all``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from routescope.analysis.core.catalog import featured, model_labels
from tools.serve import ServerError, running_app
from routescope.models.data import SAMPLE_IMAGES as SAMPLES
from routescope.models.data import FASHION_MNIST

from helpers import REPO

pytestmark = pytest.mark.browser

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")  # where .ci/run finds or installs it
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
UPLOAD = SAMPLES / "photo-sneaker.jpg"
WAIT_S = 600  # for server start and each browser step: generous, a loaded 2-core machine is slow
READY_CPU_LIMIT_S = 10.0  # loose bound on the server's CPU seconds for one upload (the wall time is reported)


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright)"
    return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux /proc): immune to how busy the machine is."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free loopback port with the bundled models (``tools.serve``): (url, pid, log)."""
    reason = _missing()
    if reason:
        if os.environ.get("ROUTESCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ROUTESCOPE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    try:
        with running_app(tmp_path_factory.mktemp("streamlit") / "server.log", WAIT_S) as app:
            yield app.url, app.process.pid, app.log
    except ServerError as e:
        pytest.fail(str(e))


@pytest.fixture
def page():
    """A headless Chromium page (the system browser) with the generous timeouts a loaded 2-core machine needs."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_S * 1000)
            expect.set_options(timeout=WAIT_S * 1000)
            yield page
        finally:
            browser.close()


def _skipnet() -> str:
    """The flagship SkipNet (featured, so listed first and selected by default)."""
    flagship = featured().get("skipnet", {}).get("flagship")
    if flagship is None:
        pytest.skip("no featured SkipNet checkpoint in models/pretrained")
    return flagship


@pytest.mark.heavy
def test_upload_shows_prediction_and_decision_charts(server, page, tmp_path, capsys):
    from playwright.sync_api import expect

    url, pid, log = server
    model = _skipnet()
    page.goto(url)
    expect(page.get_by_role("heading", name="Inspect", exact=True)).to_be_visible()

    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_test_id("stSelectbox").click()
    label = model_labels()[model]  # the picker lists each model by what it is (its name is in the help)
    page.keyboard.type(label)  # the list is virtualized: filter it so the option is rendered
    page.get_by_role("option", name=label, exact=True).click()
    skip_charts = page.locator(".js-plotly-plot").filter(has_text="Blocks executed")
    expect(skip_charts).to_have_count(1)  # the default sample, through the SkipNet
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)

    cpu_before, start = _cpu_seconds(pid), time.perf_counter()
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(UPLOAD)
    expect(page.get_by_text(f"{UPLOAD.name}: the exact input the model saw")).to_be_visible()
    expect(skip_charts).to_have_count(2)
    expect(page.locator(".js-plotly-plot").filter(has_text="Top classes")).to_have_count(2)
    page.wait_for_function(  # every chart's traces drawn (bars, heatmap), not just its container mounted
        "() => [...document.querySelectorAll('.js-plotly-plot')]"
        ".every(p => p.querySelector('.main-svg .trace, .main-svg .hm'))"
    )
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)  # and the script run is over
    ready_s, server_cpu_s = time.perf_counter() - start, _cpu_seconds(pid) - cpu_before

    predictions = page.get_by_test_id("stMetric").filter(has_text="Prediction").get_by_test_id("stMetricValue")
    expect(predictions).to_have_count(2)
    assert set(predictions.all_inner_texts()) <= set(FASHION_MNIST.classes)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stAlert")).to_have_count(0)
    page.screenshot(path=str(tmp_path / "inspect.png"), full_page=True)

    # question the routing: open the first image's Intervene panel and flip its first gate
    page.get_by_text("Intervene: force decisions, move knobs").first.click()
    intervened = page.get_by_test_id("stMetric").filter(has_text="MACs (intervened)").get_by_test_id("stMetricValue")
    original = page.get_by_test_id("stMetric").filter(has_text="MACs (original)").get_by_test_id("stMetricValue")
    expect(intervened).to_have_count(1)
    expect(page.get_by_test_id("stMetric").filter(has_text="Prediction (intervened)")).to_have_count(1)
    before = intervened.inner_text()
    assert before == original.inner_text(), "nothing forced yet"
    gate = page.get_by_test_id("stCheckbox").filter(has_text="run layer").first
    gate.click()
    expect(intervened).not_to_have_text(before)
    expect(page.get_by_text("Decisions that differ")).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    card = page.get_by_test_id("stMetric").filter(has_text="Prediction (intervened)").get_by_test_id("stMetricValue")
    assert card.inner_text() in FASHION_MNIST.classes
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"[?&]override=layer"))  # the view is in the URL, to share
    page.screenshot(path=str(tmp_path / "intervene.png"), full_page=True)

    report = {
        "upload_to_ready_s": round(ready_s, 3),
        "server_cpu_s": round(server_cpu_s, 3),
        "model": model,
        "image": UPLOAD.name,
        "images_on_page": 2,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "nice": os.nice(0),
    }
    (tmp_path / "browser_timing.json").write_text(json.dumps(report, indent=2))
    with capsys.disabled():
        print(f"\nbrowser: upload to ready {ready_s:.2f} s (server CPU {server_cpu_s:.2f} s), {json.dumps(report)}")
    assert server_cpu_s < READY_CPU_LIMIT_S, f"the server worked {server_cpu_s:.1f} s for one upload; log: {log}"


SCREENSHOTS = REPO / "docs" / "screenshots"
PAGES = {
    "inspect": "skipnet_resnet20_fmnist_a0.75_fta6kd",
    "compare": "early_exit_resnet20_fmnist",
    "structure": "dgconv_resnet20_fmnist_b0.6_e8",
    "figures": None,
    "results": None,
    "training": None,
}


def _no_page_not_found(page) -> None:
    """Streamlit answers an unknown URL pathname with a "Page not found" dialog (and runs the default page)."""
    from playwright.sync_api import expect

    expect(page.get_by_text("Page not found")).to_have_count(0)
    expect(page.get_by_role("dialog")).to_have_count(0)


def test_every_page_renders_and_is_photographed(server, page, tmp_path):
    """Each page in a real browser at its own URL (``/inspect`` too, not only ``/``): no "Page not found" dialog, no
    exception, the model a link names is the one the page says it shows; the screenshots are the README's
    (``ROUTESCOPE_UPDATE_SCREENSHOTS=1`` writes them to docs/screenshots)."""
    from playwright.sync_api import expect

    url, _, _ = server
    out = SCREENSHOTS if os.environ.get("ROUTESCOPE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    for name, model in PAGES.items():
        page.goto(f"{url}/{name}" + (f"?model={model}" if model else ""))
        expect(page.get_by_role("heading", name=name.capitalize(), exact=True)).to_be_visible()
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
        page.wait_for_timeout(1500)  # let plotly finish drawing (and a late dialog open)
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)  # a rerun the first run asked for is over
        _no_page_not_found(page)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        assert page.url.split("?")[0].rstrip("/").endswith(f"/{name}"), page.url
        if model:  # the link chose the model: the sidebar select holds it (by its label) and the page names it
            picker = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Bundled model")
            expect(picker).to_have_value(model_labels()[model], timeout=120_000)
            expect(page.get_by_test_id("stCaptionContainer").filter(has_text=f"Model: {model}")).to_have_count(1)
        page.screenshot(path=str(out / f"{name}.png"))
    assert {p.stem for p in out.glob("*.png")} >= set(PAGES)


def test_the_root_url_opens_inspect_with_its_link(server, page):
    """``/`` (and an old shared link on it) lands on Inspect at ``/inspect``, its query parameters kept."""
    from playwright.sync_api import expect

    url, _, _ = server
    model = PAGES["inspect"]
    page.goto(f"{url}/?model={model}")
    expect(page.get_by_role("heading", name="Inspect", exact=True)).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/inspect\?.*model={re.escape(model)}"))
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text=f"Model: {model}")).to_have_count(1)
    _no_page_not_found(page)


@pytest.mark.heavy
def test_the_chosen_model_follows_to_compare(server, page):
    """Pick a model on Inspect, open Compare from the menu: Compare shows and names the same model."""
    from playwright.sync_api import expect

    url, _, _ = server
    model = featured().get("dsnet", {}).get("flagship")
    if model is None:
        pytest.skip("no featured DS-Net checkpoint in models/pretrained")
    page.goto(f"{url}/inspect")
    expect(page.get_by_role("heading", name="Inspect", exact=True)).to_be_visible()
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_test_id("stSelectbox").click()
    page.keyboard.type(model_labels()[model])
    page.get_by_role("option", name=model_labels()[model], exact=True).click()
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text=f"Model: {model}")).to_have_count(1)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    sidebar.get_by_role("link", name="Compare").click()
    expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible()
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text=f"Model: {model}")).to_have_count(1)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    _no_page_not_found(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)


@pytest.mark.heavy
def test_compare_on_an_uploaded_zip(server, page, tmp_path):
    """Compare with a .zip of an ImageFolder tree (folders named after the classes, made from the sample images):
    the page reports what it read and shows the accuracy over the labelled images."""
    import zipfile

    from playwright.sync_api import expect

    url, _, _ = server
    archive = tmp_path / "my-test-images.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(SAMPLES.glob("*-[12].png")):
            z.write(path, f"mine/{path.stem.rsplit('-', 1)[0]}/{path.name}")  # e.g. mine/ankle-boot/ankle-boot-1.png
        z.writestr("mine/readme.txt", "not an image")
    page.goto(f"{url}/compare")
    expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible()
    page.get_by_test_id("stSelectbox").filter(has_text="Test images").click()
    page.get_by_role("option", name="Upload a .zip of images").click()
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(archive)
    expect(page.get_by_text("20 images in 10 folders, 20 labelled by their folder", exact=False)).to_be_visible()
    expect(page.get_by_test_id("stMetric").filter(has_text="Accuracy")).to_have_count(1)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.screenshot(path=str(tmp_path / "compare-zip.png"), full_page=False)


# a MAC count written out (20193136; the app writes MACs in millions), not a routing pattern of gate bits (00111110)
RAW_MACS = re.compile(r"\b(?![01]+\b)\d{7,}\b")


def _table_text(page) -> str:
    """The text of every table cell on the page: st.dataframe draws on a canvas, its cells are in the accessible
    table beside it (the values the canvas shows, unformatted)."""
    return "\n".join(page.get_by_test_id("stDataFrame").locator("td").all_inner_texts())


@pytest.mark.heavy
def test_no_table_shows_a_raw_mac_count(server, page):
    """Compare and Inspect (its Intervene panel open, one gate flipped, so the differing decisions are a table too) in
    a real browser: no table cell, nor any text on Inspect, holds a MAC count as a raw integer."""
    from playwright.sync_api import expect

    url, _, _ = server
    model = _skipnet()
    page.goto(f"{url}/compare?model={model}")
    expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    expect(page.get_by_test_id("stDataFrame")).to_have_count(2)  # the routing patterns and the per-image table
    page.get_by_test_id("stDataFrame").last.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=stDataFrame] td').length > 20")
    compare = _table_text(page)
    assert compare.strip() and not RAW_MACS.findall(compare), RAW_MACS.findall(compare)[:5]
    expect(page.get_by_text("How to read a pattern.", exact=False)).to_be_visible()

    page.goto(f"{url}/inspect?model={model}")
    expect(page.get_by_role("heading", name="Inspect", exact=True)).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    page.get_by_text("Intervene: force decisions, move knobs").first.click()
    page.get_by_test_id("stCheckbox").filter(has_text="run layer").first.click()
    expect(page.get_by_text("Decisions that differ")).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    expect(page.get_by_test_id("stDataFrame")).to_have_count(1)
    inspect = _table_text(page) + "\n" + page.get_by_test_id("stMain").inner_text()
    assert not RAW_MACS.findall(inspect), RAW_MACS.findall(inspect)[:5]
    expect(page.get_by_test_id("stException")).to_have_count(0)


@pytest.mark.heavy
def test_model_against_model_views(server, page):
    """Inspect's two models side by side (the flagship and its control, decisions aligned by layer) and the compact
    table of every bundled model (one row each, a card only when asked) in a real browser."""
    from playwright.sync_api import expect

    url, _, _ = server
    flagship = _skipnet()
    control = featured()["skipnet"]["controls"][0]
    page.goto(f"{url}/inspect?model={flagship}")
    expect(page.get_by_role("heading", name="Inspect", exact=True)).to_be_visible()
    page.get_by_text("Side by side", exact=True).click()
    expect(page.get_by_text("Decisions and cost, layer by layer")).to_be_visible()
    expect(page.get_by_text(control, exact=True).first).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.get_by_text("Across all bundled models", exact=True).click()
    expect(page.get_by_text("Open the card of")).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    assert height < 3000, f"the all-models view is {height} px tall: a table, not a card per model"
    expect(page.get_by_test_id("stException")).to_have_count(0)


@pytest.mark.heavy
def test_a_compare_gallery_image_opens_in_inspect(server, page):
    """Compare's second model on the same test set draws its bubbles and galleries; an image's link opens that test
    image in Inspect, the model kept."""
    from playwright.sync_api import expect

    url, _, _ = server
    flagship = _skipnet()
    page.goto(f"{url}/compare?model={flagship}")
    expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible()
    page.get_by_text("Trace a second model on the same images").click()
    expect(page.locator(".js-plotly-plot").filter(has_text="under both models")).to_have_count(1)
    expect(page.get_by_text("Predicted differently")).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    link = page.get_by_role("link", name=re.compile(r"^#\d+$")).first
    index = re.search(r"[?&]index=(\d+)", link.get_attribute("href")).group(1)
    link.click()
    expect(page.get_by_role("heading", name="Inspect", exact=True)).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/inspect\?.*index={index}"))
    expect(page.get_by_text(re.compile(rf"#{index} \(.*\): the exact input the model saw"))).to_be_visible()
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text=f"Model: {flagship}")).to_have_count(1)
    expect(page.get_by_test_id("stException")).to_have_count(0)


@pytest.mark.heavy
def test_the_knob_sweep_stops_after_the_current_value(page, tmp_path, monkeypatch):
    """The knob sweep's stop button in a real browser: it ends the sweep after the value being traced and the page
    shows the values done (its own server, with an empty table store, so every value is really traced)."""
    from playwright.sync_api import expect

    if _missing():
        pytest.skip(_missing())
    monkeypatch.setenv("ROUTESCOPE_CACHE", str(tmp_path / "cache"))
    with running_app(tmp_path / "server.log", WAIT_S) as app:
        page.goto(f"{app.url}/compare?model={_skipnet()}")
        expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible()
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
        page.get_by_text(re.compile(r"^Sweep threshold over up to \d+ values")).click()
        expect(page.get_by_text(re.compile(r"^1 of up to \d+ values done"))).to_be_visible()
        page.get_by_role("button", name="Stop after the current value").click()
        stopped = page.get_by_text(re.compile(r"^Stopped after \d+ of up to \d+ values"))
        expect(stopped).to_be_visible()
        done = int(re.search(r"Stopped after (\d+)", stopped.inner_text()).group(1))
        assert 1 <= done < 11, stopped.inner_text()
        expect(page.get_by_role("button", name="Stop after the current value")).to_have_count(0)
        expect(page.get_by_test_id("stException")).to_have_count(0)
