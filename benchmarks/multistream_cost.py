"""What MultiStream adds to a quick-mode run: harness wall time with MultiStream alone vs SingleStream alone.

Steps:

1. the artifact's platform view of its manifest (what the runner passes as request.json) and its
   model from the cache, by the manifest's sha256 (``request-pack fetch`` puts it there);
2. each round runs the real harness (``python -m packager.harness``, this Python: the host
   venv, not the image) twice on the same data set, stage and tensor cache, once with
   ``--scenarios SingleStream`` and once with ``--scenarios MultiStream``, in an order
   rotated every round (the shared machine's load drifts);
3. prints per run the wall time, the load average before it and the harness's own figure
   (SingleStream p50 per image; MultiStream p99 and LoadGen's early-stopping p99 per query of 8),
   then the medians over rounds with their min-max, and the ratio MultiStream/SingleStream wall.

Both runs include the same fixed costs (interpreter, model load, decoding, the accuracy pass);
the difference is the scenario: SingleStream's 256 queries of one image against MultiStream's
662 queries of 8 (mlperf.conf's minimum for the early-stopping p99), 5,296 inferences.

    python benchmarks/multistream_cost.py artifacts/efficientnet-lite0 --stage functional --rounds 2

Measured (this 2-vCPU host shared with five other engineers' jobs; efficientnet-lite0 fp32,
onnxruntime 1.32, host venv, native amd64, LoadGen 6.0.17, quick mode; the 200-image sample,
NOT the ILSVRC2012 validation set), full stage (200 images), 2 rounds, load 4.3-7.7:
SingleStream 27.0 s wall (26.3-27.7; p50 30.4 and 37.5 ms per image), MultiStream 188.9 s
(183.3-194.4; p99 411 and 539 ms per query of 8, early-stopping p99 542 and 728 ms);
MultiStream/SingleStream wall 6.99 (6.97-7.01). Earlier single runs (functional stage, 20
images, load 4.6-7.8) gave MultiStream 51-261 s against 15-36 s: minutes per run here, which is
why no example artifact runs MultiStream in ``make test``.
This is a benchmark: it prints figures and a ratio and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from packager.cache import Cache  # noqa: E402
from packager.manifest import load_manifest  # noqa: E402
from packager.platforms import Platform  # noqa: E402
from packager.results import Metrics  # noqa: E402

SCENARIOS = ("SingleStream", "MultiStream")


def _run(scenario: str, config: Path, model: Path, dataset: Path, stage: str, work: Path) -> dict:
    out = work / f"out-{scenario}"
    load = os.getloadavg()[0]
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "packager.harness", "--config", str(config), "--model", str(model),
                        "--dataset", str(dataset), "--out", str(out), "--cache", str(work / "cache"), "--stage", stage,
                        "--scenarios", scenario], cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"harness failed ({scenario}): {p.stderr[-2000:]}")
    m = Metrics.model_validate_json((out / "metrics.json").read_text())
    if scenario == "SingleStream" and m.latency:
        figure = f"p50 {m.latency.p50_s * 1e3:.1f} ms per image over {m.latency.count} queries"
    else:
        ms = m.multistream
        assert ms is not None
        est = f"{ms.early_stopping_p99_s * 1e3:.1f} ms" if ms.early_stopping_p99_s is not None else "none"
        figure = f"p99 {ms.p99_s * 1e3:.1f} ms (early-stopping {est}) per query of 8 over {ms.count} queries"
    subprocess.run(["rm", "-rf", str(out)], check=False)
    return {"wall": wall, "load": load, "figure": figure, "images": m.accuracy.samples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "data" / "imagenet-sample")
    ap.add_argument("--stage", choices=["functional", "full"], default="functional")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    manifest = load_manifest(args.artifact).for_platform(Platform.native())
    model = Cache.open().object_path(manifest.model.sha256)
    if not model.is_file():
        raise SystemExit(f"{model}: the model is not in the cache; run request-pack fetch {args.artifact}")
    with tempfile.TemporaryDirectory(prefix="multistream-cost-") as tmp:
        work = Path(tmp)
        config = work / "request.json"
        config.write_text(json.dumps(manifest.model_dump(mode="json")))
        walls: dict[str, list[float]] = {s: [] for s in SCENARIOS}
        for r in range(args.rounds):
            order = SCENARIOS if r % 2 == 0 else SCENARIOS[::-1]
            for scenario in order:
                res = _run(scenario, config, model, args.dataset, args.stage, work)
                walls[scenario].append(res["wall"])
                print(f"round {r + 1} {scenario:12} wall {res['wall']:7.1f} s  load {res['load']:4.1f}  "
                      f"{res['images']} images  {res['figure']}", flush=True)
    print(f"\n{manifest.name}, {args.stage} stage on {args.dataset.name} (not the validation set unless it is), quick mode, "
          f"native {Platform.native()}, host Python {sys.version.split()[0]}, {args.rounds} rounds:")
    for s in SCENARIOS:
        w = walls[s]
        print(f"  {s:12} wall median {statistics.median(w):7.1f} s (rounds {min(w):.1f}-{max(w):.1f})")
    ratios = [m / s for m, s in zip(walls["MultiStream"], walls["SingleStream"])]
    print(f"  MultiStream/SingleStream wall: {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f}); "
          f"load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
