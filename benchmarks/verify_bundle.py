"""Benchmark: verify a signed bundle with 50,000 predictions (goal <= 2 s).

    python benchmarks/verify_bundle.py [--n 50000] [--repeat 3] [--archive]

Builds the bundle once in a temporary directory (ILSVRC2012-style ids, seeded
predictions, metrics computed from them), signs it, then times
``verify_bundle`` end to end: envelope and signature, hashing every file,
image digests, decoding every prediction, recomputing top-1/top-5, schemas.
Prints the best of ``--repeat`` runs and its ratio to the goal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "unit"))

from _bundle_fixture import make_result_dir  # noqa: E402

from packager.bundle import (  # noqa: E402
    TrustStore,
    generate_keypair,
    pack,
    sign_result_dir,
    verify_bundle,
)

GOAL_S = 2.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="predictions in the bundle")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--archive", action="store_true", help="verify the .tar.gz (includes safe unpacking)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        result = make_result_dir(root / "result", n=args.n)
        pair = generate_keypair(root / "keys")
        sign_result_dir(result, pair.private_path)
        target = pack(result, root / "result.tar.gz") if args.archive else result
        setup = time.perf_counter() - t0
        store = TrustStore.load([pair.public_path])
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            report = verify_bundle(target, store)
            times.append(time.perf_counter() - t)
        assert report.ok and report.accuracy is not None and report.accuracy.samples == args.n
        size = (result / "predictions.jsonl").stat().st_size
        best = min(times)
        print(f"bundle: {args.n} predictions ({size / 1e6:.1f} MB predictions.jsonl), {'archive' if args.archive else 'directory'}; setup {setup:.1f} s")
        print(f"verify: best {best:.3f} s of {len(times)} (all: {', '.join(f'{x:.3f}' for x in times)})")
        print(f"goal {GOAL_S:.1f} s: ratio {best / GOAL_S:.2f} ({'met' if best <= GOAL_S else 'MISSED'})")
        return 0 if best <= GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
