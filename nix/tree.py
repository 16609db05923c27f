"""One layer of a build plan as a directory tree, for the nixpkgs form (dockertools.nix).

dockerTools.buildLayeredImage takes trees, not tar streams, so each layer spec
of the plan (``packager.image.writer.layers.entries_for``: base root filesystem, installed
wheels, harness, model) is written out as files, directories and symlinks.
Device nodes are skipped (a container runtime provides /dev); owners and
times are dockerTools' business in that form.

Usage: python3 -S tree.py LAYER-SPEC.json LIBDIR OUT
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import ExitStack
from pathlib import Path


def main(spec_path: str, libdir: str, out: str) -> int:
    sys.path.insert(0, libdir)
    from packager.image.writer import layers, oci

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    epoch = int(spec["epoch"])
    root = Path(out)
    root.mkdir(parents=True)
    with ExitStack() as stack:
        for e in oci.normalise(layers.entries_for(spec, stack, epoch), epoch):
            target = root / e.path
            if e.kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
            elif e.kind == "symlink":
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(e.linkname)
            elif e.kind == "hardlink":
                shutil.copyfile(root / e.linkname, target)
            elif e.kind == "file":
                target.parent.mkdir(parents=True, exist_ok=True)
                with e.open() as src, open(target, "wb") as dst:  # type: ignore[misc]
                    shutil.copyfileobj(src, dst)
                os.chmod(target, e.mode & 0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
