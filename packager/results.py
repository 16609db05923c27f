"""Wire formats of a run's outputs: predictions.jsonl, metrics.json, system.json.

The harness (inside the image) writes them and the verifier (outside) reads
them, so they live in one pure module that imports nothing else of the package.
Top-1/top-5 are defined here once, so the harness and the verifier count alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RESULTS_VERSION = 1
PREDICTIONS_NAME = "predictions.jsonl"
METRICS_NAME = "metrics.json"
SYSTEM_NAME = "system.json"


class _Wire(BaseModel):
    # Finite numbers only: a NaN or an infinity in signed metrics would top every
    # Pareto front (the same rule as packager.wire.WireModel, kept inline so the
    # image's harness carries no more modules).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Prediction(_Wire):
    """One input's result; one JSON object per line of predictions.jsonl."""

    id: str = Field(min_length=1, description="image file name (labels-tsv) or ILSVRC2012_val_NNNNNNNN")
    top5: list[int] = Field(min_length=1, max_length=5, description="class indices, best first, after label_offset")
    probs: list[float] = Field(min_length=1, max_length=5, description="softmax probabilities of top5")
    output_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the raw output tensor bytes (float32, C order)")
    input_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the preprocessed tensor, for a sample of inputs")


class LatencyStats(_Wire):
    scenario: Literal["SingleStream"] = "SingleStream"
    count: int = Field(ge=0)
    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    min_s: float
    max_s: float
    early_stopping_p90_s: float | None = None
    early_stopping_p99_s: float | None = None


class ThroughputStats(_Wire):
    scenario: Literal["Offline"] = "Offline"
    batch_size: int = Field(ge=1)
    samples: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    images_per_s: float = Field(ge=0)


class MultiStreamStats(_Wire):
    """MLPerf MultiStream: queries of ``samples_per_query`` samples issued one after another; a query's latency
    runs from its issue to its last sample's completion. The metric is the 99th percentile of the per-query
    latency (LoadGen's early-stopping estimate of it, when enough queries ran). Per query of 8 images: never
    comparable with a SingleStream (one-image) latency."""

    scenario: Literal["MultiStream"] = "MultiStream"
    samples_per_query: int = Field(ge=1)
    batch_size: int = Field(ge=1, description="samples the SUT ran per backend call (the query's 8 at once, or 1 by 1)")
    count: int = Field(ge=0, description="queries")
    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    min_s: float
    max_s: float
    early_stopping_p99_s: float | None = Field(
        None, description="LoadGen's early-stopping estimate of the p99 per-query latency (MLPerf's MultiStream "
                          "metric); null when too few queries ran for one")
    queries: str | None = Field(None, description="the per-query latency records (LoadGen's own, from its trace) "
                                                   "in the outputs, from which the figures are recomputed")


class Power(_Wire):
    probe: str
    peak_w: float | None = None
    mean_w: float | None = None
    reason: str | None = Field(None, description="why there is no reading, when peak_w is null")
    # Added for the runner's host probe (packager/run/power.py); optional, so older readings stay valid.
    source: str | None = Field(None, description="what was read, e.g. '/sys/class/powercap/intel-rapl:0 (package-0)'")
    energy_j: float | None = Field(None, ge=0, description="energy over the window, joules")
    window_s: float | None = Field(None, ge=0, description="length of the measured window, seconds")
    window: str | None = Field(None, description="what the window covers")


class Footprint(_Wire):
    model_bytes: int = Field(ge=0)
    peak_rss_bytes: int | None = None
    image_bytes: int | None = None


class Accuracy(_Wire):
    samples: int = Field(ge=0)
    correct_top1: int = Field(ge=0)
    correct_top5: int = Field(ge=0)
    top1: float = Field(ge=0, le=1)
    top5: float = Field(ge=0, le=1)


class GraphFingerprint(_Wire):
    """Which model ran: equal ``structure_sha256`` means the same mix of operations."""

    version: int
    ops: dict[str, int]
    params: int = Field(ge=0)
    macs_per_image: int | None = None
    structure_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int
    notes: list[str] = Field(default_factory=list)


