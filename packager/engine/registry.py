"""Images from an OCI registry, by digest only; the registry and the publisher are strangers.

A reference is ``host[:port]/repo@sha256:<hex>``; the digest may name an index
(the platform's manifest is chosen from it) or one platform's manifest. Every
document we read is hashed against the digest that named it, so the config digest
we end with (the engine's image id) is bound to the reference the user gave: a
registry that serves other bytes is an ``ImageMismatch``, not a silent swap.
A tag is refused: it names whatever the registry holds today.

A digest binds bytes, not sense: the publisher chose them. So every document is
bounded before it is parsed (``MAX_DOCUMENT``; skopeo's own limit is 4 MiB),
must be UTF-8 JSON of the shape the OCI image spec gives it (descriptors with a
sha256 digest and a size, platforms of short strings), an index may hold at most
``MAX_ENTRIES`` entries, all well-formed, and exactly one manifest for the
platform; the config blob must say the platform the index claimed, and
``pull_verified`` unpacks every layer (capped) against the config's diff_ids
before an engine loads the image. Every skopeo
call has a deadline (``REQUEST_PACK_REGISTRY_TIMEOUT``), so a slow server ends a
run instead of hanging it. Refusals are one line: ``BadInput`` (2) for a malformed
document, ``ImageMismatch`` (1) for bytes that are not what they claim,
``ImageNotAvailable`` (3) for a registry that cannot deliver.

Loopback registries (127.0.0.1, localhost, ::1) are spoken to over plain http,
as a test or a farm-local registry serves; every other host needs TLS.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import selectors
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from packager.engine.base import skopeo_copy
from packager.errors import BadInput, ImageMismatch, ImageNotAvailable
from packager.platforms import Platform
from packager.tools import need
from packager.wire import loads

log = logging.getLogger(__name__)

_REF = re.compile(r"^(?P<repo>(?P<host>[A-Za-z0-9.\-]+(?::\d+)?|\[[0-9a-fA-F:]+\](?::\d+)?)/[a-z0-9._/\-]+)@(?P<digest>sha256:[0-9a-f]{64})$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_PLATFORM_WORD = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")

# Our indexes are < 2 KiB (≤ 4 platforms), our manifests < 8 KiB (< 40 layers); the largest
# public ones (multi-arch with attestations, 127-layer images) stay under 64 KiB. 256 KiB is
# room for those four times over, and a sixteenth of what skopeo would buffer for us.
MAX_DOCUMENT = 256 << 10
MAX_CONFIG = 1 << 20  # a config carries the build history: larger than a manifest, still small
MAX_ENTRIES = 256  # index entries: platforms x (image + attestation), far above any real index
MAX_LAYERS = 512  # overlayfs stacks at most 128 lower layers; 512 leaves room for squashing tools
MAX_IMAGE = 64 << 30  # declared compressed bytes of one image; our largest (torch) is ~1.5 GiB
TIMEOUT_ENV = "REQUEST_PACK_REGISTRY_TIMEOUT"
DEFAULT_TIMEOUT = 60.0  # seconds for one document from a registry that answers at all
COPY_TIMEOUT_ENV = "REQUEST_PACK_REGISTRY_COPY_TIMEOUT"
DEFAULT_COPY_TIMEOUT = 3600.0  # a whole image: our largest (~1.5 GiB compressed) at 1 MB/s with room
UNPACKED_ENV = "REQUEST_PACK_MAX_UNPACKED"
# What one image may unpack to on this machine (docker's load tar holds it whole, podman's storage
# file by file). The declared sizes bound the compressed bytes only; gzip expands up to ~1000x,
# so without this a 10 MiB layer could fill the disk. Our largest image unpacks to ~6 GiB.
DEFAULT_MAX_UNPACKED = 32 << 30


def registry_timeout() -> float:
    """Seconds one skopeo read of a registry may take ($REQUEST_PACK_REGISTRY_TIMEOUT, default 60)."""
    return _seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT)


def _seconds(env: str, default: float) -> float:
    text = os.environ.get(env, "")
    try:
        value = float(text) if text else default
    except ValueError:
        raise BadInput(f"{text!r} is not a number of seconds", field=env) from None
    if not 0 < value <= 86400:
        raise BadInput(f"{value} s is not in (0, 86400]", field=env)
    return value


def copy_limits() -> tuple[float, int]:
    """(seconds, bytes any file it writes may have) for copying one image out of a registry."""
    text = os.environ.get(UNPACKED_ENV, "")
    if text and not text.isdigit():
        raise BadInput(f"{text!r} is not a number of bytes", field=UNPACKED_ENV)
    return max(1.0, _seconds(COPY_TIMEOUT_ENV, DEFAULT_COPY_TIMEOUT)), int(text) if text else DEFAULT_MAX_UNPACKED


def copy_refusal(source: str, message: str) -> Exception:
    """The typed refusal for a failed copy of ``source`` out of a registry, by what skopeo said."""
    reason = _printable(message)
    if "Digest did not match" in message or "invalid diffID" in message:
        return ImageMismatch(f"{source}: a blob is not what its digest or the config's diff_ids say ({reason})")
    if "file too large" in message.lower() or "exit -25" in message or "signal" in message.lower() and "25" in message:
        return BadInput(f"a blob of the image is larger than {copy_limits()[1]} bytes ({UNPACKED_ENV}); refused as a layer bomb",
                        file=source)
    if "timed out" in message or "deadline exceeded" in message:
        return ImageNotAvailable(f"{source}: the copy did not finish within {copy_limits()[0]:g} s (timed out)",
                                 fix=f"check the registry; {COPY_TIMEOUT_ENV} sets the limit")
    return ImageNotAvailable(f"cannot copy {source}: {reason}", fix="check the registry and that the image was pushed")


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


def _printable(text: str, limit: int = 240) -> str:
    """A stranger's text for a one-line message: control characters out, length capped."""
    clean = "".join(c if c.isprintable() else " " for c in text).strip()
    # The reason is at the end of a Go error chain: keep both ends.
    return clean if len(clean) <= limit else clean[: limit // 3] + " … " + clean[-(2 * limit) // 3:]


def _read_capped(argv: list[str], cap: int, timeout: float, where: str) -> tuple[int, bytes, str]:
    """(exit code, stdout, stderr's last line) of ``argv``; more than ``cap`` bytes or ``timeout`` s ends it."""
    log.info("+ %s", " ".join(argv))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)  # type: ignore[arg-type]
    sel.register(proc.stderr, selectors.EVENT_READ, err)  # type: ignore[arg-type]
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ImageNotAvailable(f"{where}: the registry did not answer in full within {timeout:g} s (timed out)",
                                        fix=f"check the registry; {TIMEOUT_ENV} sets the limit")
            for key, _ in sel.select(min(left, 1.0)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = key.data
                buf += chunk
                if buf is out and len(out) > cap:
                    raise BadInput(f"more than {cap} bytes; a registry document may have at most {cap} "
                                   "(request-pack's cap, below skopeo's 4 MiB)", file=where)
                if buf is err and len(err) > 65536:
                    del err[:-16384]
        proc.wait(max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        raise ImageNotAvailable(f"{where}: skopeo did not finish within {timeout:g} s (timed out)",
                                fix=f"check the registry; {TIMEOUT_ENV} sets the limit") from None
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()  # type: ignore[union-attr]
    return proc.returncode, bytes(out), _skopeo_reason(err.decode(errors="replace"))


_FATAL = re.compile(r'msg="(?P<msg>(?:[^"\\]|\\.)*)"')


def _skopeo_reason(stderr: str) -> str:
    """The reason in skopeo's last line, without its log prefix or the image name it repeats."""
    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    m = _FATAL.search(last)
    if m:
        last = m["msg"].replace('\\"', '"')
        last = re.sub(r'^Error parsing image name "[^"]*": ', "", last)
    return _printable(last)


def _skopeo(ref: RegistryRef, digest: str, *, config: bool = False, expect: str | None = None) -> bytes:
    """The document (or with ``config``, the config blob of the manifest) at ``digest``, hashed against ``expect``."""
    where = ref.at(digest)
    timeout = registry_timeout()
    argv = [need("skopeo", "skopeo"), f"--command-timeout={max(1, int(timeout))}s", "inspect", "--raw",
            f"--tls-verify={'true' if ref.tls_verify else 'false'}", *(["--config"] if config else []), f"docker://{where}"]
    code, data, why = _read_capped(argv, MAX_CONFIG if config else MAX_DOCUMENT, timeout, where)
    if code != 0:
        if "maximum allowed size" in why:  # skopeo's own 4 MiB limit
            raise BadInput(f"larger than skopeo's limit ({why}); a registry document may have at most {MAX_DOCUMENT} bytes", file=where)
        if "timeout" in why.lower() or "deadline exceeded" in why:
            raise ImageNotAvailable(f"{where}: the registry did not answer within {timeout:g} s (timed out): {why}",
                                    fix=f"check the registry; {TIMEOUT_ENV} sets the limit")
        raise ImageNotAvailable(f"cannot read {'the config of ' if config else ''}{where}: {why}",
                                fix="check the registry address and that the image was pushed (request-pack build --push)")
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != (expect or digest):
        what = f"config {expect} of {where}" if config else where
        raise ImageMismatch(f"{what}: the registry served bytes whose sha256 is {actual}")
    return data


def _document(data: bytes, where: str) -> dict:
    """A registry document as a JSON object, parsed strictly (``wire.loads``: UTF-8, finite, unique keys, 64 levels)."""
    doc = loads(data, error=lambda message: BadInput(message), shown=where)
    if not isinstance(doc, dict):
        raise BadInput(f"a JSON {type(doc).__name__}, not an object", file=where)
    return doc


def _descriptor(value: object, where: str, field: str) -> dict:
    """An OCI descriptor: mediaType (string), digest (sha256:<64 hex>), size (0 ≤ int ≤ MAX_IMAGE)."""
    if not isinstance(value, dict):
        raise BadInput("is not a descriptor (an object)", file=where, field=field)
    if not isinstance(value.get("digest"), str) or not _DIGEST.match(value["digest"]):
        raise BadInput("digest is not sha256:<64 lowercase hex>", file=where, field=field)
    size = value.get("size")
    if type(size) is not int or not 0 <= size <= MAX_IMAGE:
        raise BadInput(f"size is not a whole number of bytes up to {MAX_IMAGE}", file=where, field=field)
    if "mediaType" in value and not isinstance(value["mediaType"], str):
        raise BadInput("mediaType is not a string", file=where, field=field)
    return value


def _platform_text(value: object, where: str, field: str) -> str:
    """os/architecture[/variant] from a platform object of short plain words."""
    if not isinstance(value, dict):
        raise BadInput("platform is not an object", file=where, field=field)
    words = []
    for key in ("os", "architecture", "variant"):
        word = value.get(key)
        if word is None and key == "variant":
            continue
        if not isinstance(word, str) or not _PLATFORM_WORD.match(word):
            raise BadInput(f"platform.{key} is not a short word of letters, digits, '.', '_' or '-'", file=where, field=field)
        words.append(word)
    return "/".join(words)


def _as_platform(text: str) -> Platform | None:
    try:
        return Platform.parse(text)
    except ValueError:  # a platform we do not build (s390x, windows, unknown/unknown attestations …)
        return None


def entry_matches(entry: dict, platform: Platform) -> bool:
    """Whether an image index entry is for ``platform``: by Platform.parse, so linux/arm64 and linux/arm64/v8 are the same."""
    try:
        return _as_platform(_platform_text(entry.get("platform"), "", "platform")) is platform
    except BadInput:
        return False


def _choose(doc: dict, ref: RegistryRef, platform: Platform) -> str:
    """The manifest digest of ``platform`` in an index whose every entry is well-formed; exactly one may match."""
    where = str(ref)
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise BadInput("manifests is not a list", file=where, field="manifests")
    if len(entries) > MAX_ENTRIES:
        raise BadInput(f"{len(entries)} entries; an index may have at most {MAX_ENTRIES}", file=where, field="manifests")
    have: dict[str, set[str]] = {}
    for i, entry in enumerate(entries):
        _descriptor(entry, where, f"manifests[{i}]")
        if entry.get("mediaType") in INDEX_TYPES:
            raise BadInput("names another index; request-pack reads one level", file=where, field=f"manifests[{i}]")
        if "platform" in entry:  # optional in the spec: an entry without one is for no platform
            have.setdefault(_platform_text(entry["platform"], where, f"manifests[{i}]"), set()).add(entry["digest"])
    found = {d for text, digests in have.items() if _as_platform(text) is platform for d in digests}
    if not found:
        raise ImageNotAvailable(f"index {ref} has no {platform} image (has: {', '.join(sorted(have)) or 'none'})")
    if len(found) > 1:
        raise ImageMismatch(f"index {ref} names two or more {platform} manifests ({', '.join(sorted(found))}); "
                            "which one runs would be the registry's choice")
    return found.pop()


def _manifest(doc: dict, where: str) -> tuple[str, int]:
    """(config digest, number of layers) of an image manifest, every descriptor checked."""
    media = doc.get("mediaType")
    if media is not None and media not in MANIFEST_TYPES:
        raise BadInput(f"mediaType {_printable(str(media), 80)!r} is not an image manifest", file=where, field="mediaType")
    if "manifests" in doc:
        raise BadInput("is an index where an image manifest was expected", file=where, field="manifests")
    if "config" not in doc:
        raise BadInput("is not an image manifest (no config)", file=where, field="config")
    config = _descriptor(doc["config"], where, "config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise BadInput("layers is not a list", file=where, field="layers")
    if len(layers) > MAX_LAYERS:
        raise BadInput(f"{len(layers)} layers; an image may have at most {MAX_LAYERS}", file=where, field="layers")
    total = sum(_descriptor(layer, where, f"layers[{i}]")["size"] for i, layer in enumerate(layers))
    if total > MAX_IMAGE:
        raise BadInput(f"layers add up to {total} bytes; an image may have at most {MAX_IMAGE}", file=where, field="layers")
    return config["digest"], len(layers)


def _check_config(data: bytes, where: str, platform: Platform, layers: int) -> list[str]:
    """The config must be for ``platform`` (a config that lies would run another architecture) and name each layer;
    its diff_ids, checked."""
    doc = _document(data, where)
    text = _platform_text(doc, where, "config")
    if _as_platform(text) is not platform:
        raise ImageMismatch(f"{where}: the config says {text}, the index says {platform}")
    rootfs = doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != layers or \
            not all(isinstance(d, str) and _DIGEST.match(d) for d in diff_ids):
        raise BadInput(f"rootfs.diff_ids is not a list of {layers} sha256 digests, one per layer", file=where, field="rootfs")
    return diff_ids


def resolve(ref: RegistryRef, platform: Platform) -> PulledImage:
    """Read, hash and check the index, the platform's manifest and its config; return the digests a run is pinned by."""
    doc = _document(_skopeo(ref, ref.digest), str(ref))
    index_digest = None
    manifest_digest = ref.digest
    if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
        index_digest = ref.digest
        manifest_digest = _choose(doc, ref, platform)
        doc = _document(_skopeo(ref, manifest_digest), ref.at(manifest_digest))
    config, layers = _manifest(doc, ref.at(manifest_digest))
    _check_config(_skopeo(ref, manifest_digest, config=True, expect=config), f"config {config} of {ref.at(manifest_digest)}",
                  platform, layers)
    log.info("%s: %s manifest %s, config %s", ref, platform, manifest_digest[:19], config[:19])
    return PulledImage(ref, platform, index_digest, manifest_digest, config)


GZIP_LAYERS = ("application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip")
TAR_LAYERS = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar")
PULLED_TAG = "pulled"


def _read_json(path: Path, cap: int, where: str) -> dict:
    if not path.is_file() or path.is_symlink():
        raise ImageNotAvailable(f"{where}: skopeo left no {path.name} in the pulled layout")
    if path.stat().st_size > cap:
        raise BadInput(f"more than {cap} bytes", file=where)
    return _document(path.read_bytes(), where)


def _diff_id(blob: Path, media: str, budget: int, where: str) -> tuple[str, int]:
    """(sha256 of the uncompressed layer, its size), reading at most ``budget`` uncompressed bytes."""
    if media not in GZIP_LAYERS + TAR_LAYERS:
        raise BadInput(f"layer media type {_printable(media, 80)!r} is not a gzip or plain tar layer", file=where)
    h, n = hashlib.sha256(), 0
    try:
        with blob.open("rb") as raw, (gzip.GzipFile(fileobj=raw) if media in GZIP_LAYERS else raw) as stream:
            while chunk := stream.read(1 << 20):
                n += len(chunk)
                if n > budget:
                    raise BadInput(f"the image unpacks to more than {copy_limits()[1]} bytes ({UNPACKED_ENV}); "
                                   "refused as a layer bomb", file=where)
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise ImageMismatch(f"{where}: layer {blob.name[:12]} is not a readable {media}: {_printable(str(e), 80)}") from None
    return "sha256:" + h.hexdigest(), n


def pull_verified(source: str, src_args: tuple[str, ...], platform: Platform, config_digest: str, into: Path) -> str:
    """Copy ``source`` (one platform's manifest in a registry) into an OCI layout under ``into`` and check it.

    skopeo checks each blob against its digest, but neither it (into containers-storage) nor
    anything else checks that a layer unpacks to the diff_id the config names: the image id
    would be the pinned one and the files the registry's choice. So every layer is decompressed
    here, counted against the unpacked cap (a layer bomb stops at the cap, not at the disk's
    end) and hashed against its diff_id before any engine sees it. Returns the layout's skopeo source."""
    layout = into / "oci"
    timeout, cap = copy_limits()
    # The cap per file also bounds a blob larger than its descriptor says, before it is hashed.
    skopeo_copy(source, f"oci:{layout}:{PULLED_TAG}", platform, extra=src_args, timeout=timeout, max_file_bytes=cap)
    blobs = layout / "blobs" / "sha256"
    index = _read_json(layout / "index.json", MAX_DOCUMENT, source)
    entries = index.get("manifests")
    if not isinstance(entries, list) or len(entries) != 1:
        raise ImageMismatch(f"{source}: the pulled layout does not hold exactly one manifest")
    manifest_digest = _descriptor(entries[0], source, "manifests[0]")["digest"]
    manifest = _read_json(blobs / manifest_digest.split(":", 1)[1], MAX_DOCUMENT, source)
    config, layers = _manifest(manifest, source)
    if config != config_digest:
        raise ImageMismatch(f"{source}: the pulled manifest names config {config}, not {config_digest}")
    config_path = blobs / config.split(":", 1)[1]
    if not config_path.is_file() or config_path.stat().st_size > MAX_CONFIG:
        raise ImageMismatch(f"{source}: the pulled config {config} is missing or larger than {MAX_CONFIG} bytes")
    diff_ids = _check_config(config_path.read_bytes(), source, platform, layers)  # the bytes resolve checked; skopeo hashed them
    budget = cap
    for i, layer in enumerate(manifest["layers"]):
        path = blobs / layer["digest"].split(":", 1)[1]
        if not path.is_file() or path.is_symlink():
            raise ImageNotAvailable(f"{source}: skopeo left no blob for layer {i}")
        actual, size = _diff_id(path, layer.get("mediaType", ""), budget, source)
        if actual != diff_ids[i]:
            raise ImageMismatch(f"{source}: layer {i} unpacks to {actual}, the config's diff_ids say {diff_ids[i]}")
        budget -= size
    return f"oci:{layout}:{PULLED_TAG}"
