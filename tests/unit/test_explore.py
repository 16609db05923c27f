"""explore's space file, journal and keys, and the board's sweep group (no engine: synthetic signed results)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import synthetic_results as synthetic
from _bundle_fixture import SAMPLE_LABELS

from packager.bundle.keys import TrustStore, generate_keypair
from packager.errors import BadInput
from packager.explore import (
    JOURNAL,
    FIGURES,
    SUMMARY_COLUMNS,
    Options,
    Outcome,
    Point,
    Result,
    append_journal,
    derive_variant,
    explore,
    parse_space,
    read_journal,
    same_as_parent,
    stage_figures,
    summary,
    variant_name,
)
from packager.runconfig import RunConfig
from packager.scoreboard.publish import publish
from packager.scoreboard.store import Board
from packager.scoreboard.sweeps import (
    SweepPoint,
    list_sweeps,
    load_sweep,
    record_point,
    record_sweep,
)

REPO = Path(__file__).resolve().parents[2]
ORT = REPO / "tests" / "data" / "manifest-valid"


def space(text: str, data: object):
    return parse_space(text, data, "space.yaml")


def test_cross_product_in_a_stable_order() -> None:
    s = space("x", {"run": {"threads": [1, 2], "batch": [1, 32]}})
    assert s.stage == "functional"
    assert [p.run for p in s.points] == [RunConfig(threads=1, batch=1), RunConfig(threads=1, batch=32),
                                         RunConfig(threads=2, batch=1), RunConfig(threads=2, batch=32)]
    assert s.points[3].label() == "run.threads=2 run.batch=32"


def test_a_listed_subset_and_scalars() -> None:
    s = space("x", {"stage": "all", "points": [{"threads": 1}, {"run.threads": 2, "opt_level": 1}]})
    assert s.stage == "all" and [p.run for p in s.points] == [RunConfig(threads=1), RunConfig(threads=2, opt_level=1)]
    assert space("x", {"run": {"threads": 2}}).points[0].run == RunConfig(threads=2)
    assert space("x", {"build": {"precision": ["fp32", "int8"]}}).points[1].build == {"precision": "int8"}


@pytest.mark.parametrize("data, message", [
    ({"runs": {}}, "unknown key 'runs'"),
    ({"points": [{"threads": 1}], "run": {"threads": [2]}}, "not both"),
    ({"points": [{"threads": 1}, {"run.threads": 1}]}, "listed twice"),
    ({"run": {"thread": [1]}}, "did you mean 'threads'"),
    ({"run": {"threads": []}}, "has no values"),
    ({"build": {"weights": ["x"]}}, "unknown build-time knob 'weights'"),
    ({"stage": "fast"}, "stage 'fast'"),
    ({"points": []}, "non-empty list"),
    ({"run": {"threads": list(range(1, 100)), "batch": list(range(1, 100))}}, "at most 4096"),
])
def test_bad_spaces_name_the_file_and_the_field(data: object, message: str) -> None:
    with pytest.raises(BadInput) as info:
        space("x", data)
    assert message in str(info.value) and "space.yaml" in str(info.value)


def test_what_cannot_run_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as info:
        explore(ORT, space("x", {"run": {"target": ["llvm"]}}),
                Options(dataset=tmp_path, out=tmp_path / "sweep", board=f"sqlite:///{tmp_path}/b.db"))
    assert "point 1 (run.target=llvm): knob 'target' does not apply to framework 'onnxruntime'" in str(info.value)
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "b.db").exists()


def test_variant_names() -> None:
    assert variant_name("efficientnet-lite0", {"precision": "int8", "model": "efficientnet-lite1"}) == \
        "efficientnet-lite0-efficientnet-lite1-int8"
    assert variant_name("lite0", {"framework": "TVM 0.27"}) == "lite0-tvm-0.27"
    long = variant_name("a" * 60, {"framework": "tvm-0.27"})
    assert len(long) == 63 and long != variant_name("a" * 60, {"framework": "tvm-0.28"})


def test_a_variant_that_does_not_derive_fails_its_points_once(tmp_path: Path) -> None:
    """Build-time knobs go through `derive`; a derivation that fails is each of its points' failure, recorded once."""
    parent = next(a for a in (REPO / "artifacts" / "efficientnet-lite0", REPO / "artifacts" / "efficientnet-lite0-ort")
                  if (a / "request.lock").is_file())
    art = Path(shutil.copytree(parent, tmp_path / "artifacts" / parent.name))
    sample = SAMPLE_LABELS.parent
    s = space("x", {"build": {"framework": ["no-such-framework"]}, "run": {"threads": [1, 2]}})
    opts = Options(dataset=sample, out=tmp_path / "sweep", board=f"sqlite:///{tmp_path}/b.db",
                   key=generate_keypair(tmp_path / "keys", "evaluator").private_path)
    first = explore(art, s, opts)
    assert [o.status for o in first.outcomes] == ["failed", "failed"]
    assert "no-such-framework" in (first.outcomes[0].error or "")
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == [parent.name]  # nothing half-derived left
    again = explore(art, s, opts)  # not retried: the journal has both
    assert [o.status for o in again.outcomes] == ["failed", "failed"]
    assert len((tmp_path / "sweep" / JOURNAL).read_text().splitlines()) == 2
    assert again.sweep is not None and again.sweep.summary.failed == 2


