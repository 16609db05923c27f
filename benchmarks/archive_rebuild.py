"""Archive size against the image payload, and the offline rebuild time from the archive, printed (not a test).

    python benchmarks/archive_rebuild.py [ARTIFACT...] [--platform P] [--repeat N] [--fresh-bases]

For each artifact (default: every artifacts/*/ with a lock): ``request-pack archive`` (timed),
then N offline rebuilds, each in a fresh cache and a fresh network namespace (``unshare -n``,
needs root): ``fetch --from ARCHIVE`` then ``build --no-load``. Printed: the archive's size
and file count; the image payload the rebuild wrote (compressed layers, and uncompressed),
summed over the built platforms, and the ratio archive / compressed payload; the fetch and
build times of every run (min, median, max) and the load average around them.

The base root filesystems are products of the locked .debs (not inputs): by default they
are shared from the warm cache, as test_archive_offline does; ``--fresh-bases`` makes them
again from the archived .debs (minutes per foreign platform under QEMU). The figures say which.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from packager.cache import Cache  # noqa: E402

CLI = [sys.executable, "-m", "packager.cli"]


def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[3:])} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}")
    return seconds, proc


def _spread(xs: list[float]) -> str:
    return f"min {min(xs):.1f} s, median {statistics.median(xs):.1f} s, max {max(xs):.1f} s (n={len(xs)})"


def bench(artifact: Path, platforms: list[str], repeat: int, fresh_bases: bool, tmp: Path) -> None:
    archive = tmp / f"{artifact.name}.tar"
    secs, proc = _run([*CLI, "archive", str(artifact), "--out", str(archive)])
    size = archive.stat().st_size
    files = proc.stdout.split(" files,")[0].rsplit(", ", 1)[-1] if " files," in proc.stdout else "?"
    print(f"\n== {artifact.name} ==\narchive: {size / 1e6:.1f} MB, {files} files, written in {secs:.1f} s "
          f"(from the warm cache)")
    fetches, builds, loads = [], [], []
    record: dict = {}
    for i in range(repeat):
        cache = tmp / f"cache-{artifact.name}-{i}"
        cache.mkdir()
        if not fresh_bases:
            (cache / "rootfs").symlink_to(Cache.open(None).subdir("rootfs"), target_is_directory=True)
        env = {**os.environ, "REQUEST_PACK_CACHE": str(cache)}
        plat = ["--platform", ",".join(platforms)] if platforms else []
        loads.append(os.getloadavg()[0])
        f, _ = _run(["unshare", "-n", *CLI, "fetch", str(artifact), "--from", str(archive)], env)  # every platform
        out = tmp / f"build-{artifact.name}-{i}"
        b, _ = _run(["unshare", "-n", *CLI, "build", str(artifact), "--no-load", "--out", str(out), *plat], env)
        fetches.append(f)
        builds.append(b)
        record = json.loads(next(out.glob("*/build-record.json")).read_text())
        subprocess.run(["rm", "-rf", str(cache), str(out)], check=True)
    built = record["platforms"]
    payload = sum(p["image_size"] for p in built.values())
    plain = sum(p["uncompressed_size"] for p in built.values())
    print(f"image payload ({', '.join(sorted(built))}; index {record['index_digest'][:19]}…): "
          f"{payload / 1e6:.1f} MB compressed layers, {plain / 1e6:.1f} MB uncompressed")
    print(f"archive / compressed payload: {size / payload:.2f} (the archive holds every platform's inputs, "
          f"sdists and build inputs, and the model's source wheel)")
    bases = "made again from the archived .debs" if fresh_bases else "shared from the warm cache (products, not inputs)"
    print(f"offline rebuild, fresh cache, unshare -n, bases {bases}:")
    print(f"  fetch --from archive (every platform's inputs): {_spread(fetches)}")
    print(f"  build --no-load:      {_spread(builds)}")
    print(f"  total:                {_spread([f + b for f, b in zip(fetches, builds)])}")
    print(f"  load average (1 min) at the start of each run: {', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", nargs="*", type=Path)
    ap.add_argument("--platform", action="append", default=[], help="build only these platforms (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fresh-bases", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: the rebuild runs in a network namespace of its own (unshare -n)")
    artifacts = args.artifacts or sorted(p.parent for p in (ROOT / "artifacts").glob("*/request.lock"))
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        for artifact in artifacts:
            bench(artifact.resolve(), args.platform, args.repeat, args.fresh_bases, Path(tmp))


if __name__ == "__main__":
    main()
