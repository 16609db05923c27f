"""Benchmark: wall time and peak RSS of `verify` and `publish` on every hostile input.

    python benchmarks/hostile.py [--repeat 3] [--only SUBSTRING] [--n 50000]

Builds a genuine signed bundle, then every case of ``tests/unit/_hostile.py``;
runs the real ``request-pack`` console script on each (``validate`` for
manifests), one process at a time, and reads the child's peak RSS from
``resource.getrusage(RUSAGE_CHILDREN)`` (``ru_maxrss`` of the largest child so
far, so each measurement runs in a fresh helper process that forks only it).
Goal on this machine: every case refused (its exit code) in under 2 s and
256 MiB; a genuine ``--n``-prediction bundle verifies in under 2 s (directory and
.tar.gz). Prints per case the worst time and RSS over ``--repeat`` runs and their spread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "unit"))

from _bundle_fixture import make_result_dir  # noqa: E402
from _hostile import CASES, Genuine, gz, tar_of  # noqa: E402

from packager.bundle import generate_keypair, sign_result_dir  # noqa: E402

GOAL_S = 2.0
GOAL_RSS = 256 << 20
_SCRIPT = Path(sys.executable).parent / "request-pack"
BASE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "packager.cli"]

# Run in a fresh interpreter: RUSAGE_CHILDREN's ru_maxrss is the largest child so far,
# so each measured command needs a parent that has had no other child.
_MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"code": r.returncode, "wall": wall, "rss": rss, "stderr": r.stderr[-400:]}))
"""


def measure(argv: list[str], tmp: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True, check=True,
                         env={**os.environ, "TMPDIR": str(tmp), "COLUMNS": "200"})
    return json.loads(out.stdout)


def commands(form: str, target: Path, pub: Path, board: Path) -> dict[str, list[str]]:
    if form == "manifest":
        return {"validate": [*BASE, "validate", str(target)]}
    return {
        "verify": [*BASE, "verify", str(target), "--trust", str(pub)],
        "publish": [*BASE, "publish", str(target), "--board", f"sqlite:///{board}", "--trust", str(pub)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    ap.add_argument("--n", type=int, default=50_000, help="predictions in the genuine large bundle")
    args = ap.parse_args()
    missed = 0
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as tmpdir:
        root = Path(tmpdir)
        pair = generate_keypair(root / "keys")
        small = make_result_dir(root / "genuine", n=40)
        sign_result_dir(small, pair.private_path)
        g = Genuine(small, pair.private_path, pair.public_path)
        scratch = root / "tmp"
        scratch.mkdir()

        # The genuine large bundle: must verify in under GOAL_S.
        large = make_result_dir(root / "large", n=args.n)
        sign_result_dir(large, pair.private_path)
        packed = root / "large.tar.gz"
        packed.write_bytes(gz(tar_of(large)))
        for label, target in (("directory", large), ("archive", packed)):
            runs = [measure(commands("dir", target, pair.public_path, root / "b.db")["verify"], scratch) for _ in range(args.repeat)]
            walls = [r["wall"] for r in runs]
            ok = all(r["code"] == 0 for r in runs) and max(walls) < GOAL_S
            missed += not ok
            print(f"genuine {args.n}-prediction bundle ({label}): verify {min(walls):.2f}-{max(walls):.2f} s, "
                  f"peak RSS {max(r['rss'] for r in runs) / 2**20:.0f} MiB, exit {runs[0]['code']} "
                  f"{'ok' if ok else 'MISSED'}")

        print(f"\n{'case':52} {'cmd':8} {'exit':>4} {'time s (min-max)':>18} {'RSS MiB (max)':>14}")
        worst = {"wall": 0.0, "rss": 0}
        per_group: dict[str, tuple[float, int]] = {}
        cases = [c for c in CASES if args.only in c.name]
        for i, case in enumerate(cases):
            work = root / f"case{i}"
            work.mkdir()
            target = case.make(g, work)
            board = work / "board.db"
            for cmd, argv in commands(case.form, target, pair.public_path, board).items():
                runs = [measure(argv, scratch) for _ in range(args.repeat)]
                walls = [r["wall"] for r in runs]
                rss = max(r["rss"] for r in runs)
                codes = {r["code"] for r in runs}
                ok = codes == {case.code} and max(walls) < GOAL_S and rss < GOAL_RSS
                missed += not ok
                worst = {"wall": max(worst["wall"], max(walls)), "rss": max(worst["rss"], rss)}
                w, r = per_group.get(case.group, (0.0, 0))
                per_group[case.group] = (max(w, max(walls)), max(r, rss))
                flag = "" if ok else f"  MISSED (exit {sorted(codes)}, want {case.code}) {runs[0]['stderr'][-160:]!r}"
                print(f"{case.name[:52]:52} {cmd:8} {runs[0]['code']:>4} {min(walls):8.2f}-{max(walls):<8.2f} "
                      f"{rss / 2**20:>12.0f}{flag}")
            subprocess.run(["rm", "-rf", str(work)], check=False)
        print("\nper class: worst time, worst peak RSS")
        for group, (w, r) in sorted(per_group.items()):
            print(f"  {group:16} {w:6.2f} s {r / 2**20:6.0f} MiB")
        print(f"\n{len(cases)} cases x {args.repeat} runs: worst {worst['wall']:.2f} s, {worst['rss'] / 2**20:.0f} MiB "
              f"(goal < {GOAL_S:.0f} s, < {GOAL_RSS >> 20} MiB); {missed} missed")
    return 1 if missed else 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