def test_journal_keeps_whole_lines_and_the_last_word(tmp_path: Path) -> None:
    p = Point(0, RunConfig(threads=1))
    path = tmp_path / JOURNAL
    path.write_text(Outcome(p, "k1", "failed", None, error="boom").journal_line()
                    + Outcome(p, "k1", "done", "sha256:" + "0" * 64, top1=0.8).journal_line()
                    + '{"key": "k2", "status": "do')  # torn by kill -9 mid-write
    got = read_journal(path)
    assert list(got) == ["k1"] and got["k1"]["status"] == "done" and got["k1"]["knobs"] == {"run.threads": 1}
    append_journal(path, Outcome(p, "k3", "done", None).journal_line())  # the line after a torn tail is not lost with it
    assert list(read_journal(path)) == ["k1", "k3"]


def test_the_summary_says_what_produced_each_figure(tmp_path: Path) -> None:
    from packager.results import METRICS_NAME, Measurement, Metrics

    out = synthetic.write_result_dir(tmp_path / "stage", synthetic.Spec(samples=5, top1_hits=4, latency_s=0.010))
    m = Metrics.model_validate_json((out / METRICS_NAME).read_text())
    m = m.model_copy(update={"measurement": Measurement(mode="quick", execution="native", driver="loadgen"),
                             "throughput": [m.throughput[0].model_copy(update={"batch_size": 1, "images_per_s": 90.0}),
                                            m.throughput[0].model_copy(update={"batch_size": 32, "images_per_s": 210.0})]})
    (out / METRICS_NAME).write_text(m.model_dump_json())
    figures = stage_figures(out)
    assert figures == {"top1": 0.8, "samples": 5, "dataset": synthetic.SYNTHETIC_NOTE, "p90_ms": pytest.approx(11.0),
                       "images_per_s": 210.0, "offline_batch": 32, "measurement": "quick/native/loadgen"}
    assert stage_figures(tmp_path / "nothing") == {}
    done = Outcome(Point(0, RunConfig(threads=2, batch=32)), "k1", "done", None, **figures, wall_s=1.25)
    failed = Outcome(Point(1, RunConfig(threads=1)), "k2", "failed", None, error="boom")
    # what a resumed sweep reads back from its journal is what it wrote
    journal = tmp_path / JOURNAL
    append_journal(journal, done.journal_line())
    assert {f: read_journal(journal)["k1"][f] for f in FIGURES} == figures
    result = Result("s1", "demo-ort", tmp_path, (done, failed), frozenset(), 0, None, 3.0)
    columns, rows, notes = summary(result, "functional", tmp_path / "sample")
    assert columns == [c for c in SUMMARY_COLUMNS if c != "class"]  # one class: the notes name it
    assert columns[4:6] == ["SingleStream p90 ms", "Offline img/s (batch)"]
    assert rows == [["1", "run.threads=2 run.batch=32", "done", "0.8000 (5)", "11.00", "210.0 (32)", "1.2", ""],
                    ["2", "run.threads=1", "failed", "-", "-", "-", "0.0", ""]]
    assert notes[0] == f"functional stage on {tmp_path / 'sample'}: {synthetic.SYNTHETIC_NOTE}"
    assert "the batch knob does not change" in notes[1]
    assert notes[2].startswith("class (mode/execution/driver) of every point: quick/native/loadgen;")
    emulated = replace(done, key="k3", point=Point(2, RunConfig(threads=4)), measurement="quick/emulated/loadgen")
    columns, rows, notes = summary(replace(result, outcomes=(done, emulated)), "functional", tmp_path / "sample")
    assert columns == list(SUMMARY_COLUMNS) and [r[3] for r in rows] == ["quick/native/loadgen", "quick/emulated/loadgen"]
    assert "(quick/emulated/loadgen, quick/native/loadgen)" in notes[2]


