"""The MLPerf Inference round ``export --mlperf`` writes for, and the rules it checks a result against.

Constants from MLCommons' submission checker (``tools/submission/submission_checker``
in mlcommons/inference: ``MODEL_CONFIG["v6.1"]``, ``TEST_DURATION_MS``,
``MAX_ACCURACY_LOG_SIZE``) and LoadGen 6.0.17's built-in mlperf.conf. Each rule a
result does not meet is one sentence ending in the checker's rule name in brackets.
"""

from __future__ import annotations

from packager.scoreboard.mlperf_source import Result, loadgen_dir

DIVISION = "open"
CLOSED_BENCHMARK = "resnet"  # the closed image-classification benchmark an open ImageNet entry stands beside
VALIDATION_SET_SIZE = 50_000
ROUND = "v6.1"
CONFORMANCE = "conformance.txt"
# The round's rules this export checks (checker: MODEL_CONFIG["v6.1"], TEST_DURATION_MS, MAX_ACCURACY_LOG_SIZE).
MIN_DURATION_MS = 600_000
MIN_PERFORMANCE_SAMPLES = 1024
OFFICIAL_SEEDS = {"qsl_rng_seed": 2085463073848966840, "sample_index_rng_seed": 2747215439041700203,
                  "schedule_rng_seed": 16159082839903944936}
# truncate_accuracy_log.py: logs of MAX_ACCURACY_LOG_SIZE or more keep their first and last VIEWABLE_SIZE characters.
MAX_ACCURACY_LOG_SIZE = 10 * 1024
VIEWABLE_SIZE = 4096
# mlperf.conf (v6.1): *.MultiStream.samples_per_query = 8; the checker's MODEL_CONFIG["v6.1"] lists MultiStream
# among resnet's scenarios of edge and datacenter,edge systems only, never of a datacenter system.
MULTISTREAM_SAMPLES_PER_QUERY = 8
EDGE_ONLY_SCENARIOS = ("MultiStream",)
ACCURACY_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt", "mlperf_log_accuracy.json")



_USER_CONF_KEYS = {
    "requested_min_query_count": "min_query_count",
    "requested_min_duration_ms": "min_duration",
    "requested_single_stream_expected_latency_ns": "single_stream_expected_latency_ns",
    "requested_multi_stream_expected_latency_ns": "multi_stream_expected_latency_ns",
    "requested_multi_stream_samples_per_query": "multi_stream_samples_per_query",
    "requested_offline_expected_qps": "offline_expected_qps",
    "requested_performance_sample_count_override": "performance_sample_count_override",
}


def user_conf(model: str, scenario: str, detail: dict | None, r: Result) -> str:
    """The user.conf the run wrote (submission mode, kept in the bundle); else what the harness set, read back."""
    if detail is not None:
        written = loadgen_dir(r, scenario) / "user.conf"
        if written.is_file():
            return written.read_text(encoding="utf-8")
    if detail is None:
        m = r.metrics
        counts = (f"{m.latency.count} queries" if scenario == "SingleStream" and m.latency
                  else ", ".join(f"batch {t.batch_size}: {t.samples} samples" for t in m.throughput))
        return (f"# No MLPerf LoadGen ran ({m.driver}), so no LoadGen setting applied.\n"
                f"# The built-in timing loop ran {counts} of {scenario} after the warm-up.\n")
    lines = ["# Quick mode: no user.conf was read. The LoadGen TestSettings the harness set for this run, read back\n",
             "# from its mlperf_log_detail.txt:\n"]
    for key, name in _USER_CONF_KEYS.items():
        if key in detail:
            lines.append(f"{model}.{scenario}.{name} = {detail[key]}\n")
    return "".join(lines)


def truncated_accuracy_log(text: str) -> str:
    """What truncate_accuracy_log.py leaves of mlperf_log_accuracy.json: the first and last 4096 characters."""
    if len(text.encode("utf-8")) < VIEWABLE_SIZE:
        return text
    return text[:VIEWABLE_SIZE] + "\n\n...\n\n" + text[-VIEWABLE_SIZE:]


def nonconformities(r: Result, scenario: str, perf: dict | None, acc: dict | None, conf: str,
                    system_type: str = "edge") -> list[str]:
    """The v6.1 rules this scenario's result does not meet, each as one sentence (checker rule in brackets)."""
    m = r.metrics
    out: list[str] = []
    if scenario in EDGE_ONLY_SCENARIOS and "edge" not in system_type:
        out.append(f"{scenario} is an edge scenario: {ROUND} lists it for edge systems only, this one is "
                   f"{system_type} [required-scenarios-edge]")
    mode = m.measurement.mode if m.measurement else "quick"
    if mode != "submission":
        out.append("quick-mode run: LoadGen's settings were set by the harness, not read from mlperf.conf and a "
                   "user.conf; not an MLPerf submission")
    if m.measurement and m.measurement.execution == "emulated":
        out.append(f"emulated run ({m.platform} under QEMU): its performance describes the emulator, not the platform")
    if perf is None:
        out.append("no LoadGen performance log (built-in driver) [performance checks]")
    else:
        seeds = {k: perf.get(f"effective_{k}") for k in OFFICIAL_SEEDS}
        if seeds != OFFICIAL_SEEDS:
            out.append(f"performance run seeds {seeds} are not the {ROUND} round's [seeds_check]")
        if (perf.get("effective_min_duration_ms") or 0) < MIN_DURATION_MS:
            out.append(f"minimum duration {perf.get('effective_min_duration_ms')} ms is under {MIN_DURATION_MS} ms "
                       "[min_duration_check]")
        if (perf.get("effective_performance_sample_count") or 0) < MIN_PERFORMANCE_SAMPLES:
            out.append(f"{perf.get('effective_performance_sample_count')} performance samples, under "
                       f"{MIN_PERFORMANCE_SAMPLES} [performance_sample_count_check]")
        if scenario in ("SingleStream", "MultiStream") and not perf.get("early_stopping_met"):
            out.append("LoadGen's early-stopping condition was not met [latency_check]")
        if scenario == "MultiStream" and perf.get("effective_samples_per_query") != MULTISTREAM_SAMPLES_PER_QUERY:
            out.append(f"{perf.get('effective_samples_per_query')} samples per query, not mlperf.conf's "
                       f"{MULTISTREAM_SAMPLES_PER_QUERY} [samples_per_query]")
        if perf.get("num_errors"):
            out.append(f"the performance log records {perf['num_errors']} LoadGen error(s) [loadgen_errors_check]")
    if acc is not None:
        total = acc.get("effective_accuracy_sample_count") or acc.get("qsl_reported_total_count")
        if total != VALIDATION_SET_SIZE:
            out.append(f"the accuracy run covers {total} images, not the {VALIDATION_SET_SIZE:,} of the ILSVRC2012 "
                       "validation set [dataset_check]")
        if acc.get("num_errors"):
            out.append(f"the accuracy log records {acc['num_errors']} LoadGen error(s) [loadgen_errors_check]")
    elif perf is not None:
        out.append("no LoadGen accuracy log [accuracy_json_check]")
    else:
        out.append(f"accuracy on {r.accuracy.samples} images from predictions.jsonl, without a LoadGen accuracy log "
                   "[accuracy_json_check]")
    if "TEST-ONLY" in conf:
        out.append("user.conf carries test-only overrides of MLPerf's settings")
    return out
