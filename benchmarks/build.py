"""Build benchmarks, printed (not a timed test): cold, no-change, model-only change, size against payload.

    python benchmarks/build.py [ARTIFACT] [--cold] [--docker]

ARTIFACT defaults to a locked copy of tests/data/build-small (locking needs the
network). ``--cold`` also remakes every base root filesystem (minutes per
foreign platform under QEMU); without it the cold figure of the base is the one
recorded when the cached base was made. ``--docker`` also builds the rendered
Dockerfile with docker's classic builder, twice, for the native platform: its
size, and whether its image id repeats.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from packager.cache import Cache  # noqa: E402
from packager.image import build  # noqa: E402
from packager.inputs.lockfile import load_lock  # noqa: E402
from packager.platforms import Platform  # noqa: E402


def _scratch(real: Cache, root: Path, share_rootfs: bool) -> Cache:
    root.mkdir(parents=True)
    (root / "cas").symlink_to(real.root / "cas")
    if share_rootfs:
        (root / "rootfs").symlink_to(real.root / "rootfs")
    return Cache(root=root)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact", nargs="?", type=Path)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--docker", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-build-"))
    from build_helpers import locked_copy

    artifact = args.artifact or locked_copy(tmp)
    lock = load_lock(artifact / "request.lock")
    real = Cache.open()
    platforms = [Platform(p) for p in sorted(lock.platforms)]

    print(f"artifact {artifact}; zlib {build.oci.zlib_version()}, gzip -{build.oci.GZIP_LEVEL}")
    print("\n== cold build per platform (fresh layers; base from --cold or from its cache record) ==")
    for plat in platforms:
        cache = _scratch(real, tmp / f"cold-{plat.slug}", share_rootfs=not args.cold)
        t = time.monotonic()
        res = build.build(artifact, build.BuildOptions(platforms=(plat,), cache_root=cache.root, build_root=tmp / "out-cold"))
        total = time.monotonic() - t
        img = res.images[0]
        base = img.rootfs.seconds if img.rootfs.cached else 0.0
        print(f"{plat.value:14} layers+docs {total:6.1f} s   base rootfs {img.rootfs.seconds:6.1f} s"
              f" ({'recorded' if img.rootfs.cached else 'measured, included'})   cold total {total + base:6.1f} s")

    print("\n== no-change rebuild, all platforms ==")
    opts = build.BuildOptions(platforms=tuple(platforms), build_root=tmp / "out")
    first = build.build(artifact, opts)
    t = time.monotonic()
    again = build.build(artifact, opts)
    print(f"{time.monotonic() - t:.2f} s (goal <= 5 s); index {again.index.digest} (same: {again.index.digest == first.index.digest})")

    print("\n== model-only change ==")
    from build_helpers import locked_copy as lc

    changed = lc(tmp / "changed", model=b"benchmark: a different model\n" * 1000)
    t = time.monotonic()
    res = build.build(changed, build.BuildOptions(platforms=tuple(platforms), build_root=tmp / "out-changed"))
    rebuilt = sorted({layer.role for img in res.images for layer in img.layers if not layer.cached})
    print(f"{time.monotonic() - t:.2f} s; layers rebuilt: {', '.join(rebuilt)}")

    print("\n== image size against payload ==")
    for img in first.images:
        pl = lock.platforms[img.platform.value]
        payload = sum(d.size for d in pl.debian.packages) + sum(w.size for w in pl.wheels) + real.path_of(lock.model.sha256).stat().st_size
        size = sum(layer.size for layer in img.layers)
        unpacked = sum(layer.uncompressed_size for layer in img.layers)
        print(f"{img.platform.value:14} image {size / 1e6:7.1f} MB compressed ({unpacked / 1e6:7.1f} MB unpacked); "
              f"payload {payload / 1e6:7.1f} MB; ratio {size / payload:.3f} (goal <= 1.15)")

    if args.docker:
        print("\n== docker classic builder on the rendered Dockerfile (native platform) ==")
        native = Platform.native()
        ids = []
        for n in (1, 2):
            tag = f"bench-naive:{n}"
            env = {**os.environ, "DOCKER_BUILDKIT": "0"}
            t = time.monotonic()
            subprocess.run(["docker", "build", "-q", "--no-cache", "--target", native.slug, "-t", tag, "."], cwd=first.build_dir,
                           env=env, check=True, capture_output=True)
            info = json.loads(subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=True).stdout)[0]
            ids.append(info["Id"])
            ours = next(i for i in first.images if i.platform is native)
            print(f"build {n}: {time.monotonic() - t:.1f} s, size {info['Size'] / 1e6:.1f} MB unpacked "
                  f"(ours {sum(x.uncompressed_size for x in ours.layers) / 1e6:.1f} MB), id {info['Id'][:19]}")
            subprocess.run(["docker", "image", "rm", tag], capture_output=True)
        print(f"docker's two builds {'repeat' if ids[0] == ids[1] else 'differ'}; ours is {ours.config_digest[:19]}")


if __name__ == "__main__":
    main()
