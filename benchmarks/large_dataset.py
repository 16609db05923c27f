"""Large data sets end to end: ``request-pack evaluate`` on generated data sets of distinct images.

For each size (default 10,000 and 50,000) a data set in the ILSVRC2012 validation layout
(``ILSVRC2012_val_NNNNNNNN.JPEG`` + ``val.txt``) is generated from the shared 200-image
sample (``tests/generated_images.py``: crops, noise, re-encoding; every file distinct) and
evaluated with a cold tensor cache (a fresh ``REQUEST_PACK_TENSOR_CACHE``): build check,
functional and full stage, sign, verify. Printed per size:

- wall time of ``request-pack evaluate`` and of its full stage;
- peak RSS of the harness process in the container (its ``metrics.json``; the decoding
  workers are separate processes) and of request-pack itself (``wait4`` on it);
- scratch bytes: the most the sandbox's /tmp tmpfs held, sampled every second through
  the engine while the harness ran; cache bytes: the tensor cache on disk afterwards;
- the ratios of each figure between the largest and the smallest size (flat = ~1, linear =
  the size ratio);
- the full stage's wall time against its lower bound: decoding all images on every core
  plus inference of all images at the accuracy batch size, each measured alone here,
  natively, on a few hundred of the same images.

Accuracy on generated images means nothing (their labels are the source image's; they are
not ImageNet validation images): the benchmark prints it only to show every image was counted.

    python benchmarks/large_dataset.py                   # 10,000 and 50,000
    python benchmarks/large_dataset.py --sizes 10000 --work /var/tmp/large

Needs the example artifact built for linux/amd64 (request-pack build artifacts/efficientnet-lite0
--platform linux/amd64) and about 150 KiB of disk per image for the cache, 45 KiB for the images.
This is a benchmark: it prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

ARTIFACT = ROOT / "artifacts" / "efficientnet-lite0"
SAMPLE = Path(os.environ.get("REQUEST_PACK_SAMPLE", ROOT.parent / "shared" / "data" / "imagenet-sample"))


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class ScratchWatch:
    """The most the harness container's /tmp held, sampled through docker exec every second."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ScratchWatch":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(timeout=10)

    def _run(self) -> None:
        probe = "import os; s = os.statvfs('/tmp'); print((s.f_blocks - s.f_bfree) * s.f_frsize)"
        while not self._stop.wait(1.0):
            ids = subprocess.run(["docker", "ps", "-q", "--filter", "label=request-pack.run"],
                                 capture_output=True, text=True).stdout.split()
            for cid in ids:
                r = subprocess.run(["docker", "exec", cid, "python3", "-c", probe], capture_output=True, text=True)
                if r.returncode == 0 and r.stdout.strip().isdigit():
                    self.peak = max(self.peak, int(r.stdout))


def evaluate(data: Path, out: Path, cache: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True)
    env = {**os.environ, "REQUEST_PACK_TENSOR_CACHE": str(cache)}
    argv = [sys.executable, "-m", "packager.cli", "evaluate", str(ARTIFACT), "--dataset", str(data), "--out", str(out)]
    t0 = time.monotonic()
    with ScratchWatch() as watch, open(out.parent / f"{out.name}.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = (out.parent / f"{out.name}.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"evaluate exited {code}:\n{tail}")
    metrics = json.loads((out / "full" / "metrics.json").read_text())
    run = json.loads((out / "full" / "run.json").read_text())
    return {
        "wall_s": wall, "full_wall_s": run["wall_s"], "request_pack_rss": usage.ru_maxrss * 1024,
        "harness_rss": metrics["footprint"]["peak_rss_bytes"], "scratch": watch.peak, "cache": _du(cache),
        "samples": metrics["accuracy"]["samples"], "top1": metrics["accuracy"]["top1"],
        "dataset": metrics.get("dataset"), "measurement": metrics.get("measurement"),
        "host_power": run.get("host_power"),
    }


def _timed(argv: list[str], log: Path) -> tuple[float, int]:
    """(wall s, peak RSS bytes) of one request-pack command; raises SystemExit when it fails."""
    t0 = time.monotonic()
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[2:4])} failed:\n{log.read_text(errors='replace')[-3000:]}")
    return time.monotonic() - t0, usage.ru_maxrss * 1024


def after_evaluate(out: Path) -> dict:
    """verify, publish (verify-then-publish to a fresh SQLite board) and export --mlperf of the bundle."""
    bundle = next(out.glob("*.bundle.tar.gz"))
    pub = Path.home() / ".config" / "request-pack" / "keys" / "evaluator.pub"
    cli = [sys.executable, "-m", "packager.cli"]
    board = out / "board.db"
    board.unlink(missing_ok=True)
    shutil.rmtree(out / "mlperf", ignore_errors=True)
    r = {}
    r["verify"] = _timed([*cli, "verify", str(bundle), "--trust", str(pub)], out / "verify.log")
    r["publish"] = _timed([*cli, "publish", str(bundle), "--board", f"sqlite:///{board}", "--trust", str(pub)], out / "publish.log")
    r["export"] = _timed([*cli, "export", str(bundle), "--mlperf", "--out", str(out / "mlperf"), "--trust", str(pub)],
                         out / "export.log")
    return r


