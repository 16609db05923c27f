"""SingleStream latency, MultiStream per-query latency and Offline throughput, in MLPerf's terms.

Two drivers with the same outputs (``LatencyStats`` / ``MultiStreamStats`` / ``ThroughputStats`` of
``packager.results``):

- ``LoadGenDriver``: MLCommons LoadGen (``mlcommons-loadgen``), the field's own
  load generator. Its summary, detail and accuracy logs are kept in
  ``<out>/loadgen/<scenario>/`` and its statistics, including the early-stopping
  percentile estimates, are read back from the detail log.
- ``BuiltinDriver``: a plain timing loop, used where LoadGen is not importable
  (or when asked for); ``driver`` in metrics.json says which ran and why. It runs no
  MultiStream: that result is LoadGen's per-query records and early-stopping estimate.

MultiStream (edge): queries of 8 samples (mlperf.conf ``*.MultiStream.samples_per_query``),
one after another; the SUT runs a query's 8 samples as one batch when the model takes
any batch, else one by one (``MultiStreamStats.batch_size`` says which). LoadGen's trace
is on for this scenario only and becomes ``queries.tsv`` (``packager.querylog``).

Two modes (``ScenarioSettings.mode``, recorded as ``Metrics.measurement``):

- ``quick``: the manifest's short runs on any data set, LoadGen's settings set
  field by field (its seeds stay 0). Never presented as an MLPerf submission.
- ``submission``: LoadGen configured as an MLPerf run is: the mlperf.conf built
  into LoadGen 6.0.17 (the v6.1 round's, with its official seeds, 600 s minimum
  duration, 1024 performance samples and query counts for ``resnet50``, the
  benchmark an open ImageNet classifier stands beside) plus a ``user.conf``
  written by the run into each scenario's log directory (it stays in the
  outputs and the bundle). Needs LoadGen and at least 1024 images.

Both time only ``backend.run`` on tensors already in memory: decoding and
preprocessing happened before, as in MLPerf's sample library.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packager.harness.backends.base import Backend
from packager.harness.config import SUBMISSION_PERFORMANCE_SAMPLES
from packager.harness.errors import BackendUnavailable, ConfigError, DatasetError
from packager import querylog
from packager.mllog import read_detail
from packager.results import LatencyStats, Measurement, MultiStreamStats, ThroughputStats

log = logging.getLogger(__name__)

ACCURACY_SET = 512  # tensors held in memory at once during the accuracy pass (about 300 MB at 224x224)

# Runs one batch of the accuracy pass (sample positions, their tensors) and returns top-1 per sample.
RunBatch = Callable[[Sequence[int], np.ndarray], np.ndarray]


# --- submission mode: MLPerf's own settings ----------------------------------------------

# mlperf.conf's name for the closed image-classification benchmark (the checker maps it to "resnet").
MLPERF_MODEL = "resnet50"
# What mlperf.conf (v6.1, built into LoadGen 6.0.17) requires of resnet50; checked again in the export.
SUBMISSION_MIN_DURATION_MS = 600_000
# The v6.1 round's seeds (mlperf.conf "*.*.*_rng_seed", and the checker's MODEL_CONFIG["v6.1"]["seeds"]).
# LoadGen reads seeds only from its built-in mlperf.conf; a run whose settings carry others is refused.
OFFICIAL_SEEDS = {
    "qsl_rng_seed": 2085463073848966840,
    "sample_index_rng_seed": 2747215439041700203,
    "schedule_rng_seed": 16159082839903944936,
}
# LoadGen 6.0.17 compiles mlperf.conf in (no file in the wheel); its version record lists the file's git blob id.
# That blob is loadgen/mlperf.conf of mlcommons/inference at 6.0.17 (d6147c7e, seeds of "Add random seeds for
# v6.1", b0662794), sha256 below; tests/unit/test_harness_scenarios.py finds the id in the installed library.
MLPERF_CONF_GIT_BLOB = "68cdba8667e971c3ae8f1617ba67fa56d01065b4"
MLPERF_CONF_SHA256 = "f6fe8510fde70f3d2b897f387c4c1397045bd028bb408a9c9eb808b3a4cbe75c"
USER_CONF = "user.conf"
MULTISTREAM_SAMPLES_PER_QUERY = 8  # mlperf.conf (v6.1): *.MultiStream.samples_per_query = 8


@dataclass(frozen=True)
class ScenarioSettings:
    warmup: int = 10
    min_duration_s: float = 0.0
    single_stream_queries: int = 256
    offline_min_samples: int = 512
    mode: str = "quick"
    multistream_queries: int = 662
    # Extra user.conf lines ("key = value"), for tests only: a shorter minimum duration makes a
    # submission-mode run fit a test suite; the export reads the effective values back and flags it.
    user_conf_overrides: tuple[str, ...] = ()

    @property
    def submission(self) -> bool:
        return self.mode == "submission"

    @classmethod
    def from_config(cls, cfg) -> "ScenarioSettings":
        """From a ``HarnessConfig`` (not imported here: config imports this module's neighbours)."""
        return cls(cfg.warmup, cfg.min_duration_s, cfg.single_stream_queries, cfg.offline_min_samples,
                   mode=cfg.mode, multistream_queries=cfg.multistream_queries,
                   user_conf_overrides=tuple(cfg.user_conf_overrides))


def check_data_set(mode: str, count: int, where: str) -> None:
    """Submission mode refuses a data set smaller than one performance sample set, in one line."""
    if mode == "submission" and count < SUBMISSION_PERFORMANCE_SAMPLES:
        raise DatasetError(
            f"submission mode needs at least {SUBMISSION_PERFORMANCE_SAMPLES} images (MLPerf's performance sample "
            f"count for {MLPERF_MODEL}); the data set has {count}: use --mode quick or a larger data set", file=where)


def measurement_for(settings: ScenarioSettings, driver, execution: str) -> Measurement:
    """The class a run's numbers belong to, for the signed result."""
    return Measurement(mode=settings.mode, execution=execution,  # type: ignore[arg-type]
                       driver="loadgen" if isinstance(driver, LoadGenDriver) else "builtin")


def latency_stats(latencies_s: np.ndarray, **extra) -> LatencyStats:
    lat = np.asarray(latencies_s, dtype=np.float64)
    return LatencyStats(
        count=int(lat.size),
        mean_s=float(lat.mean()),
        p50_s=float(np.percentile(lat, 50)),
        p90_s=float(np.percentile(lat, 90)),
        p99_s=float(np.percentile(lat, 99)),
        min_s=float(lat.min()),
        max_s=float(lat.max()),
        **extra,
    )


def _batches(tensors: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Contiguous batches cycled from the in-memory sample set, built before timing starts.

    Views of the set, not copies: only the one batch that wraps around the end is gathered. A
    copy per batch held a second performance set in memory (about 300 MB for 512 images)."""
    n = len(tensors)
    count = max(1, -(-n // batch_size))
    out = []
    for b in range(count):
        start = b * batch_size
        if start + batch_size <= n:
            out.append(tensors[start : start + batch_size])
        else:
            out.append(np.ascontiguousarray(tensors[[(start + i) % n for i in range(batch_size)]]))
    return out


class BuiltinDriver:
    def __init__(self, reason: str) -> None:
        self.name = f"builtin ({reason})"

    def single_stream(self, backend: Backend, tensors: np.ndarray, s: ScenarioSettings) -> LatencyStats:
        singles = [np.ascontiguousarray(t[None]) for t in tensors]
        for i in range(s.warmup):
            backend.run(singles[i % len(singles)])
        lat: list[float] = []
        start = time.perf_counter()
        i = 0
        clock = time.perf_counter_ns
        while i < s.single_stream_queries or time.perf_counter() - start < s.min_duration_s:
            x = singles[i % len(singles)]
            t0 = clock()
            backend.run(x)
            lat.append((clock() - t0) * 1e-9)
            i += 1
        return latency_stats(np.array(lat))

    def offline(self, backend: Backend, tensors: np.ndarray, batch_size: int, s: ScenarioSettings) -> ThroughputStats:
        batches = _batches(tensors, batch_size)
        for i in range(max(1, s.warmup // batch_size)):
            backend.run(batches[i % len(batches)])
        done = 0
        i = 0
        t0 = time.perf_counter()
        while done < s.offline_min_samples or time.perf_counter() - t0 < s.min_duration_s:
            backend.run(batches[i % len(batches)])
            done += batch_size
            i += 1
        dt = time.perf_counter() - t0
        return ThroughputStats(batch_size=batch_size, samples=done, duration_s=dt, images_per_s=done / dt)

    def multi_stream(self, backend: Backend, tensors: np.ndarray, batch_size: int, s: ScenarioSettings) -> MultiStreamStats:
        raise BackendUnavailable(f"MultiStream needs MLPerf LoadGen (its per-query records and early-stopping estimate); "
                                 f"this run has the {self.name} driver: drop MultiStream from run.scenarios")

    def accuracy(self, n: int, load: Callable[[int], np.ndarray], run_batch: RunBatch, batch_size: int) -> None:
        for k in range(0, n, batch_size):
            idx = list(range(k, min(n, k + batch_size)))
            run_batch(idx, np.stack([load(i) for i in idx]))


class LoadGenDriver:
    def __init__(self, lg, version: str, log_root: Path, settings: ScenarioSettings = ScenarioSettings()) -> None:
        self._lg = lg
        self.name = f"mlperf-loadgen {version}"
        self.log_root = Path(log_root)
        self.log_files: list[str] = []
        self.settings = settings

    def _test_settings(self, scenario: str, subdir: str, user_lines: Sequence[str]):
        """Quick mode: a blank ``TestSettings``. Submission mode: mlperf.conf, then this run's user.conf.

        ``FromConfig(path, model, scenario)`` (conf_type 1) does exactly these two reads, but counts its
        calls in a process-wide static and logs "Multiple conf files are used" as an *error* into the
        next test's detail log from the second call on; a harness runs up to four tests in one process.
        So: conf_type 0 (only the built-in mlperf.conf; the only place seeds are read from), then
        conf_type 2 (only the user.conf file, no count).
        """
        lg = self._lg
        ts = lg.TestSettings()
        if not self.settings.submission:
            return ts
        out = self.log_root / subdir
        out.mkdir(parents=True, exist_ok=True)
        conf = out / USER_CONF
        lines = ["# Written by the request-pack harness for this run (submission mode); LoadGen read it after its\n",
                 "# built-in mlperf.conf (LoadGen 6.0.17: the v6.1 round's).\n",
                 *(f"{line}\n" for line in user_lines)]
        if self.settings.user_conf_overrides:
            lines.append("# TEST-ONLY overrides (--user-conf-override): this run does NOT meet MLPerf's rules.\n")
            lines += [f"{line}\n" for line in self.settings.user_conf_overrides]
        conf.write_text("".join(lines), encoding="utf-8")
        if ts.FromConfig("", MLPERF_MODEL, scenario, 0) != 0:
            raise BackendUnavailable(f"LoadGen could not read its built-in mlperf.conf for {MLPERF_MODEL}.{scenario}")
        if ts.FromConfig(str(conf), MLPERF_MODEL, scenario, 2) != 0:
            raise ConfigError("LoadGen rejected this user.conf (a line is not 'key = number')", file=conf)
        seeds = {k: getattr(ts, k) for k in OFFICIAL_SEEDS}
        if seeds != OFFICIAL_SEEDS:
            raise BackendUnavailable(f"LoadGen's built-in mlperf.conf gives seeds {seeds}, not the v6.1 round's "
                                     f"{OFFICIAL_SEEDS}: this LoadGen is not 6.0.17")
        return ts

    def _start(self, sut, qsl, settings, subdir: str, trace: bool = False) -> dict:
        lg = self._lg
        out = self.log_root / subdir
        out.mkdir(parents=True, exist_ok=True)
        lo = lg.LogOutputSettings()
        lo.outdir = str(out)
        lo.copy_summary_to_stdout = False
        ls = lg.LogSettings()
        ls.log_output = lo
        ls.enable_trace = trace
        lg.StartTestWithLogSettings(sut, qsl, settings, ls)
        if trace:
            _queries_from_trace(out)
        for f in sorted(out.iterdir()):
            self.log_files.append(str(f.relative_to(self.log_root.parent)))
        return read_detail(out / "mlperf_log_detail.txt")

    def _qsl(self, n: int):
        return self._lg.ConstructQSL(n, n, lambda idx: None, lambda idx: None)

    def single_stream(self, backend: Backend, tensors: np.ndarray, s: ScenarioSettings) -> LatencyStats:
        lg = self._lg
        singles = [np.ascontiguousarray(t[None]) for t in tensors]
        for i in range(s.warmup):
            backend.run(singles[i % len(singles)])
        t0 = time.perf_counter()
        backend.run(singles[0])
        expected_ns = max(1, int((time.perf_counter() - t0) * 1e9))

        def issue(queries):
            for q in queries:
                backend.run(singles[q.index])
                lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0)])

        settings = self._test_settings("SingleStream", "SingleStream",
                                       [f"{MLPERF_MODEL}.SingleStream.target_latency = {expected_ns / 1e6:.6f}"])
        settings.scenario = lg.TestScenario.SingleStream
        settings.mode = lg.TestMode.PerformanceOnly
        if not s.submission:
            settings.single_stream_expected_latency_ns = expected_ns
            settings.min_query_count = s.single_stream_queries
            settings.min_duration_ms = int(s.min_duration_s * 1000)
            settings.performance_sample_count_override = len(singles)
        sut = lg.ConstructSUT(issue, lambda: None)
        qsl = self._qsl(len(singles))
        try:
            d = self._start(sut, qsl, settings, "SingleStream")
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        ns = 1e-9
        es = d.get("early_stopping_result", "")
        return LatencyStats(
            count=int(d["result_query_count"]),
            mean_s=d["result_mean_latency_ns"] * ns,
            p50_s=d["result_50.00_percentile_latency_ns"] * ns,
            p90_s=d["result_90.00_percentile_latency_ns"] * ns,
            p99_s=d["result_99.00_percentile_latency_ns"] * ns,
            min_s=d["result_min_latency_ns"] * ns,
            max_s=d["result_max_latency_ns"] * ns,
            early_stopping_p90_s=_early(es, "90.0"),
            early_stopping_p99_s=_early(es, "99.0"),
        )

    def multi_stream(self, backend: Backend, tensors: np.ndarray, batch_size: int, s: ScenarioSettings) -> MultiStreamStats:
        """Queries of 8 samples, each run as one batch of 8 (``batch_size`` 8) or sample by sample (1)."""
        lg = self._lg
        spq = MULTISTREAM_SAMPLES_PER_QUERY
        singles = [np.ascontiguousarray(t[None]) for t in tensors] if batch_size == 1 else []
        buf = np.empty((spq,) + tensors.shape[1:], dtype=tensors.dtype)

        def run_query(idx: Sequence[int]) -> None:
            if batch_size == 1:
                for i in idx:
                    backend.run(singles[i])
            else:
                np.take(tensors, list(idx), axis=0, out=buf[: len(idx)], mode="clip")
                backend.run(buf)

        first = [k % len(tensors) for k in range(spq)]
        for _ in range(max(1, s.warmup // spq)):
            run_query(first)
        t0 = time.perf_counter()
        run_query(first)
        expected_ns = max(1, int((time.perf_counter() - t0) * 1e9))

        def issue(queries):
            run_query([q.index for q in queries])
            lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in queries])

        settings = self._test_settings("MultiStream", "MultiStream",
                                       [f"{MLPERF_MODEL}.MultiStream.target_latency = {expected_ns / 1e6:.6f}"])
        settings.scenario = lg.TestScenario.MultiStream
        settings.mode = lg.TestMode.PerformanceOnly
        if not s.submission:
            settings.multi_stream_expected_latency_ns = expected_ns
            settings.multi_stream_samples_per_query = spq
            settings.min_query_count = s.multistream_queries
            settings.min_duration_ms = int(s.min_duration_s * 1000)
            settings.performance_sample_count_override = len(tensors)
        sut = lg.ConstructSUT(issue, lambda: None)
        qsl = self._qsl(len(tensors))
        try:
            d = self._start(sut, qsl, settings, "MultiStream", trace=True)
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        ns = 1e-9
        return MultiStreamStats(
            samples_per_query=int(d["effective_samples_per_query"]),
            batch_size=batch_size,
            count=int(d["result_query_count"]),
            mean_s=d["result_mean_query_latency_ns"] * ns,
            p50_s=d["result_50.00_percentile_per_query_latency_ns"] * ns,
            p90_s=d["result_90.00_percentile_per_query_latency_ns"] * ns,
            p99_s=d["result_99.00_percentile_per_query_latency_ns"] * ns,
            min_s=d["result_min_query_latency_ns"] * ns,
            max_s=d["result_max_query_latency_ns"] * ns,
            early_stopping_p99_s=d["early_stopping_latency_ms"] * ns if d.get("early_stopping_met") else None,
            queries=str((self.log_root / "MultiStream" / querylog.QUERIES_NAME).relative_to(self.log_root.parent)),
        )

    def offline(self, backend: Backend, tensors: np.ndarray, batch_size: int, s: ScenarioSettings) -> ThroughputStats:
        lg = self._lg
        n = len(tensors)
        batches = _batches(tensors, batch_size)
        for i in range(max(1, s.warmup // batch_size)):
            backend.run(batches[i % len(batches)])
        t0 = time.perf_counter()
        backend.run(batches[0])
        qps = batch_size / max(time.perf_counter() - t0, 1e-6)
        # Rearranged in place (and put back afterwards): a copy in LoadGen's order would hold the set twice.
        full = tensors if tensors.flags.c_contiguous and tensors.flags.writeable else np.array(tensors)
        # One reused gather buffer: a fresh 19 MB array per batch costs page faults, not just a copy.
        buf = np.empty((batch_size,) + full.shape[1:], dtype=full.dtype)
        stage = _Staging(full, batch_size)

        def issue(queries):
            # Offline hands over every sample at once, in LoadGen's order; run them in batches.
            for k in range(0, len(queries), batch_size):
                chunk = queries[k : k + batch_size]
                backend.run(stage.batch([q.index for q in chunk], buf))
                lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in chunk])

        settings = self._test_settings("Offline", f"Offline-b{batch_size}",
                                       [f"{MLPERF_MODEL}.Offline.target_qps = {qps:.3f}"])
        settings.scenario = lg.TestScenario.Offline
        settings.mode = lg.TestMode.PerformanceOnly
        if not s.submission:
            # Offline issues one query of max(min_query_count, 1.1 x expected QPS x min duration) samples.
            settings.offline_expected_qps = qps
            settings.min_query_count = s.offline_min_samples
            settings.min_duration_ms = int(s.min_duration_s * 1000)
            settings.performance_sample_count_override = n
        sut = lg.ConstructSUT(issue, lambda: None)
        qsl = self._lg.ConstructQSL(n, n, stage.load, lambda idx: None)
        try:
            d = self._start(sut, qsl, settings, f"Offline-b{batch_size}")
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
            stage.restore()
        samples = int(d["generated_samples_per_query"]) * int(d["result_query_count"])
        ips = float(d["result_samples_per_second"])
        return ThroughputStats(batch_size=batch_size, samples=samples, duration_s=samples / ips if ips else 0.0, images_per_s=ips)


    def accuracy(self, n: int, load: Callable[[int], np.ndarray], run_batch: RunBatch, batch_size: int) -> None:
        """LoadGen's AccuracyOnly mode (Offline): every sample once, top-1 class as the response.

        ``mlperf_log_accuracy.json`` then holds each sample's top-1 (int64) by
        ``qsl_idx``; ``qsl_ids.tsv`` beside it maps those indices to sample ids.
        Samples are loaded (from the tensor cache) in LoadGen's sets of at most
        ``ACCURACY_SET`` tensors, which bounds memory on the full validation set.
        """
        lg = self._lg
        store: dict[int, np.ndarray] = {}

        def load_samples(idxs):
            for i in idxs:
                store[i] = load(i)

        def unload_samples(idxs):
            for i in idxs:
                store.pop(i, None)

        def issue(queries):
            qs = sorted(queries, key=lambda q: q.index)  # deterministic batches within LoadGen's set
            for k in range(0, len(qs), batch_size):
                chunk = qs[k : k + batch_size]
                idx = [q.index for q in chunk]
                top1 = np.ascontiguousarray(run_batch(idx, np.stack([store[i] for i in idx])), dtype=np.int64)
                base = top1.ctypes.data
                lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, base + 8 * j, 8) for j, q in enumerate(chunk)])

        # mlperf.conf's performance_sample_count_override (1024) must not exceed the QSL's set size.
        held = min(n, SUBMISSION_PERFORMANCE_SAMPLES if self.settings.submission else ACCURACY_SET)
        settings = self._test_settings("Offline", "Accuracy", [f"{MLPERF_MODEL}.Offline.target_qps = 1.0"])
        settings.scenario = lg.TestScenario.Offline
        settings.mode = lg.TestMode.AccuracyOnly
        if not self.settings.submission:
            settings.offline_expected_qps = 1.0
            settings.performance_sample_count_override = held
        sut = lg.ConstructSUT(issue, lambda: None)
        qsl = lg.ConstructQSL(n, held, load_samples, unload_samples)
        try:
            self._start(sut, qsl, settings, "Accuracy")
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)


class _Staging:
    """The performance set laid out in LoadGen's load order, so Offline batches are slices, not gathers.

    LoadGen loads its performance set (QSL ``LoadSamplesToRam``, before the timed
    window opens) in the very order its Offline query then repeats. Putting the
    tensors in that order makes every full batch of that query a contiguous view:
    no 19 MB gather per batch inside the timed window (about 1.2 ms of 220 ms here).
    This is the sample library's job in MLPerf terms, done in its untimed load phase.

    The set is rearranged **in place**, cycle by cycle through one row of scratch, and
    ``restore`` puts it back in sample order: a rearranged copy held a second
    performance set in memory (about 300 MB for 512 images at 224x224, 600 MB for a
    submission run's 1024). A batch in any other order, or the one per pass that wraps
    from the end of the order to its start, is gathered into the caller's buffer.
    """

    def __init__(self, full: np.ndarray, batch_size: int) -> None:
        n = len(full)
        self._full = full
        self._b = batch_size
        self._at = np.arange(n)  # which sample each position holds
        self._pos = np.arange(n)  # at which position each sample is

    def load(self, idxs) -> None:
        order = np.asarray(list(idxs), dtype=np.int64)
        n = len(self._full)
        # Only a permutation of the whole set can be laid out in place; anything else is gathered.
        if order.size == n and np.array_equal(np.sort(order), np.arange(n)):
            self._arrange(order)

    def restore(self) -> None:
        self._arrange(np.arange(len(self._full)))

    def _arrange(self, target: np.ndarray) -> None:
        """Position p gets sample target[p]: follow each cycle of the permutation, one saved row per cycle."""
        arr, n = self._full, len(self._full)
        src = self._pos[target]  # where each wanted sample is now
        done = np.zeros(n, dtype=bool)
        row = np.empty_like(arr[0]) if n else None
        for s in range(n):
            if done[s] or src[s] == s:
                continue
            row[...] = arr[s]
            j = s
            while True:
                done[j] = True
                k = int(src[j])
                if k == s:
                    arr[j] = row
                    break
                arr[j] = arr[k]
                j = k
        self._at = target.copy()
        self._pos[target] = np.arange(n)

    def view(self, idx: Sequence[int]) -> np.ndarray | None:
        """The samples ``idx`` as a slice of the set, if they lie there in that order."""
        if not len(idx):
            return None
        p = int(self._pos[idx[0]])
        if p + len(idx) > len(self._full) or not np.array_equal(self._at[p : p + len(idx)], idx):
            return None
        return self._full[p : p + len(idx)]

    def batch(self, idx: Sequence[int], buf: np.ndarray) -> np.ndarray:
        """A full batch's view, else the samples gathered into ``buf`` (a short last batch padded with its first)."""
        if len(idx) == len(buf):
            v = self.view(idx)
            if v is not None:
                return v
        # mode="raise" (the default) routes `out` through a fresh temporary of the batch's size
        # (7 ms instead of 1 ms at 32x3x224x224 here); LoadGen's indices are always in range.
        np.take(self._full, self._pos[list(idx)], axis=0, out=buf[: len(idx)], mode="clip")
        buf[len(idx) :] = buf[0]  # a short last batch keeps the batch shape fixed
        return buf


def _queries_from_trace(out: Path) -> None:
    """LoadGen's trace -> queries.tsv, checked against LoadGen's own figures; the trace is then emptied.

    The records must give back exactly what LoadGen logged (count, mean, percentiles, early stopping),
    or the run fails here: a verifier recomputes the signed figures from them."""
    trace, detail = out / "mlperf_log_trace.json", read_detail(out / "mlperf_log_detail.txt")
    try:
        latencies = querylog.from_trace(trace)
        differ = querylog.differences(latencies, detail)
    except querylog.QueryLogError as e:
        raise BackendUnavailable(f"LoadGen's MultiStream trace cannot be read: {e}") from None
    if differ:
        raise BackendUnavailable(f"{trace}: the per-query records do not give LoadGen's figures: {differ}")
    querylog.write(out / querylog.QUERIES_NAME, latencies)
    trace.write_bytes(b"")  # as LoadGen leaves it with tracing off: queries.tsv holds what it had for the figures


def _early(text: str, pct: str) -> float | None:
    m = re.search(rf"Early stopping {re.escape(pct)}th percentile estimate: (\d+)", text)
    return int(m.group(1)) * 1e-9 if m else None


def choose_driver(prefer: str, log_root: Path, settings: ScenarioSettings = ScenarioSettings()):
    """LoadGen when importable (unless 'builtin' is asked for); otherwise the built-in loop and why.

    Submission mode has no fallback: an MLPerf run is a LoadGen run.
    """
    if prefer == "builtin":
        if settings.submission:
            raise ConfigError("submission mode needs MLPerf LoadGen; --driver builtin is for quick mode", field="--driver")
        return BuiltinDriver("requested with --driver builtin")
    try:
        import mlperf_loadgen as lg
    except ImportError as e:
        if settings.submission:
            raise BackendUnavailable(f"submission mode needs MLPerf LoadGen: mlperf_loadgen not importable: {e}") from e
        return BuiltinDriver(f"mlperf_loadgen not importable: {e}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("mlcommons-loadgen")
    except PackageNotFoundError:
        v = "unknown"
    return LoadGenDriver(lg, v, log_root, settings)
