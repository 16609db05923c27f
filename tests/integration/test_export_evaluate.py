"""``request-pack export --mlperf`` on the signed bundle a real ``request-pack evaluate`` made:
the example artifact (EfficientNet-Lite0, onnxruntime) on amd64 over the shared 200-image sample.

The copy of the artifact is re-locked against the live mirror, as in
test_runner_evaluate.py (the committed lock's .deb URLs live only as long as the
mirror keeps those versions). The image carries LoadGen (mlcommons-loadgen is
pinned in the manifest), so the tree gets the logs LoadGen wrote inside the
container, byte for byte, and LoadGen's accuracy log must agree with the
predictions; a bundle from the built-in driver must get no performance logs
and say why (the unit tests cover that case with a host run).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from runner_helpers import cli

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "artifacts" / "efficientnet-lite0"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, shared_sample):
    root = tmp_path_factory.mktemp("export-eval")
    art = root / "artifacts" / ARTIFACT.name
    shutil.copytree(ARTIFACT, art)
    for step in (["lock", str(art)], ["fetch", str(art)], ["keygen", "--out", str(root / "keys")]):
        res = cli(*step, cwd=root)
        assert res.returncode == 0, res.stderr[-2000:]
    res = cli("evaluate", str(art), "--dataset", str(shared_sample), "--out", str(root / "results"),
               "--key", str(root / "keys" / "signing.key"), cwd=root)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    bundle = root / "results" / f"{ARTIFACT.name}-linux-amd64.bundle.tar.gz"
    assert bundle.is_file()
    return root, bundle


def test_export_of_an_evaluated_bundle(evaluated, tmp_path):
    root, bundle = evaluated
    out = tmp_path / "submission"
    res = cli("export", "--mlperf", str(bundle), "--out", str(out), "--trust", str(root / "keys" / "signing.pub"), cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    sub = out / "open" / "request-pack"
    (system_json,) = (sub / "systems").glob("*.json")
    system = system_json.stem
    model = ARTIFACT.name
    desc = json.loads(system_json.read_text())
    with tarfile.open(bundle) as tar:
        inner = {n: json.load(tar.extractfile(n)) for n in ("metrics.json", "system.json")}
        preds = [json.loads(x) for x in tar.extractfile("predictions.jsonl").read().decode().splitlines()]
        labels = tar.extractfile("labels.tsv").read().decode().splitlines()
    metrics, sysinfo = inner["metrics.json"], inner["system.json"]
    assert desc["host_processor_model_name"] == sysinfo["cpu_model"] and desc["host_processor_core_count"] == sysinfo["cores"]
    assert sysinfo["image_digest"] in desc["sw_notes"]
    assert desc["host_networking"].startswith("none")  # the run's container had --network none

    # The src directory (v6.1; code/ before) carries the manifest and lock the bundle was made from.
    assert desc["accelerators_per_node"] == "0"
    assert (sub / "src" / model / "request.lock").read_bytes() == (root / "artifacts" / model / "request.lock").read_bytes()

    truth = {line.split("\t")[0]: int(line.split("\t")[2]) for line in labels[1:]}
    top1 = sum(p["top5"][0] == truth[p["id"]] for p in preds)
    assert len(preds) == 200 and top1 == metrics["accuracy"]["correct_top1"] and top1 >= 160
    for scenario in ("SingleStream", "Offline"):
        acc = (sub / "results" / system / model / scenario / "accuracy" / "accuracy.txt").read_text()
        assert re.match(rf"accuracy={100 * top1 / 200:.3f}%, good={top1}, total=200$", acc.splitlines()[0])
        assert "NOT the 50,000-image ILSVRC2012 validation set" in acc
        readme = (sub / "results" / system / model / scenario / "README.md").read_text()
        # The demo is a quick-mode run on the 200-image sample: flagged, never passed off as a submission.
        assert "Not conformant with MLPerf Inference v6.1" in readme and "quick-mode run" in readme
        assert "signed bundle, verified" in readme
        perf = sub / "results" / system / model / scenario / "performance" / "run_1"
        if metrics["driver"].startswith("builtin"):
            assert not perf.exists()
            assert "built-in timing loop" in readme and f"{model}/{scenario}: The run used the built-in timing loop" in res.stdout
        else:
            sub_dir = "SingleStream" if scenario == "SingleStream" else \
                f"Offline-b{max(metrics['throughput'], key=lambda t: t['images_per_s'])['batch_size']}"
            with tarfile.open(bundle) as tar:
                for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
                    assert (perf / name).read_bytes() == tar.extractfile(f"loadgen/{sub_dir}/{name}").read()
            acc_dir = sub / "results" / system / model / scenario / "accuracy"
            assert {"mlperf_log_accuracy.json", "mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt"} == \
                {p.name for p in acc_dir.iterdir()}  # exactly these; qsl_ids.tsv stays in the bundle
            with tarfile.open(bundle) as tar:
                full = tar.extractfile("loadgen/Accuracy/mlperf_log_accuracy.json").read()
            assert f"hash={hashlib.sha256(full).hexdigest()}" in acc.splitlines()
            assert "LoadGen's verdict" in readme
    assert not (sub / "measurements").exists()
    assert "not conformant" in res.stdout and (out / "conformance.txt").is_file()
    json_files = list((sub / "results" / system / model).glob("*/measurements.json"))
    imp = json.loads(json_files[0].read_text())
    from packager.manifest import load_manifest

    manifest = load_manifest(root / "artifacts" / model)
    assert imp["weight_data_types"] == manifest.model.precision == "fp32" and imp["model_sha256"] == manifest.model.sha256
    assert imp["starting_weights_filename"].endswith(".pth") and imp["retraining"] == "no"

    # A bundle changed after signing is refused before anything is written (exit 12, files vs subjects).
    tampered = tmp_path / "tampered"
    shutil.copytree(root / "results" / "full", tampered)
    (tampered / "metrics.json").write_text((tampered / "metrics.json").read_text().replace('"stage": "full"', '"stage": "full" '))
    bad = cli("export", "--mlperf", str(tampered), "--out", str(tmp_path / "bad"), "--trust", str(root / "keys" / "signing.pub"), cwd=root)
    assert bad.returncode == 12, bad.stdout + bad.stderr
    assert not (tmp_path / "bad").exists()
