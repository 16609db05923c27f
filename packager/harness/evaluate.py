"""One harness run: dataset -> preprocessed tensors -> accuracy pass -> scenarios -> outputs.

Order matters for honest numbers:

1. load the dataset and the model; check the model's input against the
   configuration before any work (a mismatch names the model file);
2. decode and preprocess every image in worker processes into the tensor
   cache; nothing timed has touched a JPEG;
3. accuracy pass over all samples at the largest batch size (LoadGen AccuracyOnly when LoadGen drives), writing
   predictions.jsonl batch by batch (resumable); top-1/top-5 are then counted from that file as it
   streams by, so no per-sample output or prediction stays in memory (peak RSS flat in the data set);
4. performance scenarios (SingleStream, MultiStream, Offline) on an in-memory sample set under the power probe;
5. validation against reference outputs, then metrics.json and system.json;
   a failed validation or a top-1 under the stage's floor raises after the
   files are written, so the evidence is on disk either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packager.errors import CheckFailed
from packager.harness import backends
from packager.harness.config import HarnessConfig
from packager.harness.dataset import Sample, dataset_record, load_dataset, truth
from packager.harness.errors import (
    BackendUnavailable,
    DatasetError,
    ModelMismatch,
    OutputMismatch,
)
from packager.harness.outputs import (
    PredictionWriter,
    collect_system,
    framework_versions,
    peak_rss_bytes,
    predictions_for,
    write_metrics,
    write_system,
)
from packager.harness.power import PowerMonitor
from packager.harness.preprocess import (
    PREPROCESS_VERSION,
    Prepared,
    load_batch,
    load_crop,
    normalize,
    preprocess_all,
    tensor_sha256,
)
from packager.harness.scenarios import (
    MULTISTREAM_SAMPLES_PER_QUERY,
    ScenarioSettings,
    check_data_set,
    choose_driver,
    measurement_for,
)
from packager.harness.validate import OutputComparer
from packager.results import (
    PREDICTIONS_NAME,
    Footprint,
    LatencyStats,
    Metrics,
    MultiStreamStats,
    Power,
    ThroughputStats,
    accuracy_from,
    iter_predictions,
)

log = logging.getLogger(__name__)

OUTPUTS_NPZ = "outputs.npz"


@dataclass(frozen=True)
class RunResult:
    metrics: Metrics
    out_dir: Path


def check_model_input(cfg: HarnessConfig, backend: backends.Backend) -> int | None:
    """Compare the model's declared input with the preprocessing; return its fixed batch size, if any."""
    info = backend.input
    dims = list(info.shape)
    if len(dims) != 4:
        raise ModelMismatch(f"input {info.name!r} has shape {dims}, expected 4 dims ({cfg.preprocessing.layout})", file=cfg.model_path)
    if "float" not in info.dtype or "16" in info.dtype:
        raise ModelMismatch(f"input {info.name!r} is {info.dtype}; the preprocessing produces float32", file=cfg.model_path)
    want = cfg.preprocessing.shape
    got = tuple(dims[1:])
    if any(isinstance(g, int) and g != w for g, w in zip(got, want)):
        raise ModelMismatch(
            f"input {info.name!r} has shape {dims} but the preprocessing gives (batch, {', '.join(map(str, want))}) "
            f"({cfg.preprocessing.layout}, crop {cfg.preprocessing.crop})",
            file=cfg.model_path,
        )
    if cfg.input_name and cfg.input_name != info.name:
        raise ModelMismatch(f"input is named {info.name!r}, the manifest says {cfg.input_name!r}", file=cfg.model_path)
    if cfg.input_shape:
        for i, (g, w) in enumerate(zip(dims, cfg.input_shape)):
            if isinstance(w, int) and isinstance(g, int) and g != w:
                raise ModelMismatch(f"input dim {i} is {g}, the manifest says {w} (shape {list(cfg.input_shape)})", file=cfg.model_path)
    return dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None


