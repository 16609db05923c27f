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
from packager.scoreboard.sweeps import SweepPoint, record_point, record_sweep

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
SWEEP = "0123456789abcdef"


def chromium_path() -> str:
    for candidate in ("/usr/lib/chromium/chromium", "/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("chromium not installed (apt-get install chromium)")


def _serve(url: str, results: int | None = None) -> Iterator[str]:
    """``board serve`` on a free port until the caller is done; ``results``: the count /healthz must report."""
    port = free_port()
    proc = subprocess.Popen([*BASE, "board", "serve", "--board", url, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                assert results is None or json.load(r)["results"] == results
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
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("browser")
    kp = generate_keypair(d / "keys", "author")
    trust = TrustStore.load([kp.public_path])
    url = f"sqlite:///{d / 'board.db'}"
    with Board(url) as board:
        published = [publish(synthetic.make_bundle(d / f"b{i}", spec, kp.private_path), board, trust)
                     for i, spec in enumerate(synthetic.spread(RESULTS, seed=11))]
        # a sweep of every result (its points of both measurement classes, native and emulated)
        record_sweep(board, SWEEP, "demo-ort", "run: {threads: [1, 2]}\n")
        for i, p in enumerate(published):
            record_point(board, SWEEP, SweepPoint(f"k{i}", {"run.threads": i}, "done", p.bundle_digest, p.row.image_digest, None))
    yield from _serve(url, RESULTS)


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
    """(all drawn points, frontier points, frontier colours) from what plotly drew and the figure it drew it from."""
    page.wait_for_function("window.boardPlotsDrawn !== undefined", timeout=30_000)
    total = page.locator(f"{PLOT} .scatterlayer .point").count()  # SVG: fewer points than the WebGL threshold
    traces = page.evaluate(f"() => document.querySelector('{PLOT}').data.map(t => [t.name, t.x.length, t.marker.color])")
    front = [t for t in traces if t[0].startswith("Pareto frontier")]
    assert sum(n for _, n, _ in traces) == total
    return total, sum(n for _, n, _ in front), sorted({c for _, _, c in front})


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

    # The plot: one point per result, each measurement class's frontier in its own trace and colour.
    total, front, colours = plot_state(page)
    assert total == len(with_latency) == RESULTS
    expected = api(server, "/api/pareto?objectives=accuracy:max,latency:min")
    assert front == len(expected["frontier"]) >= 1
    assert len(colours) == len(expected["frontiers"]) >= 2  # native and emulated: never one frontier
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


def test_the_table_loads_before_plotly_and_each_tab_draws_its_plot_once(server: str, browser) -> None:  # type: ignore[no-untyped-def]
    """plotly.js starts after the load event; the open tab's plot is drawn, the others on their first opening."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/", wait_until="load")
    assert page.locator("#results tbody tr").count() == RESULTS  # the table needs no script
    page.wait_for_function("window.boardPlotsDrawn !== undefined", timeout=30_000)
    load_ms = page.evaluate("() => performance.getEntriesByType('navigation')[0].loadEventStart")
    assert page.evaluate("() => window.boardPlotsDrawn") > load_ms  # drawn after the load event, not before it
    tabs = page.locator(".plot-tab").evaluate_all("ts => ts.map(t => [t.dataset.slug, t.getAttribute('aria-selected')])")
    assert tabs == [["accuracy-latency", "true"], ["throughput-price", "false"], ["accuracy-power", "false"],
                    ["accuracy-multistream", "false"]]
    assert page.locator("#plot-accuracy-latency").get_attribute("data-drawn") == "true"
    assert page.locator("#plot-throughput-price").get_attribute("data-drawn") is None
    assert page.locator("#panel-throughput-price").is_hidden()
    page.click("#tab-throughput-price")
    page.wait_for_selector("#plot-throughput-price[data-drawn='true']", timeout=30_000)
    assert page.locator("#panel-throughput-price").is_visible() and page.locator("#panel-accuracy-latency").is_hidden()
    drawn = page.evaluate("() => document.querySelector('#plot-throughput-price').data.reduce((n, t) => n + t.x.length, 0)")
    expected = [r for r in api(server, "/api/results")["results"] if r["price_usd"] is not None and r["throughput_ips"] is not None]
    assert drawn == len(expected) > 0
    page.click("#tab-accuracy-latency")  # drawn once: reopening shows the same plot
    assert page.locator("#panel-accuracy-latency").is_visible()
    assert page.evaluate("() => performance.getEntriesByName('board-drawn-accuracy-latency').length") == 1
    assert errors == []
    page.close()


def test_a_sweep_page_draws_one_plot_per_class_with_what_produced_its_figures(server: str, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """From the board's table to the sweep's page; its plots each hold one measurement class, the class's points and
    frontier, and axis titles that say the scenario, data set, mode and native or emulated."""
    sweep = api(server, f"/api/sweeps/{SWEEP}")
    by_class: dict[str, list[dict]] = {}
    for p in sweep["points"]:
        by_class.setdefault(p["result"]["measurement"], []).append(p["result"])
    assert len(by_class) >= 2
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(server + "/", wait_until="load")
    page.wait_for_function("window.boardPlotsDrawn !== undefined", timeout=30_000)  # else leaving aborts plotly's load
    page.locator("#results tbody tr a.sweep").first.click()
    page.wait_for_url(f"**/sweeps/{SWEEP}")
    page.wait_for_function("window.boardPlotsDrawn !== undefined", timeout=30_000)
    tabs = page.locator(".plot-tab").evaluate_all("ts => ts.map(t => t.dataset.slug)")
    assert tabs == [f"{kind}-{c}" for c in range(len(by_class)) for kind in ("accuracy-latency", "accuracy-throughput")]
    for c, cls in enumerate(sorted(by_class)):
        for kind, column in (("accuracy-latency", "latency_p90_s"), ("accuracy-throughput", "throughput_ips")):
            slug = f"{kind}-{c}"
            page.click(f"#tab-{slug}")
            page.wait_for_selector(f"#plot-{slug}[data-drawn='true']", timeout=30_000)
            sel = f"#plot-{slug}"
            drawn = page.evaluate(f"() => document.querySelector('{sel}').data.reduce((n, t) => n + t.x.length, 0)")
            assert drawn == len([r for r in by_class[cls] if r[column] is not None]) > 0
            assert page.locator(f"{sel} .scatterlayer .point").count() == drawn  # SVG: what plotly really drew
            names = page.evaluate(f"() => document.querySelector('{sel}').data.map(t => t.name)")
            assert names[-1] == "Pareto frontier" and len(names) <= 2  # one class: its points and its frontier
            xtitle = page.locator(f"{sel} .g-xtitle").text_content() or ""
            ytitle = page.locator(f"{sel} .g-ytitle").text_content() or ""
            assert ("SingleStream" if kind == "accuracy-latency" else "Offline") in xtitle
            mode, execution, _ = cls.split("/")
            assert f"{mode} mode, {execution}" in xtitle  # the data set, on short lines that plotly draws apart:
            assert synthetic.SYNTHETIC_NOTE.replace(" ", "") in ytitle.replace(" ", "")
            page.screenshot(path=str(tmp_path / f"sweep-{slug}.png"), full_page=True)
    assert errors == []
    print(f"\nscreenshots in {tmp_path}")
    page.close()


BIG = 3000  # past plots.WEBGL_THRESHOLD


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A board of 3,000 results: 6 published bundles and copies of their rows with fresh digests and spread numbers
    (inserted directly, as benchmarks/scoreboard.py does: this measures the page, not publishing)."""
    import random
    from dataclasses import replace

    d = tmp_path_factory.mktemp("browser-big")
    kp = generate_keypair(d / "keys", "author")
    trust = TrustStore.load([kp.public_path])
    url = f"sqlite:///{d / 'board.db'}"
    rng = random.Random(7)
    with Board(url) as board:
        rows = [publish(synthetic.make_bundle(d / f"b{i}", s, kp.private_path), board, trust).row for i, s in enumerate(synthetic.spread(6, seed=5))]
        for i in range(BIG - len(rows)):
            board.insert(replace(rows[i % len(rows)], bundle_digest=f"sha256:{rng.getrandbits(256):064x}", top1=rng.random(),
                                 latency_p90_s=rng.uniform(0.001, 0.5)), {"note": "copy of a verified row, for the page test"})
    yield from _serve(url)


def test_a_full_board_draws_with_webgl_and_pages_the_table(big_server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(big_server + "/", wait_until="load")
    page.wait_for_function("window.boardPlotsDrawn !== undefined", timeout=60_000)
    assert page.locator(".plot[data-slug='accuracy-latency']").get_attribute("data-webgl") == "true"
    traces = page.evaluate(f"() => document.querySelector('{PLOT}').data.map(t => [t.type, t.x.length])")
    assert sum(n for _, n in traces) == BIG and {"scattergl"} <= {t for t, _ in traces}
    assert page.locator(f"{PLOT} canvas").count() >= 1  # drawn by WebGL, not one SVG node per point
    assert page.locator("#results tbody tr").count() == 100
    assert f"rows 1–100 of {BIG}" in page.locator("#paging").inner_text()
    first = page.locator("#results tbody tr").first.get_attribute("data-digest")
    page.click("#page-next")
    page.wait_for_load_state("load")
    assert f"rows 101–200 of {BIG}" in page.locator("#paging").inner_text()
    assert page.locator("#results tbody tr").first.get_attribute("data-digest") != first
    assert errors == []
    page.close()
