"""Builds realistic result directories for the bundle tests and the verify benchmark.

The labels are the real ImageNet sample's (or ILSVRC2012-style ids for the
large benchmark case); the predictions are drawn from a seeded RNG the way a
roughly 70%-top-1 classifier would answer, and every metric is computed from
them with the same ``accuracy_from`` the harness uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

from packager.attestation import BUILD_TYPE, BUILDER_ID
from packager.results import (
    Accuracy,
    Footprint,
    LatencyStats,
    Metrics,
    Power,
    Prediction,
    System,
    ThroughputStats,
    accuracy_from,
    dump_line,
)

REPO = Path(__file__).resolve().parents[2]
# CI clones the repository with shared/ beside it (see tests/conftest.py's shared_sample).
SAMPLE_LABELS = Path(os.environ.get("REQUEST_PACK_SAMPLE", REPO.parent / "shared" / "data" / "imagenet-sample")) / "labels.tsv"
MANIFEST = REPO / "tests" / "data" / "manifest-valid" / "request.yaml"
ARTIFACT = "test-valid"
INDEX_DIGEST = "sha256:" + hashlib.sha256(b"request-pack test image index").hexdigest()


def _labels_rows(n: int | None, rng: random.Random) -> list[tuple[str, str, int, str]]:
    if n is None:
        rows = []
        with SAMPLE_LABELS.open(encoding="utf-8") as f:
            next(f)
            for line in f:
                file, wnid, idx, name = line.rstrip("\n").split("\t")
                rows.append((file, wnid, int(idx), name))
        return rows
    return [(f"ILSVRC2012_val_{i:08d}.JPEG", f"n{rng.randrange(10**8):08d}", rng.randrange(1000), "class") for i in range(1, n + 1)]


def _predict(file: str, label: int, rng: random.Random) -> Prediction:
    others = rng.sample([c for c in range(1000) if c != label], 5)
    r = rng.random()
    if r < 0.70:
        top5 = [label] + others[:4]
    elif r < 0.90:
        top5 = others[:1] + [label] + others[1:4]
        rng.shuffle(top5[1:])  # the label lands somewhere in 2..5
    else:
        top5 = others
    raw = sorted((rng.random() for _ in range(5)), reverse=True)
    total = sum(raw) * 1.3
    probs = [round(x / total, 6) for x in raw]
    return Prediction(id=file, top5=top5, probs=probs, output_sha256=hashlib.sha256(f"{file}:{top5}".encode()).hexdigest())


def make_result_dir(
    root: Path,
    *,
    n: int | None = None,
    stage: str = "full",
    seed: int = 1234,
    index_digest: str = INDEX_DIGEST,
) -> Path:
    """A result directory as the runner leaves it, before signing.

    ``n=None`` uses the 200-image real sample; an integer makes ILSVRC2012-style ids.
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = _labels_rows(n, rng)
    evaluated = rows[:20] if stage == "functional" else rows
    with (root / "labels.tsv").open("w", encoding="utf-8") as f:
        f.write("file\twnid\tclass_index\tclass_name\n")
        for file, wnid, idx, name in rows:
            f.write(f"{file}\t{wnid}\t{idx}\t{name}\n")
    preds = [_predict(file, idx, rng) for file, _, idx, _ in evaluated]
    with (root / "predictions.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(dump_line(p) for p in preds)
    acc: Accuracy = accuracy_from(preds, {file: idx for file, _, idx, _ in rows})
    metrics = Metrics(
        artifact=ARTIFACT,
        stage=stage,  # type: ignore[arg-type]
        platform="linux/amd64",
        framework="onnxruntime 1.20.1",
        dataset_note=f"{len(rows)}-image ImageNet sample, not the validation set",
        accuracy=acc,
        latency=LatencyStats(count=len(preds), mean_s=0.0121, p50_s=0.0118, p90_s=0.0135, p99_s=0.0161, min_s=0.0104, max_s=0.0203),
        throughput=[ThroughputStats(batch_size=32, samples=len(preds), duration_s=1.9, images_per_s=len(preds) / 1.9)],
        power=Power(probe="none", reason="no power probe on this host"),
        footprint=Footprint(model_bytes=13_964_571, peak_rss_bytes=187_432_960),
        driver="builtin (mlperf-loadgen has no wheel for this platform)",
        threads=2,
    )
    (root / "metrics.json").write_text(metrics.model_dump_json(indent=2) + "\n", encoding="utf-8")
    system = System(
        machine="x86_64",
        cpu_model="Intel(R) Xeon(R) CPU @ 2.20GHz",
        cores=2,
        memory_bytes=8_331_608_064,
        os="Debian GNU/Linux 12 (bookworm)",
        kernel="6.1.0-18-amd64",
        python="3.11.2",
        frameworks={"onnxruntime": "1.20.1", "numpy": "1.26.4"},
        devices=["cpu"],
        image_digest=index_digest,
        sandbox={"network": "none", "read_only": True},
    )
    (root / "system.json").write_text(system.model_dump_json(indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(MANIFEST, root / "request.yaml")
    (root / "request.lock").write_text(
        "# request.lock (test fixture)\nlock_version: 1\nmanifest_sha256: "
        + hashlib.sha256(MANIFEST.read_bytes()).hexdigest()
        + "\n",
        encoding="utf-8",
    )
    write_image_records(root, index_digest)
    (root / "logs").mkdir(exist_ok=True)
    (root / "logs" / "run.log").write_text(f"evaluated {len(preds)} images\n", encoding="utf-8")
    (root / "logs" / "harness.json").write_text(json.dumps({"warmup": 10, "threads": 2}) + "\n", encoding="utf-8")
    return root


def write_image_records(root: Path, index_digest: str) -> None:
    """build-record.json (shaped like packager.image.build's build-record.json) and a SLSA v1 provenance statement."""
    from packager.manifest import load_manifest

    record = {
        "record_version": 1,
        "artifact": ARTIFACT,
        "index_digest": index_digest,
        "platforms": {"linux/amd64": {"manifest_digest": "sha256:" + "1" * 64, "manifest_size": 1234, "image_size": 123456}},
        "builder": "request-pack 0.1.0",
    }
    if (root / "request.lock").is_file():
        record["lock_sha256"] = hashlib.sha256((root / "request.lock").read_bytes()).hexdigest()
    record["manifest_sha256"] = load_manifest(MANIFEST).digest()
    (root / "build-record.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    provenance = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": f"request-pack/{ARTIFACT}", "digest": {"sha256": index_digest.removeprefix("sha256:")}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {"buildType": BUILD_TYPE, "externalParameters": {}},
            "runDetails": {"builder": {"id": BUILDER_ID}},
        },
    }
    (root / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