def _sweep_board(tmp_path: Path, emulated: bool = False) -> str:
    """A board with sweep s1 of demo-ort: three published points of one image and one failed point (``emulated``:
    and a fourth published point of another measurement class, run under emulation)."""
    pair = generate_keypair(tmp_path / "keys", "evaluator")
    trust = TrustStore.load([pair.public_path])
    specs = {  # one image, three run configs: the third is slower at the same accuracy
        "a": synthetic.Spec(latency_s=0.010, throughput_ips=100.0, run_seed=1),
        "b": synthetic.Spec(latency_s=0.020, throughput_ips=150.0, run_seed=2),
        "c": synthetic.Spec(latency_s=0.030, throughput_ips=90.0, run_seed=3),
    }
    if emulated:
        specs["d"] = synthetic.Spec(platform="linux/arm64", latency_s=0.300, throughput_ips=9.0, run_seed=4)
    with Board(f"sqlite:///{tmp_path / 'board.db'}") as board:
        record_sweep(board, "s1", "demo-ort", "run: {threads: [1, 2, 4]}\n")
        record_sweep(board, "s1", "demo-ort", "run: {threads: [1, 2, 4]}\n")  # a resumed sweep: no second group
        for i, (name, spec) in enumerate(specs.items()):
            published = publish(synthetic.make_bundle(tmp_path / name, spec, pair.private_path), board, trust)
            record_point(board, "s1", SweepPoint(f"k{i}", {"run.threads": 2 ** i}, "done", published.bundle_digest,
                                                 published.row.image_digest, None))
        record_point(board, "s1", SweepPoint("k9", {"run.threads": 8}, "failed", None, None, "stage 'functional': boom"))
        record_point(board, "s1", SweepPoint("k9", {"run.threads": 8}, "failed", None, None, "boom again"))
    return f"sqlite:///{tmp_path / 'board.db'}"


def test_a_sweep_is_a_group_with_a_frontier_per_class(tmp_path: Path) -> None:
    with Board(_sweep_board(tmp_path)) as board:
        sweep = load_sweep(board, "s1")
        assert [s.id for s in list_sweeps(board)] == ["s1"] and list_sweeps(board, artifact="other") == []
        assert load_sweep(board, "nope") is None
    assert sweep is not None and (sweep.summary.done, sweep.summary.failed) == (3, 1)
    on = [p.knobs["run.threads"] for p in sweep.points if sweep.on_frontier(p)]
    assert on == [1, 2]  # 4 is dominated by 1 (slower, less throughput, same accuracy)
    data = sweep.to_json()
    assert data["artifact"] == "demo-ort" and len(data["points"]) == 4
    assert data["points"][3] == data["points"][3] | {"status": "failed", "error": "boom again", "result": None}
    assert len({p["result"]["image_digest"] for p in data["points"][:3]}) == 1
    assert list(data["frontiers"]) == [sweep.points[0].row.measurement]


