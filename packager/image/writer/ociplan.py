"""Execute a build plan: JSON naming every layer's inputs and every config field → an OCI layout.

``request-pack build`` writes ``build/<name>/plan.json`` and runs the same
functions (with a layer cache in front). Because this module and the ones it
uses (``oci``, ``layers``) need only the standard library, any other builder
with a Python 3.11 can redo the image from the plan, e.g. the Nix derivation
with Debian's python3 from the locked .debs, after replacing the cache paths
with its store paths, and must arrive at the same index digest:

    python3 -m packager.image.writer.ociplan plan.json OUT_DIR

Plan format (version 1)::

    {"plan_version": 1, "tag": "latest",
     "platforms": [{"platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
                    "epoch": 1700000000,
                    "layers": [<layer spec, see layers.entries_for>, ...],
                    "config": {"User": ..., "Env": [...], ...},
                    "history": [{"created_by": ..., "comment": ...}, ...]}]}
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from . import layers, oci

PLAN_VERSION = 1

LayerWriter = Callable[[dict, int], tuple[oci.Descriptor, str]]


def _write_uncached(blobs: Path) -> LayerWriter:
    def write(spec: dict, epoch: int) -> tuple[oci.Descriptor, str]:
        with ExitStack() as stack:
            layer = oci.write_layer(layers.entries_for(spec, stack, epoch), blobs, epoch)
        return layer.descriptor, layer.diff_id

    return write


def platform_image(p: dict, blobs: Path, write_layer: LayerWriter) -> tuple[oci.Descriptor, oci.Descriptor, list[tuple[oci.Descriptor, str]]]:
    """Layers, config and manifest of one platform; returns (manifest, config, layers)."""
    written = [write_layer(spec, p["epoch"]) for spec in p["layers"]]
    cfg = oci.write_blob(blobs, oci.image_config(p["platform"], [d for _, d in written], p["config"], p["history"], p["epoch"]),
                         oci.MT_CONFIG)
    manifest = oci.write_blob(blobs, oci.image_manifest(cfg, [desc for desc, _ in written]), oci.MT_MANIFEST,
                              platform=p["platform"])
    return manifest, cfg, written


def finish(out: Path, manifests: list[oci.Descriptor], tag: str) -> oci.Descriptor:
    blobs = Path(out) / "blobs" / "sha256"
    index = oci.write_blob(blobs, oci.image_index(manifests), oci.MT_INDEX)
    oci.write_layout(out, index, tag)
    return index


def execute(plan: dict, out: Path) -> oci.Descriptor:
    if plan.get("plan_version") != PLAN_VERSION:
        raise ValueError(f"plan_version {plan.get('plan_version')!r} is not {PLAN_VERSION}")
    blobs = Path(out) / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    manifests = [platform_image(p, blobs, _write_uncached(blobs))[0] for p in plan["platforms"]]
    return finish(out, manifests, plan["tag"])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python3 -m packager.image.writer.ociplan PLAN.json OUT_DIR\n")
        return 2
    index = execute(json.loads(Path(args[0]).read_text()), Path(args[1]))
    sys.stdout.write(index.digest + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
