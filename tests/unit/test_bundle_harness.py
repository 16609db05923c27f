"""End to end without an image: the real harness evaluates a small ONNX net on
the real ImageNet sample with onnxruntime, the result directory is completed
the way the runner completes it, signed, packed, and verified; then its
LoadGen logs and predictions are tampered with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from _bundle_fixture import INDEX_DIGEST, MANIFEST, SAMPLE_LABELS, write_image_records

from packager.bundle import (
    TrustStore,
    generate_keypair,
    pack,
    sign_result_dir,
    verify_bundle,
)
from packager.errors import MetricsMismatch, SubjectMismatch
from packager.harness import tinynet
from packager.harness.config import build_config
from packager.harness.evaluate import run
from packager.results import Metrics


@pytest.fixture(scope="module")
def harness_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrustStore]:
    tmp = tmp_path_factory.mktemp("harness")
    model = tinynet.build(tmp / "tiny.onnx")
    cfg = build_config(
        yaml.safe_load(MANIFEST.read_text()),
        model_path=model,
        dataset_dir=SAMPLE_LABELS.parent,
        out_dir=tmp / "result",
        cache_dir=tmp / "cache",
        backend="onnxruntime",
        stage="functional",
        warmup=1,
        single_stream_queries=8,
        offline_min_samples=16,
        performance_samples=8,
        image_digest=INDEX_DIGEST,
        workers=1,
        min_top1=0.0,  # an untrained net is at chance; the bundle must verify all the same
    )
    result = run(cfg).out_dir
    # What the runner adds around the harness's outputs.
    shutil.copyfile(MANIFEST, result / "request.yaml")
    (result / "request.lock").write_text("lock_version: 1\n")
    write_image_records(result, INDEX_DIGEST)
    shutil.copyfile(SAMPLE_LABELS, result / "labels.tsv")
    pair = generate_keypair(tmp / "keys")
    sign_result_dir(result, pair.private_path)
    return result, TrustStore.load([pair.public_path])


def test_harness_result_signs_and_verifies(harness_bundle: tuple[Path, TrustStore], tmp_path: Path) -> None:
    result, store = harness_bundle
    claimed = Metrics.model_validate_json((result / "metrics.json").read_bytes()).accuracy
    for target in (result, pack(result, tmp_path / "bundle.tar.gz")):
        report = verify_bundle(target, store)
        assert report.ok and report.accuracy == claimed and claimed.samples == 20
        assert "request.lock and request.yaml as built" in report.checks[-3].detail


def test_harness_result_tampering(harness_bundle: tuple[Path, TrustStore], tmp_path: Path) -> None:
    result, store = harness_bundle
    copy = Path(shutil.copytree(result, tmp_path / "copy"))
    logs = sorted(p for p in copy.rglob("*.txt"))
    if logs:  # LoadGen's summary/detail logs are bound like every other file
        logs[0].write_text(logs[0].read_text() + "edited\n")
        with pytest.raises(SubjectMismatch, match=logs[0].name):
            verify_bundle(copy, store)
        shutil.rmtree(copy)
        copy = Path(shutil.copytree(result, tmp_path / "copy"))
    # A signer who swaps the top-1 guess for the true label on every input is caught by recomputation...
    lines = (copy / "predictions.jsonl").read_text().splitlines()
    truth = {r.split("\t")[0]: int(r.split("\t")[2]) for r in SAMPLE_LABELS.read_text().splitlines()[1:]}
    fixed = []
    for line in lines:
        p = json.loads(line)
        p["top5"] = [truth[p["id"]]] + [c for c in p["top5"] if c != truth[p["id"]]][:4]
        fixed.append(json.dumps(p))
    (copy / "predictions.jsonl").write_text("\n".join(fixed) + "\n")
    key = next(result.parent.glob("keys/*.key"))
    sign_result_dir(copy, key)
    claimed = Metrics.model_validate_json((copy / "metrics.json").read_bytes()).accuracy.correct_top1
    assert claimed < 20
    with pytest.raises(MetricsMismatch, match=f"correct_top1 claimed {claimed}, recomputed 20"):
        verify_bundle(copy, store)
