"""The board in a real browser: Debian's chromium driven by Playwright against ``request-pack board serve``.

No ``playwright install``: Playwright's own driver talks to the distribution's
chromium binary. The page must work offline (plotly.js is inline).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import synthetic_results as synthetic
from runner_helpers import free_port

from packager.bundle.keys import TrustStore, generate_keypair
from packager.scoreboard.publish import publish
from packager.scoreboard.store import Board

pytestmark = pytest.mark.browser

_SCRIPT = Path(sys.executable).parent / "request-pack"
BASE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "packager.cli"]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESULTS = 18


def chromium_path() -> str:
    for candidate in ("/usr/lib/chromium/chromium", "/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("chromium not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("browser")
    kp = generate_keypair(d / "keys", "author")
    trust = TrustStore.load([kp.public_path])
    url = f"sqlite:///{d / 'board.db'}"
    with Board(url) as board:
        for i, spec in enumerate(synthetic.spread(RESULTS, seed=11)):
            publish(synthetic.make_bundle(d / f"b{i}", spec, kp.private_path), board, trust)
    port = free_port()
    proc = subprocess.Popen([*BASE, "board", "serve", "--board", url, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                assert json.load(r)["results"] == RESULTS
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"board serve did not come up: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.2)
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def api(base: str, path: str) -> dict:
    with urllib.request.urlopen(f"{base}{path}", timeout=10) as r:
        return json.load(r)


PLOT = "#plot-accuracy-latency"


def plot_state(page) -> tuple[int, int, list[str]]:  # type: ignore[no-untyped-def]
    """(all drawn points, frontier points, fill colours of frontier points) from the SVG plotly drew."""
    page.wait_for_selector(f"{PLOT} .scatterlayer .point", timeout=30_000)
    traces = page.locator(f"{PLOT} .scatterlayer .trace")
    assert traces.count() == 2  # results, Pareto frontier
    total = page.locator(f"{PLOT} .scatterlayer .point").count()
    front = traces.nth(1).locator(".point")
    colours = [front.nth(i).evaluate("el => getComputedStyle(el).fill") for i in range(front.count())]
    return total, front.count(), colours


def test_page_plots_one_point_per_result_marks_the_frontier_and_filters(server: str, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    everything = api(server, "/api/results")
    with_latency = [r for r in everything["results"] if r["latency_p90_s"] is not None]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(server + "/", wait_until="load")

    # The table: one row per result, the frontier rows starred.
    assert page.locator("#results tbody tr").count() == RESULTS
    assert page.locator("#results tbody tr.frontier").count() == len(everything["frontier"])

    # The plot: one point per result, frontier points in their own red trace.
    total, front, colours = plot_state(page)
    assert total == len(with_latency) == RESULTS
    expected_front = api(server, "/api/pareto?objectives=accuracy:max,latency:min")["frontier"]
    assert front == len(expected_front) >= 1
    assert set(colours) == {"rgb(214, 39, 40)"}
    page.screenshot(path=str(tmp_path / "board.png"), full_page=True)

    # A filter changes both the table and the plot.
    platform = "linux/arm/v7"
    expected = [r for r in everything["results"] if r["platform"] == platform]
    assert 0 < len(expected) < RESULTS
    page.select_option("#filter-platform", platform)
    page.wait_for_url("**platform=linux%2Farm%2Fv7**")
    page.wait_for_load_state("load")
    assert page.locator("#results tbody tr").count() == len(expected)
    total, front, _ = plot_state(page)
    assert total == len(expected)
    filtered_front = api(server, f"/api/pareto?objectives=accuracy:max,latency:min&platform={platform}")["frontier"]
    assert front == len(filtered_front)
    page.screenshot(path=str(tmp_path / "board-filtered.png"), full_page=True)

    # Sorting by a header link reorders the table.
    page.click("#results th a[data-sort='latency_p90_s']")
    page.wait_for_load_state("load")
    page.click("#results th a[data-sort='latency_p90_s']")  # second click: ascending
    page.wait_for_load_state("load")
    digests = page.locator("#results tbody tr").evaluate_all("rows => rows.map(r => r.dataset.digest)")
    asc = api(server, f"/api/results?platform={platform}&sort=latency_p90_s&order=asc")["results"]
    assert digests == [r["bundle_digest"] for r in asc]

    # A result page from the table link.
    page.locator("#results tbody tr a").first.click()
    page.wait_for_load_state("load")
    assert page.locator("#image-digest").inner_text().startswith("sha256:")
    assert len(page.locator("#key-id").inner_text()) == 64
    assert "synthetic-builder" in page.locator("#provenance").inner_text()
    page.screenshot(path=str(tmp_path / "result.png"), full_page=True)
    assert errors == []
    print(f"\nscreenshots in {tmp_path}")
    page.close()
