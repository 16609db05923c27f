"""Harness overhead: its scenario drivers against a bare ``InferenceSession.run`` loop on the same tensors.

What is compared, round by round:

- bare SingleStream: ``session.run`` on one preprocessed image at a time, timed
  around the call (p50 of the per-call latencies);
- harness SingleStream: the harness's driver (LoadGen when importable, else the
  built-in loop) over the same in-memory tensors; LoadGen times from issuing a
  query to ``QuerySamplesComplete``, so its callback and bookkeeping count;
- bare Offline: ``session.run`` on prebuilt contiguous batches, images/s;
- harness Offline: the driver's Offline scenario at the same batch size. With
  LoadGen the figure is LoadGen's own, ``result_samples_per_second`` = samples /
  (latest ``QuerySamplesComplete`` - LoadGen's test start): the window opens
  before LoadGen hands its one Offline query to the harness's callback and so
  includes that dispatch and all the harness's per-batch work (index list, batch
  lookup, 32 responses); it excludes LoadGen's QSL load, where the harness
  stages the performance set in LoadGen's order so that batches are views, not
  gathers, as MLPerf's sample library may. No outputs are post-processed in the
  performance pass.

The bare Offline window (first call to last return) is the harness's window
minus that dispatch and per-batch work. To show where a gap lies, the harness
side also runs through a wrapper that notes when its first ``run`` call starts
and its last returns, printed as "inside run": "LoadGen/inside" is the
harness's and LoadGen's accounting (measured here: about 0.3 ms per test plus
0.2 ms per batch of 220 ms), "inside/bare" is onnxruntime itself, i.e. the
machine's drift between the sides.

Both sides call the very same ``onnxruntime.InferenceSession`` (the harness
backend's), so threads, providers and graph optimisations are equal by
construction and only the harness's own work differs. Sides alternate within
a round and the order flips every round (bare, harness | harness, bare | ...)
so drift on a shared machine hits both alike; each round gives a paired ratio
and the median of those ratios is the figure, with their min-max spread.
Goals: Offline throughput ratio >= 0.97, SingleStream p50 ratio <= 1.03.

    python benchmarks/harness_overhead.py                          # EfficientNet-Lite0 from the cache, if converted
    python benchmarks/harness_overhead.py --model model.onnx --rounds 9
    python benchmarks/harness_overhead.py --tiny                   # the tiny test net, for a quick look

Load averages are printed before and after: on a busy machine the ratios are noise.
This is a benchmark: it prints figures and ratios and exits 0 whether or not the goals are met.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from packager.harness.backends import BackendOptions, create  # noqa: E402
from packager.harness.dataset import DatasetSpec, load_dataset  # noqa: E402
from packager.harness.preprocess import (  # noqa: E402
    PreprocessParams,
    default_cache_dir,
    load_batch,
    preprocess_all,
)
from packager.harness.scenarios import ScenarioSettings, choose_driver  # noqa: E402

DEFAULT_ARTIFACT = REPO / "artifacts" / "efficientnet-lite0"


def bare_single_stream(sess, name: str, singles: list[np.ndarray], queries: int, warmup: int) -> float:
    for i in range(warmup):
        sess.run(None, {name: singles[i % len(singles)]})
    lat = np.empty(queries, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(queries):
        x = singles[i % len(singles)]
        t0 = clock()
        sess.run(None, {name: x})
        lat[i] = clock() - t0
    return float(np.percentile(lat * 1e-9, 50))


def bare_offline(sess, name: str, batches: list[np.ndarray], samples: int, warmup: int) -> float:
    bs = len(batches[0])
    for i in range(max(1, warmup // bs)):
        sess.run(None, {name: batches[i % len(batches)]})
    done = i = 0
    t0 = time.perf_counter()
    while done < samples:
        sess.run(None, {name: batches[i % len(batches)]})
        done += bs
        i += 1
    return done / (time.perf_counter() - t0)


class _Recorder:
    """The harness backend, noting (start, return) of each run call in ``calls``."""

    def __init__(self, backend, calls: list[tuple[float, float]]) -> None:
        self._b = backend
        self._calls = calls

    def run(self, x):
        t0 = time.perf_counter()
        y = self._b.run(x)
        self._calls.append((t0, time.perf_counter()))
        return y


def _load(tag: str) -> str:
    a = os.getloadavg()
    return f"load average {tag}: {a[0]:.2f} {a[1]:.2f} {a[2]:.2f} (1/5/15 min) on {len(os.sched_getaffinity(0))} cores"


def _model_and_preprocessing(args, tmp: Path) -> tuple[Path, dict, str]:
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    if args.tiny:
        from packager.harness.tinynet import build

        return build(tmp / "tiny.onnx"), imagenet, "the tiny test net"
    if args.model is not None and args.artifact is None:
        return args.model, imagenet, str(args.model)
    from packager.cache import Cache
    from packager.manifest import load_manifest

    manifest = load_manifest(args.artifact or DEFAULT_ARTIFACT)
    pre = manifest.preprocessing.model_dump(mode="json")
    if args.model is not None:
        return args.model, pre, f"{args.model} ({manifest.name}'s preprocessing)"
    cache = Cache.open(None)
    if not cache.has(manifest.model.sha256):
        sys.exit(f"{manifest.name}'s model ({manifest.model.sha256[:12]}) is not in the cache: run "
                 f"`request-pack convert {args.artifact or DEFAULT_ARTIFACT}`, or pass --model or --tiny")
    return cache.path_of(manifest.model.sha256), pre, f"{manifest.name} (model {manifest.model.sha256[:12]} from the cache)"


def _spread(ratios: list[float]) -> str:
    return f"median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}, n={len(ratios)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, help=f"artifact whose model and preprocessing to use (default {DEFAULT_ARTIFACT.name})")
    ap.add_argument("--model", type=Path, help="ONNX model file (with --artifact: that artifact's preprocessing)")
    ap.add_argument("--tiny", action="store_true", help="the tiny fixed-seed test net instead")
    sample = os.environ.get("REQUEST_PACK_SAMPLE", REPO.parent / "shared" / "data" / "imagenet-sample")
    ap.add_argument("--dataset", type=Path, default=Path(sample))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--queries", type=int, default=200, help="SingleStream queries per side and round")
    ap.add_argument("--samples", type=int, default=320, help="Offline samples per side and round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--driver", choices=["auto", "builtin"], default="auto")
    args = ap.parse_args()

    print(_load("before"), flush=True)
    tmp = tempfile.TemporaryDirectory()
    model, pre, label = _model_and_preprocessing(args, Path(tmp.name))
    params = PreprocessParams.from_mapping(pre)
    samples = load_dataset(DatasetSpec(root=args.dataset), count=args.images)
    tensors = load_batch(preprocess_all([s.path for s in samples], params, default_cache_dir()))

    backend = create("onnxruntime")
    backend.load(model, BackendOptions(threads=args.threads))
    sess = backend.session  # the bare side calls the harness's own session: same threads, providers, optimisations
    name = sess.get_inputs()[0].name
    driver = choose_driver(args.driver, Path(tmp.name) / "loadgen")
    settings = ScenarioSettings(warmup=10, min_duration_s=0.0, single_stream_queries=args.queries, offline_min_samples=args.samples)
    singles = [np.ascontiguousarray(t[None]) for t in tensors]
    batches = [np.ascontiguousarray(tensors[(np.arange(args.batch) + k) % len(tensors)]) for k in range(0, len(tensors), args.batch)]

    print(f"model: {label}; {len(tensors)} tensors, batch {args.batch}, {args.threads} intra-op threads, "
          f"{args.rounds} interleaved rounds, driver: {driver.name}", flush=True)
    res: dict[str, list[float]] = {"bare_p50": [], "harness_p50": [], "bare_ips": [], "harness_ips": [], "inside_ips": []}
    # Calls the driver makes before its timed window: warm-up, and LoadGen's rate estimate.
    warm = max(1, 10 // args.batch) + (0 if driver.name.startswith("builtin") else 1)
    for r in range(args.rounds):
        order = ("bare", "harness") if r % 2 == 0 else ("harness", "bare")
        for side in order:
            if side == "bare":
                res["bare_p50"].append(bare_single_stream(sess, name, singles, args.queries, 10))
            else:
                res["harness_p50"].append(driver.single_stream(backend, tensors, settings).p50_s)
        for side in order:
            if side == "bare":
                res["bare_ips"].append(bare_offline(sess, name, batches, args.samples, 10))
            else:
                calls: list[tuple[float, float]] = []
                st = driver.offline(_Recorder(backend, calls), tensors, args.batch, settings)
                res["harness_ips"].append(st.images_per_s)
                inside = calls[warm:]
                res["inside_ips"].append(st.samples / (inside[-1][1] - inside[0][0]) if inside else float("nan"))
        print(f"round {r + 1} ({order[0]} first): "
              f"p50 bare {res['bare_p50'][-1] * 1e3:.3f} ms, harness {res['harness_p50'][-1] * 1e3:.3f} ms; "
              f"b{args.batch} bare {res['bare_ips'][-1]:.1f}, harness {res['harness_ips'][-1]:.1f} "
              f"(inside run {res['inside_ips'][-1]:.1f}) images/s; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    print(_load("after"))
    med = {k: statistics.median(v) for k, v in res.items()}
    p50 = [h / b for h, b in zip(res["harness_p50"], res["bare_p50"])]
    tput = [h / b for h, b in zip(res["harness_ips"], res["bare_ips"])]
    bare_spread = max(res["bare_p50"]) / min(res["bare_p50"])
    print(f"SingleStream p50: bare {med['bare_p50'] * 1e3:.3f} ms, harness {med['harness_p50'] * 1e3:.3f} ms (medians over rounds); "
          f"harness/bare per round: {_spread(p50)}; goal <= 1.03: {'met' if statistics.median(p50) <= 1.03 else 'NOT met'}")
    print(f"Offline b{args.batch}: bare {med['bare_ips']:.1f}, harness {med['harness_ips']:.1f} images/s (medians over rounds); "
          f"harness/bare per round: {_spread(tput)}; goal >= 0.97: {'met' if statistics.median(tput) >= 0.97 else 'NOT met'}")
    acct = [h / i for h, i in zip(res["harness_ips"], res["inside_ips"])]
    ort = [i / b for i, b in zip(res["inside_ips"], res["bare_ips"])]
    print(f"Offline split: LoadGen/inside run (harness + LoadGen accounting): {_spread(acct)}; "
          f"inside run/bare (onnxruntime, machine drift): {_spread(ort)}")
    print(f"bare p50 run-to-run spread (max/min over rounds): {bare_spread:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
