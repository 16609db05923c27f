"""Sweep overhead: ``explore`` over N run-time points against the N evaluations themselves.

What is compared, round by round, on the same artifact, data set and run configs:

- evaluations: ``pipeline.evaluate`` once per run config (the functional stage by default:
  image by digest, sandboxed stage, sign, verify), one after the other, each into a fresh
  directory; the sum of their walls;
- sweep: ``explore.explore`` over a space listing the same run configs, into a fresh sweep
  directory and a fresh board: the same evaluations plus what a sweep adds (the image's digest
  looked up once, the data set's identity, point keys, publish = verify again + board row,
  the sweep group, the journal, the group's frontier).

Sides alternate within a round and the order flips every round (evaluations, sweep | sweep,
evaluations | ...), so drift on a shared machine hits both alike; each round gives a paired
ratio sweep / evaluations, and the median of the ratios is the figure, with their min-max
spread. Because two runs of the same evaluation differ by more than 5 % on a loaded machine, each
sweep is also split in the same process: its wall against the sum of its points' evaluation walls
(``Outcome.wall_s``), the rest being the sweep's own work. Goal: ratio <= 1.05, and zero rebuilds:
the build record of the image is the same
file (inode, mtime) before and after every sweep, every point of every sweep names one image
index digest, and the sweep itself counts no rebuild.

    python benchmarks/explore_overhead.py                       # 2 points (threads 1, 2 at batch 1), 3 rounds
    python benchmarks/explore_overhead.py --threads 1,2,1 --batch 1,1,32 --rounds 5

Builds (once, before round 1, outside every timing) into a private build root. Load averages
are printed before and after: on a busy machine the ratios are noise. Data set: the shared
200-image sample (functional stage: its first 20 images), NOT the ImageNet validation set.
This is a benchmark: it prints figures and ratios and exits 0 whether or not the goal is met.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from packager.explore import Options, explore, parse_space  # noqa: E402
from packager.pipeline import evaluate, image_for  # noqa: E402
from packager.repo import default_sample_dataset  # noqa: E402
from packager.runconfig import RunConfig  # noqa: E402


def _stamp(record: Path) -> tuple[int, int]:
    st = record.stat()
    return st.st_ino, st.st_mtime_ns


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, default=next(
        (a for a in (REPO / "artifacts" / "efficientnet-lite0", REPO / "artifacts" / "efficientnet-lite0-ort")
         if (a / "request.lock").is_file()), None), help="default: the EfficientNet-Lite0 example (onnxruntime on amd64)")
    p.add_argument("--dataset", type=Path, default=None, help="default: the shared 200-image sample")
    p.add_argument("--threads", default="1,2", help="one run config per entry")
    p.add_argument("--batch", default="1,1", help="the Offline batch of each run config")
    p.add_argument("--stage", default="functional", choices=["functional", "full", "all"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--key", type=Path, default=None, help="evaluator key (default: this machine's)")
    args = p.parse_args()
    # SIGTERM unwinds (the runner's finally removes its container) instead of leaving the point's container running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    if len(threads) != len(batches):
        p.error("--threads and --batch need as many entries")
    configs = [RunConfig(threads=t, batch=b) for t, b in zip(threads, batches)]
    dataset = args.dataset or default_sample_dataset()
    space_text = f"stage: {args.stage}\npoints:\n" + "".join(f"  - {{threads: {c.threads}, batch: {c.batch}}}\n" for c in configs)
    space = parse_space(space_text, {"stage": args.stage, "points": [c.as_dict() for c in configs]}, "<benchmark>")

    work = Path(tempfile.mkdtemp(prefix="request-pack-explore-bench-"))
    build_root = work / "build"
    # A private copy: the checkout's artifacts may change while the rounds run (components from the checkout).
    args.artifact = Path(shutil.copytree(args.artifact, work / "artifacts" / args.artifact.name))
    print(f"load average before: {os.getloadavg()}; {len(configs)} point(s): {', '.join(c.label() for c in configs)}; "
          f"stage {args.stage} on {dataset} (200-image sample: not the validation set)")
    t = time.monotonic()
    ref = image_for(args.artifact, build_root=build_root)
    assert ref.record is not None
    print(f"image {ref.index_digest} ready in {time.monotonic() - t:.1f} s (build or cached record, not timed below)")
    stamp = _stamp(ref.record)

    def evaluations(r: int) -> float:
        t0 = time.monotonic()
        for i, rc in enumerate(configs):
            ev = evaluate(args.artifact, dataset, work / f"eval-{r}-{i}", key=args.key, build_root=build_root,
                          stages=args.stage, run_config=rc)
            assert ev.image.index_digest == ref.index_digest, (ev.image.index_digest, ref.index_digest)
        return time.monotonic() - t0

    rebuilds = 0
    digests: set[str] = set()
    inside: list[tuple[float, float]] = []  # (sweep wall, sum of its points' evaluate walls), same process and run

    def sweep(r: int) -> float:
        nonlocal rebuilds
        t0 = time.monotonic()
        result = explore(args.artifact, space, Options(dataset=dataset, out=work / f"sweep-{r}", key=args.key,
                                                       board=f"sqlite:///{work / f'board-{r}.db'}",
                                                       build_root=build_root))
        wall = time.monotonic() - t0
        failed = [o for o in result.outcomes if o.status != "done"]
        assert not failed, failed[0].error
        rebuilds += result.rebuilds
        digests.update(result.image_digests)
        inside.append((wall, sum(o.wall_s for o in result.outcomes)))
        return wall

    rows = []
    for r in range(args.rounds):
        order = (("evaluations", evaluations), ("sweep", sweep))
        walls = {}
        for name, fn in order if r % 2 == 0 else order[::-1]:
            walls[name] = fn(r)
            if _stamp(ref.record) != stamp:
                rebuilds += 1
                stamp = _stamp(ref.record)
        ratio = walls["sweep"] / walls["evaluations"]
        rows.append((walls["evaluations"], walls["sweep"], ratio))
        print(f"round {r + 1}: evaluations {walls['evaluations']:.1f} s, sweep {walls['sweep']:.1f} s, "
              f"ratio {ratio:.3f} ({'evaluations first' if r % 2 == 0 else 'sweep first'})")
    ratios = [x[2] for x in rows]
    med = statistics.median(ratios)
    print(f"load average after: {os.getloadavg()}")
    print(f"evaluations median {statistics.median(x[0] for x in rows):.1f} s, sweep median "
          f"{statistics.median(x[1] for x in rows):.1f} s over {len(configs)} point(s)")
    print(f"sweep / evaluations: median {med:.3f}, spread {min(ratios):.3f}-{max(ratios):.3f} over {len(rows)} rounds "
          f"(goal <= 1.05: {'met' if med <= 1.05 else 'NOT met'})")
    own = [w / e for w, e in inside]
    print(f"within each sweep, sweep wall / its evaluations' walls (the sweep's own work, immune to drift between "
          f"runs): median {statistics.median(own):.4f}, spread {min(own):.4f}-{max(own):.4f}; the sweep's own seconds: "
          + ", ".join(f"{w - e:.2f}" for w, e in inside))
    print(f"rebuilds: {rebuilds} (goal 0); image index digests across every sweep point: {len(digests)} "
          f"({', '.join(sorted(digests))})")
    print(f"work directory (bundles, boards): {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