def lower_bound(data: Path, n: int, probe: int = 300) -> dict:
    """Per-image decode (all cores) and inference (accuracy batch) cost, measured alone, scaled to ``n``."""
    import numpy as np
    import onnxruntime as ort

    from packager.cache import Cache
    from packager.harness.preprocess import PreprocessParams, decode_crop, normalize
    from packager.manifest import load_manifest

    manifest = load_manifest(ARTIFACT)
    params = PreprocessParams.from_mapping(manifest.preprocessing.model_dump(mode="json"))
    files = sorted(data.glob("ILSVRC2012_val_*.JPEG"))[:probe]
    cores = len(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    crops = [decode_crop(f.read_bytes(), params) for f in files]
    decode_one = (time.perf_counter() - t0) / len(files)  # one core
    model = Cache.open().path_of(manifest.model.sha256)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    batch = max(manifest.run.batch_sizes)
    x = normalize(np.stack(crops[:batch]), params)
    sess.run(None, {name: x})
    t0 = time.perf_counter()
    rounds = max(1, probe // batch)
    for _ in range(rounds):
        sess.run(None, {name: x})
    infer_one = (time.perf_counter() - t0) / (rounds * batch)
    return {"decode_s": decode_one * n / cores, "infer_s": infer_one * n, "cores": cores,
            "decode_ms": decode_one * 1e3, "infer_ms": infer_one * 1e3}


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 50_000])
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/request-pack-large"))
    args = ap.parse_args()
    from generated_images import generate

    rows = {}
    for n in args.sizes:
        load_start = os.getloadavg()
        t0 = time.monotonic()
        data = generate(args.work / f"ilsvrc-{n}", n, SAMPLE)
        print(f"[{n}] data set: {_gib(_du(data))} in {data} (generated or reused in {time.monotonic() - t0:.0f} s)", flush=True)
        r = evaluate(data, args.work / f"out-{n}", args.work / f"tensors-{n}")
        r["after"] = after_evaluate(args.work / f"out-{n}")
        r.update(lower_bound(data, n))
        r["load_start"], r["load_end"] = load_start, os.getloadavg()
        rows[n] = r
        (args.work / f"results-{n}.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
        bound = r["decode_s"] + r["infer_s"]
        m = r.get("measurement") or {}
        print(f"[{n}] mode {m.get('mode', '?')}, {m.get('execution', '?')}, driver {m.get('driver', '?')} (quick: the manifest's "
              "short performance runs, not an MLPerf submission); load average (1/5/15 min) "
              f"{'/'.join(f'{x:.1f}' for x in load_start)} at the start, {'/'.join(f'{x:.1f}' for x in r['load_end'])} at the end "
              f"on {os.cpu_count()} CPUs", flush=True)
        print(f"[{n}] evaluate {r['wall_s']:.0f} s (full stage {r['full_wall_s']:.0f} s); peak RSS harness {_gib(r['harness_rss'])}, "
              f"request-pack {_gib(r['request_pack_rss'])}; scratch {r['scratch'] / 1024**2:.1f} MiB, cache {_gib(r['cache'])}", flush=True)
        print(f"[{n}] lower bound {bound:.0f} s = decode {r['decode_s']:.0f} s ({r['decode_ms']:.1f} ms/image on one core, "
              f"{r['cores']} cores) + inference {r['infer_s']:.0f} s ({r['infer_ms']:.2f} ms/image), measured alone just after; "
              f"evaluate / bound {r['wall_s'] / bound:.2f}, full stage / bound {r['full_wall_s'] / bound:.2f} (the bound leaves out "
              "the functional stage, the performance scenarios, signing and start-up)", flush=True)
        hp = r.get("host_power") or {}
        print(f"[{n}] host power: " + (f"{hp.get('mean_w')} W mean, {hp.get('energy_j')} J over {hp.get('window_s')} s ({hp.get('source')})"
                                      if hp.get("energy_j") is not None else f"none — {hp.get('reason', 'not recorded')}"), flush=True)
        print(f"[{n}] " + "; ".join(f"{k} {w:.1f} s, peak RSS {_gib(m)}" for k, (w, m) in r["after"].items()), flush=True)
        print(f"[{n}] {r['samples']} samples counted, layout {r['dataset']}; top-1 {r['top1']:.3f} on GENERATED images "
              "(labels copied from their source images; says nothing about the model)", flush=True)
    # Sizes run earlier (a 50,000 run takes hours here; run sizes one at a time) count for the ratios too.
    for f in sorted(args.work.glob("results-*.json")):
        size = int(f.stem.split("-")[1])
        if size not in rows:
            rows[size] = json.loads(f.read_text())
            print(f"(size {size}: figures from {f}, an earlier run)")
    if len(rows) > 1:
        lo, hi = min(rows), max(rows)
        print(f"ratios {hi} / {lo} (size ratio {hi / lo:.1f}):")
        for key in ("wall_s", "full_wall_s", "harness_rss", "request_pack_rss", "scratch", "cache"):
            a, b = rows[lo][key], rows[hi][key]
            print(f"  {key:18s} {b / a:.2f}" if a else f"  {key:18s} -")
    return 0


if __name__ == "__main__":
    sys.exit(main())
