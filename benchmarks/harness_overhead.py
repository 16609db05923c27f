"""Harness overhead: its scenarios against a bare ``InferenceSession.run`` loop on the same tensors.

Both sides use one onnxruntime configuration (same threads, same providers)
and the same preprocessed tensors in memory. Runs are interleaved (bare,
harness, harness, bare, ...) so that drift on a shared machine hits both sides
alike; the medians over rounds are compared. Goals: Offline throughput ratio
>= 0.97 and SingleStream p50 within 3 %.

    python benchmarks/harness_overhead.py --model efficientnet-lite0.onnx --rounds 5
    python benchmarks/harness_overhead.py            # the tiny test net, for a quick look

The load average is printed first: on a busy machine the ratios are noise.
"""

from __future__ import annotations

import argparse
import json
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
from packager.harness.preprocess import PreprocessParams, default_cache_dir, load_batch, preprocess_all  # noqa: E402
from packager.harness.scenarios import ScenarioSettings, choose_driver  # noqa: E402


def bare_single_stream(sess, name: str, singles: list[np.ndarray], queries: int, warmup: int) -> float:
    for i in range(warmup):
        sess.run(None, {name: singles[i % len(singles)]})
    lat = []
    for i in range(queries):
        x = singles[i % len(singles)]
        t0 = time.perf_counter_ns()
        sess.run(None, {name: x})
        lat.append(time.perf_counter_ns() - t0)
    return float(np.percentile(np.array(lat) * 1e-9, 50))


def bare_offline(sess, name: str, batches: list[np.ndarray], samples: int, warmup: int) -> float:
    bs = len(batches[0])
    for i in range(max(1, warmup // bs)):
        sess.run(None, {name: batches[i % len(batches)]})
    done = 0
    i = 0
    t0 = time.perf_counter()
    while done < samples:
        sess.run(None, {name: batches[i % len(batches)]})
        done += bs
        i += 1
    return done / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="ONNX model (default: the tiny fixed-seed test net)")
    ap.add_argument("--config", type=Path, help="manifest JSON for the preprocessing (default: ImageNet mean/std)")
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "data" / "imagenet-sample")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--queries", type=int, default=200, help="SingleStream queries per round")
    ap.add_argument("--samples", type=int, default=320, help="Offline samples per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--driver", choices=["auto", "builtin"], default="auto")
    args = ap.parse_args()

    import onnxruntime as ort

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {len(os.sched_getaffinity(0))} cores"
          + ("  (busy machine: expect noisy ratios)" if load[0] > 1.0 else ""))
    tmp = tempfile.TemporaryDirectory()
    model = args.model
    if model is None:
        from packager.harness.tinynet import build

        model = build(Path(tmp.name) / "tiny.onnx")
    pre = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    if args.config:
        pre = json.loads(args.config.read_text())["preprocessing"]
    params = PreprocessParams.from_mapping(pre)
    samples = load_dataset(DatasetSpec(root=args.dataset), count=args.images)
    tensors = load_batch(preprocess_all([s.path for s in samples], params, default_cache_dir()))

    backend = create("onnxruntime")
    backend.load(model, BackendOptions(threads=args.threads))
    driver = choose_driver(args.driver, Path(tmp.name) / "loadgen")
    settings = ScenarioSettings(warmup=10, min_duration_s=0.0, single_stream_queries=args.queries, offline_min_samples=args.samples)

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    singles = [np.ascontiguousarray(t[None]) for t in tensors]
    batches = [np.ascontiguousarray(tensors[(np.arange(args.batch) + k) % len(tensors)]) for k in range(0, len(tensors), args.batch)]

    print(f"model {model.name}, {len(tensors)} tensors, batch {args.batch}, {args.rounds} interleaved rounds, driver: {driver.name}")
    res: dict[str, list[float]] = {"bare_p50": [], "harness_p50": [], "bare_ips": [], "harness_ips": []}
    for r in range(args.rounds):
        order = ["bare", "harness"] if r % 2 == 0 else ["harness", "bare"]
        for side in order:
            if side == "bare":
                res["bare_p50"].append(bare_single_stream(sess, name, singles, args.queries, 10))
            else:
                res["harness_p50"].append(driver.single_stream(backend, tensors, settings).p50_s)
        for side in reversed(order):
            if side == "bare":
                res["bare_ips"].append(bare_offline(sess, name, batches, args.samples, 10))
            else:
                res["harness_ips"].append(driver.offline(backend, tensors, args.batch, settings).images_per_s)
        print(f"round {r + 1}: p50 bare {res['bare_p50'][-1] * 1e3:.3f} ms harness {res['harness_p50'][-1] * 1e3:.3f} ms; "
              f"b{args.batch} bare {res['bare_ips'][-1]:.1f} harness {res['harness_ips'][-1]:.1f} images/s")
    med = {k: statistics.median(v) for k, v in res.items()}
    # Paired ratios (same round, back to back) cancel slow drift better than a ratio of medians.
    tput = statistics.median(h / b for h, b in zip(res["harness_ips"], res["bare_ips"]))
    p50 = statistics.median(h / b for h, b in zip(res["harness_p50"], res["bare_p50"]))
    spread = max(res["bare_p50"]) / min(res["bare_p50"])
    print(f"SingleStream p50: bare {med['bare_p50'] * 1e3:.3f} ms, harness {med['harness_p50'] * 1e3:.3f} ms (medians); "
          f"median paired ratio {p50:.3f} (goal <= 1.03); bare run-to-run spread {spread:.2f}x")
    print(f"Offline b{args.batch}: bare {med['bare_ips']:.1f}, harness {med['harness_ips']:.1f} images/s (medians); "
          f"median paired ratio {tput:.3f} (goal >= 0.97)")
    ok = tput >= 0.97 and p50 <= 1.03
    print("PASS" if ok else "MISS (see the load average above before drawing conclusions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