def run(cfg: HarnessConfig) -> RunResult:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.model_path.is_file():
        raise ModelMismatch("model file does not exist", file=cfg.model_path)

    # 1. dataset and model
    samples = load_dataset(cfg.dataset, count=cfg.samples, ids=cfg.ids)
    check_data_set(cfg.mode, len(samples), str(cfg.dataset.root))
    backend = backends.create(cfg.backend, cache_dir=cfg.cache_dir)
    backend.load(cfg.model_path, cfg.backend_options)
    fixed_batch = check_model_input(cfg, backend)
    batch_sizes = list(cfg.batch_sizes)
    if fixed_batch is not None and any(b != fixed_batch for b in batch_sizes):
        raise ModelMismatch(f"model has a fixed batch size {fixed_batch}; run.batch_sizes is {batch_sizes}", file=cfg.model_path)
    fingerprint = _fingerprint(cfg.model_path)

    # 2. preprocessing, outside every timed region
    prepared = preprocess_all([s.path for s in samples], cfg.preprocessing, cfg.cache_dir, workers=cfg.workers)

    # 3. accuracy pass (LoadGen's AccuracyOnly mode when LoadGen drives)
    settings = ScenarioSettings.from_config(cfg)
    driver = choose_driver(cfg.driver, out / "loadgen", settings)
    acc_batch = max(batch_sizes)
    comparer = OutputComparer(cfg.reference_outputs, cfg.atol, label_offset=cfg.label_offset) \
        if cfg.reference_outputs is not None else None
    _accuracy_pass(cfg, backend, driver, samples, prepared, acc_batch, comparer)
    accuracy = _accuracy(out / PREDICTIONS_NAME, samples)
    log.info("top-1 %.4f top-5 %.4f on %d sample(s)", accuracy.top1, accuracy.top5, accuracy.samples)

    # 4. performance scenarios
    perf = load_batch(prepared[: max(1, min(cfg.performance_samples, len(prepared)))])
    latency: LatencyStats | None = None
    throughput: list[ThroughputStats] = []
    multistream: MultiStreamStats | None = None
    with PowerMonitor(cfg.power_probe, command=cfg.power_command) as monitor:
        if "SingleStream" in cfg.scenarios:
            if fixed_batch not in (None, 1):
                log.warning("model has fixed batch %s: SingleStream skipped", fixed_batch)
            else:
                latency = driver.single_stream(backend, perf, settings)
                log.info("SingleStream p50 %.2f ms (%s)", latency.p50_s * 1e3, driver.name)
        if "MultiStream" in cfg.scenarios:
            # A query's 8 samples as one batch when the model takes it, else one by one.
            ms_batch = MULTISTREAM_SAMPLES_PER_QUERY if fixed_batch in (None, MULTISTREAM_SAMPLES_PER_QUERY) else fixed_batch
            if ms_batch not in (1, MULTISTREAM_SAMPLES_PER_QUERY):
                log.warning("model has fixed batch %s (neither 1 nor a query's %d samples): MultiStream skipped",
                            fixed_batch, MULTISTREAM_SAMPLES_PER_QUERY)
            else:
                multistream = driver.multi_stream(backend, perf, ms_batch, settings)
                log.info("MultiStream p99 %.2f ms per query of %d (%s)", multistream.p99_s * 1e3,
                         multistream.samples_per_query, driver.name)
        if "Offline" in cfg.scenarios:
            for b in batch_sizes:
                throughput.append(driver.offline(backend, perf, b, settings))
                log.info("Offline batch %d: %.1f images/s", b, throughput[-1].images_per_s)
    power = monitor.reading()

    # 5. validation, outputs
    validation = comparer.result() if comparer is not None else None
    metrics = Metrics(
        artifact=cfg.artifact,
        stage=cfg.stage,  # type: ignore[arg-type]
        platform=cfg.platform,
        framework=backend.describe(),
        dataset_note=cfg.dataset.note or f"{len(samples)} image(s) from {cfg.dataset.root.name} ({cfg.dataset.layout})",
        accuracy=accuracy,
        latency=latency,
        throughput=throughput,
        multistream=multistream,
        power=Power(probe=power.probe, peak_w=power.peak_w, mean_w=power.mean_w, reason=power.reason),
        footprint=Footprint(model_bytes=cfg.model_path.stat().st_size, peak_rss_bytes=peak_rss_bytes()),
        price_usd=cfg.price_usd,
        driver=driver.name,
        threads=backend.threads(),
        fingerprint=fingerprint,
        validation=validation,
        preprocessing={"version": PREPROCESS_VERSION, "params_sha256": cfg.preprocessing.digest()},
        dataset=dataset_record(cfg.dataset, len(samples)),
        loadgen_logs=list(getattr(driver, "log_files", [])),
        measurement=measurement_for(settings, driver, cfg.execution),
        performance_skipped=cfg.performance_skipped,
        run_config=cfg.run_config.as_dict() or None,
    )
    write_metrics(out, metrics)
    write_system(out, collect_system(image_digest=cfg.image_digest, frameworks=framework_versions({f"backend:{backend.name}": backend.version})))
    if validation is not None and not validation.passed:
        bad = validation.mismatched_ids + [i for i in validation.top1_mismatched_ids if i not in validation.mismatched_ids]
        raise OutputMismatch(
            f"{len(bad)} input(s) differ from {validation.reference} beyond atol {validation.atol}: {', '.join(bad[:10])}"
            + (" ..." if len(bad) > 10 else "")
            + (f"; {len(validation.missing_ids)} missing from the reference" if validation.missing_ids else ""),
            bad,
        )
    if accuracy.top1 < cfg.min_top1:
        raise CheckFailed(f"top-1 {accuracy.top1:.4f} is below the {cfg.stage} stage's min_top1 {cfg.min_top1}")
    return RunResult(metrics, out)


