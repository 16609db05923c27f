"""Images a farm can pull: each artifact built once (its build record reused when current) and pushed by digest.

A board never builds: it pulls ``REGISTRY/request-pack/<name>@<index digest>``,
and ``evaluate --image`` checks that the registry serves exactly the index the
build record names. Pushing keeps every digest (``skopeo copy --all
--preserve-digests``), and is skipped when the registry already has the index.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from packager.contract import BUILD_RECORD_NAME
from packager.errors import BadInput, ImageNotAvailable
from packager.manifest import MANIFEST_NAME, load_manifest
from packager.platforms import Platform
from packager.repo import default_build_root

log = logging.getLogger(__name__)

LAYOUT_TAG = "latest"  # the ref name ``request-pack build`` gives the index inside its OCI layout


def _current_record(record_path: Path, manifest_digest: str, platforms: Iterable[Platform]) -> dict | None:
    """The build record if it was made from this request.yaml, has every platform and its layout is there."""
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    if record.get("manifest_sha256") != manifest_digest:
        return None
    if any(p.value not in record.get("platforms", {}) for p in platforms):
        return None
    if not (record_path.parent / "oci" / "index.json").is_file():
        return None
    return record


def in_registry(reference: str) -> bool:
    from packager.engine.registry import registry_timeout

    timeout = registry_timeout()
    argv = ["skopeo", f"--command-timeout={max(1, int(timeout))}s", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"]
    try:
        # stdout is not kept: only whether the registry has the digest matters (skopeo checks it)
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout + 10,
                              check=False).returncode == 0
    except subprocess.TimeoutExpired:
        raise ImageNotAvailable(f"registry did not answer for {reference} within {timeout:g} s (timed out)",
                                fix="check the registry; REQUEST_PACK_REGISTRY_TIMEOUT sets the limit") from None


def ensure_images(
    artifacts: Iterable[Path],
    registry: str,
    *,
    build_root: Path | None = None,
    platforms: Iterable[Platform] | None = None,
) -> dict[tuple[str, Platform], str]:
    """(artifact name, platform) → ``registry/request-pack/<name>@<index digest>`` for every wanted platform."""
    from packager.engine import push
    from packager.engine.registry import copy_limits
    from packager.image import build as builder

    if not registry or "/" in registry.strip("/") or "@" in registry:
        raise BadInput(f"registry {registry!r} is not HOST:PORT", field="--registry")
    if shutil.which("skopeo") is None:
        raise ImageNotAvailable("skopeo is needed to push images to the registry", fix="apt-get install -y skopeo")
    wanted = set(platforms) if platforms is not None else None
    images: dict[tuple[str, Platform], str] = {}
    for path in artifacts:
        artifact_dir = path.parent if path.name == MANIFEST_NAME else path
        manifest = load_manifest(artifact_dir)
        plats = [p for p in manifest.platforms if wanted is None or p in wanted]
        if not plats:
            continue
        root = build_root or default_build_root(artifact_dir)
        record_path = root / manifest.name / BUILD_RECORD_NAME
        record = _current_record(record_path, manifest.digest(), plats)
        if record is None:
            # The wanted platforms plus those the old record had, so a farm run for one
            # platform does not take away the image another run pushed for a second.
            old = json.loads(record_path.read_text()) if record_path.is_file() else {}
            keep = [p for p in manifest.platforms if p in plats or p.value in old.get("platforms", {})]
            log.info("building %s for %s (no current build record in %s)", manifest.name,
                     ", ".join(p.value for p in keep), record_path.parent)
            builder.build(artifact_dir, builder.BuildOptions(platforms=tuple(keep), build_root=root))
            record = json.loads(record_path.read_text())
        repo = f"{registry.rstrip('/')}/request-pack/{manifest.name}"
        reference = f"{repo}@{record['index_digest']}"
        if in_registry(reference):
            log.info("%s is in the registry already", reference)
        else:
            log.info("pushing %s", reference)
            push(record_path.parent / "oci", LAYOUT_TAG, f"{repo}:{record['index_digest'].split(':')[1][:20]}",
                 timeout=copy_limits()[0])
            if not in_registry(reference):
                raise ImageNotAvailable(f"pushed {manifest.name} but the registry has no {reference}")
        for p in plats:
            images[(manifest.name, p)] = reference
    return images