class Validation(_Wire):
    """Per-input comparison with reference outputs; mismatching ids are listed, not only counted."""

    reference: str = Field(description="where the reference outputs came from")
    atol: float = Field(ge=0)
    compared: int = Field(ge=0)
    max_abs_diff: float | None = None
    mismatched_ids: list[str] = Field(default_factory=list)
    top1_mismatched_ids: list[str] = Field(default_factory=list)
    missing_ids: list[str] = Field(default_factory=list)
    passed: bool


class Measurement(_Wire):
    """What kind of measurement produced a result's numbers. Results of different classes are never
    compared: the board computes a frontier within one class and shows the class beside every figure."""

    mode: Literal["quick", "submission"] = Field(
        description="quick: the manifest's stages on any data set; submission: LoadGen from mlperf.conf + user.conf, "
                    "official seeds, minimum duration and sample counts, accuracy over the whole data set")
    execution: Literal["native", "emulated"] = Field(description="emulated: a foreign platform under QEMU user mode")
    driver: Literal["loadgen", "builtin"] = Field(description="who drove the scenarios: MLCommons LoadGen or our loop")

    @property
    def key(self) -> str:
        return f"{self.mode}/{self.execution}/{self.driver}"


class Metrics(_Wire):
    results_version: Literal[1] = RESULTS_VERSION
    artifact: str
    stage: Literal["functional", "full"]
    platform: str
    framework: str
    dataset_note: str = Field(description="what the images are, e.g. '200-image ImageNet sample, not the validation set'")
    accuracy: Accuracy
    latency: LatencyStats | None = None
    throughput: list[ThroughputStats] = Field(default_factory=list)
    multistream: MultiStreamStats | None = Field(None, description="MultiStream per-query latency, when it ran")
    power: Power
    footprint: Footprint
    price_usd: float | None = None
    driver: str = Field(description="'mlperf-loadgen <version>' or 'builtin' with the reason")
    threads: int | None = None
    fingerprint: GraphFingerprint | None = None
    validation: Validation | None = None
    preprocessing: dict[str, object] | None = Field(None, description="version and parameter digest of the preprocessing")
    loadgen_logs: list[str] = Field(default_factory=list, description="LoadGen log files in the output directory")
    measurement: Measurement | None = Field(None, description="the measurement class; absent in results made before it existed")
    dataset: dict[str, str | int | None] | None = Field(
        None, description="how the data set was read: layout (labels-tsv or ilsvrc2012-val), the labels or ground-truth "
                          "file, the images directory and synsets file relative to the data set, and how it was chosen "
                          "(detected or given); absent in results made before it existed")
    performance_skipped: str | None = Field(
        None, description="why no performance scenario ran (an emulated run measures QEMU, not the board), when none did")
    run_config: dict[str, int | str] | None = Field(
        None, description="the run-time knobs the run was given (packager/runconfig.py: threads, inter_threads, batch, "
                          "opt_level, execution_provider, target); absent when it ran with the manifest's defaults")


class System(_Wire):
    results_version: Literal[1] = RESULTS_VERSION
    machine: str
    cpu_model: str | None = None
    cores: int
    memory_bytes: int | None = None
    os: str
    kernel: str
    python: str
    frameworks: dict[str, str] = Field(default_factory=dict)
    devices: list[str] = Field(default_factory=list)
    image_digest: str | None = None
    sandbox: dict[str, object] = Field(default_factory=dict)


def accuracy_from(predictions: Iterable[Prediction], truth: Mapping[str, int]) -> Accuracy:
    """Count top-1/top-5 hits. Every prediction must have a label: a missing one is a KeyError."""
    n = c1 = c5 = 0
    for p in predictions:
        label = truth[p.id]
        n += 1
        c1 += p.top5[0] == label
        c5 += label in p.top5
    return Accuracy(
        samples=n,
        correct_top1=c1,
        correct_top5=c5,
        top1=c1 / n if n else 0.0,
        top5=c5 / n if n else 0.0,
    )


def iter_predictions(path: Path) -> Iterator[Prediction]:
    """The predictions of a file one line at a time: memory stays flat for 50,000 of them."""
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield Prediction.model_validate_json(line)


def read_predictions(path: Path) -> list[Prediction]:
    out = []
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(Prediction.model_validate_json(line))
    return out


def dump_line(prediction: Prediction) -> str:
    return json.dumps(prediction.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":")) + "\n"