def test_sweep_pages_and_json(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from packager.scoreboard.web import create_app

    with TestClient(create_app(_sweep_board(tmp_path))) as c:
        assert '<a id="sweeps" href="sweeps">' in c.get("/").text
        listing = c.get("/sweeps")
        assert listing.status_code == 200 and 'href="sweeps/s1"' in listing.text and "demo-ort" in listing.text
        assert "no sweeps of other" in c.get("/sweeps", params={"artifact": "other"}).text
        page = c.get("/sweeps/s1")
        assert page.status_code == 200
        assert "parent artifact <b>demo-ort</b> · 3 done, 1 failed" in page.text
        assert "<th>run.threads</th>" in page.text and page.text.count('class="frontier"') == 2
        assert "boom again" in page.text
        data = c.get("/api/sweeps/s1").json()
        assert [p["knobs"]["run.threads"] for p in data["points"]] == [1, 2, 4, 8]
        assert [p["pareto"] for p in data["points"]] == [True, True, False, False]
        assert c.get("/api/sweeps").json()[0]["id"] == "s1"
        assert c.get("/sweeps/nope").status_code == 404
        assert c.get("/api/sweeps/s1", params={"objectives": "speed:max"}).status_code == 400


def _plot_json(html: str) -> dict:
    import json
    import re

    m = re.search(r'<script type="application/json" id="board-plots">(.*?)</script>', html, re.S)
    assert m, "no plot data in the page"
    return json.loads(m.group(1))


def test_a_sweep_page_plots_each_class_apart_and_the_board_links_its_points(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from packager.scoreboard.web import create_app

    url = _sweep_board(tmp_path, emulated=True)
    with TestClient(create_app(url)) as c:
        page = c.get("/sweeps/s1").text
        assert "../static/plotly-gl2d-" in page and "window.location = '../results/sha256:'" in page
        data = _plot_json(page)
        assert data["classes"] == ["quick/emulated/builtin", "quick/native/builtin"]
        # each of top-1 vs latency and vs throughput once per class, each over its own class's points only
        assert [(p["slug"], p["cls"]) for p in data["plots"]] == [
            ("accuracy-latency-0", 0), ("accuracy-throughput-0", 0), ("accuracy-latency-1", 1), ("accuracy-throughput-1", 1)]
        for p in data["plots"]:
            assert all(c == p["cls"] for c, _ in p["fronts"]) and len(p["fronts"]) == 1
        lat = data["plots"][2]
        assert lat["title"] == "Accuracy vs latency · quick/native/builtin" and lat["subtitle"] == "3 results, 1 on the frontier"
        assert [len(f) for _, f in data["plots"][3]["fronts"]] == [1]  # one top-1: the fastest and the highest rate
        assert "SingleStream" in lat["x"]["title"] and "quick mode, native, built-in loop" in lat["x"]["title"]
        assert lat["y"]["title"].replace("<br>", " ") == f"top-1 (%), max is better on {synthetic.SYNTHETIC_NOTE}"
        assert "Offline" in data["plots"][3]["x"]["title"] and "emulated" in data["plots"][0]["x"]["title"]
        assert f"top-1 over each result's images of {synthetic.SYNTHETIC_NOTE}" in page
        assert c.get("/api/sweeps/s1").json()["dataset"] == synthetic.SYNTHETIC_NOTE
        # the board's table links each point's result to its sweep, and the API says so
        index = c.get("/").text
        assert index.count('<a class="sweep" href="sweeps/s1">s1</a>') == 4
        assert sorted(len(r["sweeps"]) for r in c.get("/api/results").json()["results"]) == [1, 1, 1, 1]
        assert c.get("/results.csv").text.splitlines()[0].endswith(",pareto,badges,sweeps")
        # a sweep records its point after publishing the result: the page must not keep the snapshot without it
        pair = generate_keypair(tmp_path / "keys2", "evaluator")
        with Board(url) as board:
            published = publish(synthetic.make_bundle(tmp_path / "e", synthetic.Spec(run_seed=5), pair.private_path),
                                board, TrustStore.load([pair.public_path]))
            assert c.get("/").text.count('class="sweep"') == 4
            record_point(board, "s1", SweepPoint("k5", {"run.threads": 32}, "done", published.bundle_digest,
                                                 published.row.image_digest, None))
        assert c.get("/").text.count('<a class="sweep" href="sweeps/s1">s1</a>') == 5


def test_a_farm_job_of_a_sweep_point_is_keyed_and_run_with_its_run_config(tmp_path: Path) -> None:
    import dataclasses

    from packager.farm.jobs import plan
    from packager.farm.node import evaluate_argv
    from packager.farm.store import JobSpec
    from packager.platforms import Platform

    lite0 = next(a for a in (REPO / "artifacts" / "efficientnet-lite0", REPO / "artifacts" / "efficientnet-lite0-ort")
                 if (a / "request.lock").is_file())
    from packager.manifest import load_manifest

    name = load_manifest(lite0).name
    ref = "127.0.0.1:5000/x@sha256:" + "a" * 64
    (job,) = plan([lite0], {(name, Platform.AMD64): ref}, stage="functional", platforms=[Platform.AMD64])
    one = dataclasses.replace(job, run_config=RunConfig(threads=1).canonical())
    two = dataclasses.replace(job, run_config=RunConfig(threads=2, target="llvm -mcpu=znver2").canonical())
    assert len({job.key, one.key, two.key}) == 3
    assert job.key == plan([lite0], {(name, Platform.AMD64): ref}, stage="functional",
                           platforms=[Platform.AMD64])[0].key  # a job without a run config keeps its key
    spec = JobSpec.of(two, dataset=tmp_path, build_root=tmp_path, signing_key=None, python="python3")
    spec.dump(tmp_path / "job.json")
    argv = evaluate_argv(JobSpec.load(tmp_path / "job.json"), tmp_path)
    assert argv[-4:] == ["--set", "run.target=llvm -mcpu=znver2", "--set", "run.threads=2"]
    assert "--set" not in evaluate_argv(JobSpec.of(job, dataset=tmp_path, build_root=tmp_path, signing_key=None,
                                                   python="python3"), tmp_path)


def test_farm_options_are_checked_first(tmp_path: Path) -> None:
    opts = Options(dataset=tmp_path, out=tmp_path / "sweep", board=f"sqlite:///{tmp_path}/b.db", farm="slurm")
    with pytest.raises(BadInput, match="--farm slurm needs --registry"):
        explore(ORT, space("x", {"run": {"threads": [1]}}), opts)
    with pytest.raises(BadInput, match="sweeps run on slurm"):
        explore(ORT, space("x", {"run": {"threads": [1]}}), Options(dataset=tmp_path, out=tmp_path, farm="kubernetes"))


def test_knobs_that_leave_the_parent_as_it_is_are_the_parent(tmp_path: Path) -> None:
    """model=<its own model>, precision=<its own precision>: the parent's image (and published digest), not a copy
    under another name; another precision is still a derived artifact. No scratch directory is left behind."""
    parent = REPO / "artifacts" / "efficientnet-lite0"
    art = Path(shutil.copytree(parent, tmp_path / "artifacts" / parent.name))
    assert derive_variant(art, {"model": "efficientnet-lite0", "precision": "fp32"}) == art
    assert derive_variant(art, {"precision": "fp32"}) == art
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == [parent.name]
    derived = "parent: ../efficientnet-lite0\nname: x\nmodel: {%s}\n"
    assert same_as_parent(art, derived % "precision: fp32") is True
    assert same_as_parent(art, derived % "precision: int8") is False
    assert same_as_parent(art, derived % "use: efficientnet-lite1") is False
    assert same_as_parent(art, derived % "use: no-such-model") is False
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == [parent.name]