def _accuracy(predictions: Path, samples: list[Sample]):
    """Top-1/top-5 of the samples, counted from predictions.jsonl as it streams by (one line in memory)."""
    labels = truth(samples)
    seen: set[str] = set()

    def ours():
        for p in iter_predictions(predictions):
            if p.id in labels and p.id not in seen:  # a resumed file may hold ids of another subset
                seen.add(p.id)
                yield p

    accuracy = accuracy_from(ours(), labels)
    if accuracy.samples != len(samples):
        missing = next(s.id for s in samples if s.id not in seen)
        raise DatasetError(f"{len(samples) - accuracy.samples} sample(s) have no prediction, first {missing!r}", file=predictions)
    return accuracy


def _accuracy_pass(cfg: HarnessConfig, backend, driver, samples: list[Sample], prepared: list[Prepared], batch: int,
                   comparer: OutputComparer | None) -> None:
    """Run every sample not yet predicted once (through the driver), streaming each batch to disk.

    Nothing per sample stays in memory but the ids: predictions go to predictions.jsonl, raw
    outputs to the comparer's verdicts and (``save_outputs``) to a file beside them. The
    driver holds LoadGen's set of samples as uint8 crops (``load_crop``, a quarter of a
    float32 tensor) and each batch is normalised here, just before it runs."""
    pad = backend.static_batch or isinstance(backend.input.shape[0], int)
    raw = _RawOutputs(Path(cfg.out_dir)) if cfg.save_outputs else None
    with PredictionWriter(cfg.out_dir, resume=cfg.resume) as writer:
        todo = [i for i, s in enumerate(samples) if s.id not in writer.done]
        if len(todo) < len(samples):
            log.info("skipping %d sample(s) already in predictions.jsonl", len(samples) - len(todo))

        def run_batch(positions, crops: np.ndarray) -> np.ndarray:
            n = len(positions)
            x = normalize(crops, cfg.preprocessing)
            if n < batch and pad:
                x = np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)])  # fixed-batch models, or one compile per size
            y = np.asarray(backend.run(x), dtype=np.float32)[:n]
            _check_output(cfg, y)
            index = [todo[p] for p in positions]
            hashes = [tensor_sha256(x[j]) if i < cfg.input_hash_sample else None for j, i in enumerate(index)]
            ids = [samples[i].id for i in index]
            preds = predictions_for(ids, y, label_offset=cfg.label_offset, input_hashes=hashes)
            writer.write(preds)
            for sid, row in zip(ids, y):
                if comparer is not None:
                    comparer.add(sid, row)
                if raw is not None:
                    raw.add(sid, row)
            return np.array([p.top5[0] for p in preds], dtype=np.int64)

        if todo:
            if hasattr(driver, "log_root"):
                qsl = Path(driver.log_root) / "Accuracy"
                qsl.mkdir(parents=True, exist_ok=True)
                with (qsl / "qsl_ids.tsv").open("w", encoding="utf-8") as f:
                    f.writelines(f"{k}\t{samples[i].id}\n" for k, i in enumerate(todo))
            driver.accuracy(len(todo), lambda p: load_crop(prepared[todo[p]]), run_batch, batch)
    if raw is not None:
        raw.finish(Path(cfg.out_dir) / OUTPUTS_NPZ)


class _RawOutputs:
    """``save_outputs``: rows appended to a scratch file as they come, packed into outputs.npz at the end
    (numpy streams a memory-mapped array into the zip in chunks), so they are never all in memory."""

    def __init__(self, out_dir: Path) -> None:
        self._path = out_dir / (OUTPUTS_NPZ + ".rows")
        self._f = self._path.open("wb")
        self.ids: list[str] = []
        self.width: int | None = None

    def add(self, sid: str, row: np.ndarray) -> None:
        row = np.ascontiguousarray(row, dtype=np.float32).reshape(-1)
        self.width = self.width or row.size
        self.ids.append(sid)
        self._f.write(row.tobytes())

    def finish(self, dest: Path) -> None:
        import zipfile

        self._f.close()
        try:
            if not self.ids:
                return
            rows = np.memmap(self._path, dtype=np.float32, mode="r", shape=(len(self.ids), self.width))
            with zipfile.ZipFile(dest, "w", allowZip64=True) as z:
                for name, arr in (("ids", np.array(self.ids)), ("outputs", rows)):
                    with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, arr, allow_pickle=False)
            del rows
        finally:
            self._path.unlink(missing_ok=True)


def _check_output(cfg: HarnessConfig, y: np.ndarray) -> None:
    width = int(np.prod(y.shape[1:]))
    if width not in (cfg.num_classes, cfg.num_classes + cfg.label_offset):
        raise ModelMismatch(
            f"output has {width} values per image; model.num_classes is {cfg.num_classes} (label_offset {cfg.label_offset})",
            file=cfg.model_path,
        )


def _fingerprint(model_path: Path):
    from packager.harness.fingerprint import fingerprint
    from packager.results import GraphFingerprint

    try:
        return GraphFingerprint(**fingerprint(model_path).to_dict())
    except BackendUnavailable as e:
        log.warning("no graph fingerprint: %s", e)
        return None
