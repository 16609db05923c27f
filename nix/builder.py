"""Write an OCI image layout from a plan; runs inside the Nix sandbox (see builder.sh).

Standard library only: the interpreter is Debian's python3.11 unpacked from the
locked .debs, with no site-packages. The layers, configs, manifests and index
are written by ``packager.oci`` and ``packager.layers`` (copied into the store,
pinned by sha256), the code ``request-pack build`` runs, so equal inputs give
an equal index digest.

The plan (JSON, written by ``packager/nix.py`` through the Nix expression) has
one entry per platform: its epoch, its layers in order, and the image config
without ``rootfs.diff_ids``, which are only known once the layers are written.

Usage: python3 builder.py PLAN LIBDIR OUT
       python3 builder.py --tree LAYER-SPEC LIBDIR OUT   (one layer as a directory, for dockertools.nix)
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path


def layer_entries(spec: dict, stack: ExitStack, epoch: int, workdir: Path):
    import tarfile

    from packager import layers, oci

    if spec.get("rootfs"):
        tar = stack.enter_context(tarfile.open(spec["rootfs"], "r:"))
        return layers.rootfs_entries(tar)
    if spec.get("wheels"):
        # A store path has a hash in front of the file name; the wheel's own name goes beside it.
        paths = [(Path(w["path"]), w["filename"]) for w in spec["wheels"]]
        entries, _ = layers.wheel_entries(paths, stack, epoch=epoch)
        return entries
    files = [layers.file_entry(Path(f["path"]), f["dest"], mode=f["mode"], epoch=epoch) for f in spec.get("files", [])]
    files += [layers.bytes_entry(d["text"].encode("utf-8"), d["dest"], mode=d["mode"], epoch=epoch)
              for d in spec.get("data", [])]
    return oci.parent_dirs([e.path for e in files], mtime=epoch) + files


def main(plan_path: str, libdir: str, out: str) -> int:
    sys.path.insert(0, libdir)
    from packager import oci

    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    root = Path(out)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    workdir = Path(libdir).parent / "work"
    manifests = []
    for image in plan["images"]:
        epoch = int(image["epoch"])
        descriptors, diff_ids = [], []
        for spec in image["layers"]:
            start = time.monotonic()
            with ExitStack() as stack:
                layer = oci.write_layer(layer_entries(spec, stack, epoch, workdir / image["slug"]), blobs, epoch)
            descriptors.append(oci.Descriptor(oci.MT_LAYER_GZIP, layer.descriptor.digest, layer.descriptor.size))
            diff_ids.append(layer.diff_id)
            sys.stderr.write(f"{image['slug']} {spec['role']} layer {layer.descriptor.digest} "
                             f"({layer.descriptor.size} bytes, {layer.entries} entries, {time.monotonic() - start:.1f} s)\n")
        config = image["config"]
        config["rootfs"]["diff_ids"] = diff_ids
        cfg = oci.write_blob(blobs, oci.canonical_json(config), oci.MT_CONFIG)
        manifests.append(oci.write_blob(blobs, oci.image_manifest(cfg, descriptors), oci.MT_MANIFEST,
                                        platform=image["platform"]))
    index = oci.write_blob(blobs, oci.image_index(manifests), oci.MT_INDEX)
    oci.write_layout(root, index, plan["tag"])
    sys.stderr.write(f"index {index.digest} (zlib {oci.zlib_version()}, python {sys.version.split()[0]})\n")
    return 0


def tree(spec_path: str, libdir: str, out: str) -> int:
    """Write one layer's entries as a directory tree (regular files, dirs, symlinks; devices are skipped)."""
    import os
    import shutil

    sys.path.insert(0, libdir)
    from packager import oci

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    epoch = int(spec["epoch"])
    root = Path(out)
    root.mkdir(parents=True)
    with ExitStack() as stack:
        for e in oci.normalise(layer_entries(spec, stack, epoch, Path(libdir).parent / "work"), epoch):
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
    if sys.argv[1:2] == ["--tree"]:
        sys.exit(tree(*sys.argv[2:5]))
    sys.exit(main(*sys.argv[1:4]))
