"""Images from an OCI registry, by digest only.

A reference is ``host[:port]/repo@sha256:<hex>``; the digest may name an index
(the platform's manifest is chosen from it) or one platform's manifest. Every
blob we read is hashed against the digest that named it, so the config digest we
end with (the engine's image id) is bound to the reference the user gave: a
registry that serves other bytes is an ``ImageMismatch``, not a silent swap.
A tag is refused: it names whatever the registry holds today.

Loopback registries (127.0.0.1, localhost, ::1) are spoken to over plain http,
as a test or a farm-local registry serves; every other host needs TLS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass

from packager.errors import BadInput, ImageMismatch, ImageNotAvailable
from packager.platforms import Platform
from packager.tools import need

log = logging.getLogger(__name__)

_REF = re.compile(r"^(?P<repo>(?P<host>[A-Za-z0-9.\-]+(?::\d+)?|\[[0-9a-fA-F:]+\](?::\d+)?)/[a-z0-9._/\-]+)@(?P<digest>sha256:[0-9a-f]{64})$")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class RegistryRef:
    repository: str  # host[:port]/path
    digest: str  # what the user named: index or manifest

    @property
    def host(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def tls_verify(self) -> bool:
        host = self.host.rsplit(":", 1)[0] if not self.host.startswith("[") else self.host.split("]")[0] + "]"
        return host not in LOOPBACK

    def at(self, digest: str) -> str:
        return f"{self.repository}@{digest}"

    def __str__(self) -> str:
        return self.at(self.digest)


@dataclass(frozen=True)
class PulledImage:
    """One platform's image in a registry, every digest checked."""

    ref: RegistryRef
    platform: Platform
    index_digest: str | None  # set when the reference named an index
    manifest_digest: str
    config_digest: str

    @property
    def source(self) -> str:
        """A skopeo source for exactly this platform's manifest."""
        return f"docker://{self.ref.at(self.manifest_digest)}"

    def skopeo_args(self) -> tuple[str, ...]:
        return (f"--src-tls-verify={'true' if self.ref.tls_verify else 'false'}",)


def parse_reference(text: str) -> RegistryRef:
    """``host[:port]/repo@sha256:<hex>``; a tag or a bare name is a BadInput."""
    m = _REF.match(text.strip())
    if m is None:
        why = "names a tag" if "@" not in text and ":" in text.rsplit("/", 1)[-1] else "is not host[:port]/repo@sha256:<64 hex>"
        raise BadInput(f"image reference {text!r} {why}; images are pulled by digest only "
                       "(request-pack build --push prints the index digest)", field="--image")
    return RegistryRef(m["repo"], m["digest"])


def _raw(ref: RegistryRef, digest: str) -> bytes:
    """The manifest or index bytes stored under ``digest``, checked against it."""
    import subprocess

    argv = [need("skopeo", "skopeo"), "inspect", "--raw", f"--tls-verify={'true' if ref.tls_verify else 'false'}",
            f"docker://{ref.at(digest)}"]
    log.info("+ %s", " ".join(argv))
    proc = subprocess.run(argv, capture_output=True, timeout=300)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise ImageNotAvailable(f"cannot read {ref.at(digest)}: {' '.join(tail)}",
                                fix="check the registry address and that the image was pushed (request-pack build --push)")
    actual = "sha256:" + hashlib.sha256(proc.stdout).hexdigest()
    if actual != digest:
        raise ImageMismatch(f"{ref.at(digest)}: the registry served bytes whose sha256 is {actual}")
    return proc.stdout


def entry_matches(entry: dict, platform: Platform) -> bool:
    """Whether an image index entry is for ``platform``: by Platform.parse, so linux/arm64 and linux/arm64/v8 are the same."""
    p = entry.get("platform") or {}
    text = "/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
    try:
        return Platform.parse(text) is platform
    except Exception:  # a platform we do not build (s390x, windows, …)
        return False


def resolve(ref: RegistryRef, platform: Platform) -> PulledImage:
    """Read (and hash) the index and the platform's manifest; return the digests a run is pinned by."""
    doc = json.loads(_raw(ref, ref.digest))
    media = doc.get("mediaType", "")
    index_digest = None
    manifest_digest = ref.digest
    if media in INDEX_TYPES or "manifests" in doc:
        index_digest = ref.digest
        entry = next((m for m in doc.get("manifests", []) if entry_matches(m, platform)), None)
        if entry is None:
            have = ", ".join("/".join(filter(None, ((m.get("platform") or {}).get(k) for k in ("os", "architecture", "variant"))))
                             for m in doc.get("manifests", []))
            raise ImageNotAvailable(f"index {ref} has no {platform} image (has: {have or 'none'})")
        manifest_digest = entry["digest"]
        doc = json.loads(_raw(ref, manifest_digest))
    config = (doc.get("config") or {}).get("digest")
    if not config:
        raise ImageMismatch(f"{ref.at(manifest_digest)} is not an image manifest (no config)")
    log.info("%s: %s manifest %s, config %s", ref, platform, manifest_digest[:19], config[:19])
    return PulledImage(ref, platform, index_digest, manifest_digest, config)
