"""What ``harness.tune.frozen_frames_known`` saves: importing TVM's tensor intrinsics, with and without it.

MetaSchedule's first ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``: about 250 TVMScript functions,
each of which calls ``inspect.stack()`` while the import machinery's frozen frames are on the stack, and
for each such frame ``inspect.getmodule`` rescans every loaded module (about 2,000 once TVM is in).
``frozen_frames_known`` names those frames' modules first. Each run is a fresh process (``import tvm``
first, not timed); the two variants alternate, ``--rounds`` times; printed: each run with the load
average before it, each variant's median and min-max, and the ratio with/without per round.

    python benchmarks/tvm_intrinsics_import.py --rounds 3

Measured (this 2-vCPU host shared with other engineers' jobs, load average 3-7, TVM 0.27.0.post1, host
venv, 3 rounds): without 90.1 s (27.4-130.6), with 14.0 s (12.6-31.4); with/without 0.24 per round
(0.155-0.461). The tiny net's whole tuning (cProfile, 8 trials, load 1-2.5): 96 s before, 54 s after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = """
import sys, time
sys.path.insert(0, {repo!r})
import tvm
if sys.argv[1] == "with":
    from packager.harness.tune import frozen_frames_known
    frozen_frames_known()
t = time.monotonic()
import tvm.s_tir.tensor_intrin
print(time.monotonic() - t)
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    code = CODE.format(repo=str(REPO))
    runs: dict[str, list[float]] = {"without": [], "with": []}
    for r in range(args.rounds):
        for variant in runs:
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, "-c", code, variant], capture_output=True, text=True, check=True)
            runs[variant].append(float(out.stdout.split()[-1]))
            print(f"round {r + 1} {variant}: {runs[variant][-1]:.2f} s (load {load:.1f})", flush=True)
    for variant, xs in runs.items():
        print(f"{variant}: median {statistics.median(xs):.2f} s ({min(xs):.2f}-{max(xs):.2f})")
    ratios = [a / b for a, b in zip(runs["with"], runs["without"])]
    print(f"with/without per round: median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
