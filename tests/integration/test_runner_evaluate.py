"""``request-pack evaluate`` end to end on the example artifact, amd64, the shared 200-image sample:
lock, fetch, build (from the machine's cache), digest check, functional and full stage in
the sandbox, sign, verify, summary table; then a tampered bundle fails verification.

The copy is re-locked against the live mirror: the committed lock's .deb URLs are only
good while the mirror still carries those versions (no snapshot service is reachable).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from runner_helpers import cli

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "artifacts" / "efficientnet-lite0"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    art = root / "artifacts" / ARTIFACT.name
    shutil.copytree(ARTIFACT, art)
    for step in (["lock", str(art)], ["fetch", str(art)]):
        res = cli(*step, cwd=root)
        assert res.returncode == 0, res.stderr[-2000:]
    return art


def test_evaluate_end_to_end(artifact, shared_sample, tmp_path):
    root = artifact.parent.parent
    keys = tmp_path / "keys"
    assert cli("keygen", "--out", str(keys), cwd=root).returncode == 0
    out = tmp_path / "results"
    t0 = time.monotonic()
    res = cli("evaluate", str(artifact), "--dataset", str(shared_sample), "--out", str(out),
               "--key", str(keys / "signing.key"), cwd=root)
    wall = time.monotonic() - t0
    print(f"evaluate (build + functional + full + sign + verify): {wall:.0f} s")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "verified" in res.stdout and "functional" in res.stdout and "full" in res.stdout
    bundle = out / f"{artifact.name}-linux-amd64.bundle.tar.gz"
    assert bundle.is_file()
    record = json.loads((root / "build" / artifact.name / "build-record.json").read_text())
    system = json.loads((out / "full" / "system.json").read_text())
    assert system["image_digest"] == record["platforms"]["linux/amd64"]["manifest_digest"]
    assert system["sandbox"]["network"] == "none" and system["sandbox"]["read_only_rootfs"] is True
    metrics = json.loads((out / "full" / "metrics.json").read_text())
    assert metrics["accuracy"]["samples"] == 200 and metrics["accuracy"]["top1"] >= 0.65
    assert json.loads((out / "functional" / "metrics.json").read_text())["accuracy"]["samples"] == 20

    # The bundle verifies with the evaluator's key, and not once a prediction is changed.
    ok = cli("verify", str(bundle), "--trust", str(keys / "signing.pub"), "--dataset", str(shared_sample), cwd=root)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    preds = out / "full" / "predictions.jsonl"
    lines = preds.read_text().splitlines(keepends=True)
    first = json.loads(lines[0])
    first["top5"] = [(first["top5"][0] + 1) % 1000] + first["top5"][1:]
    lines[0] = json.dumps(first, sort_keys=True, separators=(",", ":")) + "\n"
    preds.write_text("".join(lines))
    bad = cli("verify", str(out / "full"), "--trust", str(keys / "signing.pub"), cwd=root)
    assert bad.returncode == 12, bad.stdout + bad.stderr


def test_evaluate_stops_at_the_functional_stage(artifact, shared_sample, tmp_path):
    """Labels rotated by one line: top-1 falls below min_top1, evaluate stops after the functional stage, exit 1."""
    data = tmp_path / "wrong-labels"
    (data / "images").mkdir(parents=True)
    header, *rows = (shared_sample / "labels.tsv").read_text().splitlines()
    rows = rows[:20]
    cols = [r.split("\t") for r in rows]
    idx = header.split("\t").index("class_index")
    for k, c in enumerate(cols):
        c[idx] = rows[(k + 1) % len(rows)].split("\t")[idx]
        shutil.copyfile(shared_sample / "images" / c[0], data / "images" / c[0])
    (data / "labels.tsv").write_text("\n".join([header] + ["\t".join(c) for c in cols]) + "\n")
    shutil.copyfile(shared_sample / "synsets.tsv", data / "synsets.tsv")
    root = artifact.parent.parent
    res = cli("evaluate", str(artifact), "--dataset", str(data), "--out", str(tmp_path / "r"), cwd=root)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "stage 'functional'" in res.stderr and "min_top1" in res.stderr
    assert not (tmp_path / "r" / "full").exists()
