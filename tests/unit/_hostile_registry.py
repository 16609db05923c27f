"""A hostile OCI registry: a real HTTP server on 127.0.0.1 serving what an attacker would publish.

:class:`HostileRegistry` speaks enough of the distribution API for real skopeo
(``/v2/``, ``GET``/``HEAD`` of ``/v2/<repo>/manifests/<digest>`` and
``/v2/<repo>/blobs/<digest>``); every case is stored under the digest of its own
bytes, so the reference the victim is handed is "valid" and only the content is
hostile. A hostile *server* is a path with a behaviour instead: it redirects in a
loop, answers slowly for ever, or sends more (or fewer) bytes than it announced.

:func:`cases` generates the attacks in classes, each with the exit code it must
be refused with (2 a malformed document, 1 bytes that are not what they claim,
3 an image the registry cannot deliver) and a piece of the one-line message.
The genuine image (a static busybox in one layer, for linux/amd64) is built the
same way and must still resolve, load and run. Used by ``test_hostile_registry.py``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REPO = "hostile/image"
MiB = 1 << 20


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dumps(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Behaviour:
    """How the server answers one digest: ``kind`` is 'redirect-loop', 'slow', 'long-body' or 'short-body'."""

    kind: str


@dataclass
class HostileRegistry:
    """Blobs and manifests by digest, served over plain http on a free loopback port."""

    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    port: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def manifest(self, data: bytes, media: str = OCI_MANIFEST) -> str:
        digest = sha(data)
        self.manifests[digest] = (data, media)
        return digest

    def blob(self, data: bytes) -> str:
        digest = sha(data)
        self.blobs[digest] = data
        return digest

    def ref(self, digest: str) -> str:
        return f"127.0.0.1:{self.port}/{REPO}@{digest}"

    def serve(self) -> ThreadingHTTPServer:
        reg = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # the attacker keeps quiet
                pass

            def _send(self, code: int, body: bytes, media: str = "application/json", length: int | None = None,
                      extra: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    try:
                        self.wfile.write(body)
                    except OSError:
                        pass

            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/v2/", "/v2"):
                    return self._send(200, b"{}")
                prefix = f"/v2/{REPO}/"
                if not path.startswith(prefix):
                    return self._send(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
                kind, _, digest = path[len(prefix):].partition("/")
                how = reg.behaviours.get(digest)
                if how is not None and how.kind == "redirect-loop":
                    return self._send(307, b"", extra={"Location": f"{prefix}{kind}/{digest}?again={time.monotonic_ns()}"})
                if how is not None and how.kind == "slow":
                    # Headers at once, then one byte a second for ever (until the test ends).
                    self.send_response(200)
                    self.send_header("Content-Type", OCI_MANIFEST)
                    self.send_header("Content-Length", str(1 << 30))
                    self.end_headers()
                    while not reg.stop.is_set():
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                        reg.stop.wait(1.0)
                    return
                if kind == "manifests" and digest in reg.manifests:
                    body, media = reg.manifests[digest]
                elif kind == "blobs" and digest in reg.blobs:
                    body, media = reg.blobs[digest], "application/octet-stream"
                else:
                    return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                if how is not None and how.kind == "long-body":
                    # Announces the real length, then keeps sending: the client must stop at the announced length.
                    self._send(200, body + b" " * (8 * MiB), media, length=len(body), extra={"Connection": "close"})
                    self.close_connection = True
                    return
                if how is not None and how.kind == "short-body":
                    self._send(200, body[: len(body) // 2], media, length=len(body), extra={"Connection": "close"})
                    self.close_connection = True
                    return
                self._send(200, body, media)

            def do_GET(self) -> None:
                self._answer()

            def do_HEAD(self) -> None:
                self._answer()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


# --- the genuine image -------------------------------------------------------------------------


@dataclass(frozen=True)
class Genuine:
    index: str
    manifest: str
    config: str
    config_doc: dict
    manifest_doc: dict
    layer: str
    layer_bytes: bytes


@functools.lru_cache(maxsize=2)
def _layer(busybox: Path) -> tuple[bytes, bytes]:
    """(gzipped tar, plain tar) of one file, /bin/busybox, with fixed metadata so digests are stable."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin",):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = busybox.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), plain


def descriptor(media: str, data: bytes, **extra: object) -> dict:
    return {"mediaType": media, "digest": sha(data), "size": len(data), **extra}


def add_genuine(reg: HostileRegistry, busybox: Path = Path("/bin/busybox")) -> Genuine:
    gz, plain = _layer(busybox)
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(plain)]},
              "config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["echo", "genuine"]}}
    config_bytes = dumps(config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, config_bytes),
                "layers": [descriptor(OCI_LAYER, gz)]}
    manifest_bytes = dumps(manifest)
    reg.blob(config_bytes)
    reg.blob(gz)
    m = reg.manifest(manifest_bytes)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        descriptor(OCI_MANIFEST, manifest_bytes, platform={"os": "linux", "architecture": "amd64"})]}
    i = reg.manifest(dumps(index), OCI_INDEX)
    return Genuine(i, m, sha(config_bytes), config, manifest, sha(gz), gz)


# --- the attacks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    make: Callable[[HostileRegistry, Genuine], str]  # stores the attack, returns the digest to hand over
    code: int
    message: str  # a piece of the one-line refusal
    loads: bool = False  # gets past resolve: the engine must copy the image for it to be refused


def _index(entries: object, **top: object) -> Callable[[HostileRegistry, Genuine], str]:
    """An index document whose ``manifests`` are ``entries`` (a callable of the genuine image, or a value)."""
    def make(reg: HostileRegistry, g: Genuine) -> str:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, **top,
               "manifests": entries(g) if callable(entries) else entries}
        return reg.manifest(dumps(doc), OCI_INDEX)
    return make


def _raw_doc(data: bytes, media: str = OCI_INDEX) -> Callable[[HostileRegistry, Genuine], str]:
    return lambda reg, g: reg.manifest(data, media)


def _manifest(change: Callable[[dict, Genuine], object], *, in_index: bool = False) -> Callable[[HostileRegistry, Genuine], str]:
    """The genuine manifest changed by ``change`` (returns the new document), served alone or from an index."""
    def make(reg: HostileRegistry, g: Genuine) -> str:
        doc = change(json.loads(json.dumps(g.manifest_doc)), g)
        data = doc if isinstance(doc, bytes) else dumps(doc)
        m = reg.manifest(data)
        if not in_index:
            return m
        return _index([{"mediaType": OCI_MANIFEST, "digest": m, "size": len(data),
                        "platform": {"os": "linux", "architecture": "amd64"}}])(reg, g)
    return make


def _with_config(config: dict) -> Callable[[dict, Genuine], dict]:
    def change(doc: dict, g: Genuine) -> dict:
        data = dumps(config)
        doc["config"] = descriptor(OCI_CONFIG, data)
        return doc
    return change


def _store_config(config_of: Callable[[Genuine], dict]) -> Callable[[HostileRegistry, Genuine], str]:
    def make(reg: HostileRegistry, g: Genuine) -> str:
        config = config_of(g)
        reg.blob(dumps(config))
        return _manifest(_with_config(config), in_index=True)(reg, g)
    return make


def _behaving(kind: str, target: str) -> Callable[[HostileRegistry, Genuine], str]:
    """The genuine image, with the server misbehaving on ``target`` ('index', 'manifest' or 'layer')."""
    def make(reg: HostileRegistry, g: Genuine) -> str:
        reg.behaviours[{"index": g.index, "manifest": g.manifest, "layer": g.layer}[target]] = Behaviour(kind)
        return g.index
    return make


def _entry(g: Genuine, **over: object) -> dict:
    e = {"mediaType": OCI_MANIFEST, "digest": g.manifest, "size": len(dumps(g.manifest_doc)),
         "platform": {"os": "linux", "architecture": "amd64"}}
    e.update(over)
    return {k: v for k, v in e.items() if v is not None}


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name: str, group: str, make: Callable[[HostileRegistry, Genuine], str], code: int, message: str,
            loads: bool = False) -> None:
        out.append(Case(name, group, make, code, message, loads))

    # The document is not JSON, or not an object.
    for name, data, why in [
            ("empty", b"", "not valid JSON"), ("garbage", b"\x00\xff\xfe not json", "only UTF-8"),
            ("truncated", b'{"manifests": [{"dig', "not valid JSON"), ("utf16", '{"manifests": []}'.encode("utf-16"), "only UTF-8"),
            ("nan", b'{"schemaVersion": NaN, "manifests": []}', "NaN"),
            ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, "nested 100000 levels"),
            ("bare-string", b'"sha256:abc"', "not an object"), ("number", b"42", "not an object"),
            ("null", b"null", "not an object"), ("list", b'[{"digest": "sha256:00"}]', "a JSON list"),
            ("duplicate-keys", b'{"manifests": [], "manifests": {}}', "duplicate key"),
            ("bad-utf8", b'{"mediaType": "\xff"}', "not UTF-8")]:
        add(f"not-an-object-{name}", "not-json", _raw_doc(data), 2, why)
    # Index entries malformed: every entry is ill-formed, so none may be chosen.
    hexd = "0" * 64
    bad_entries: list[tuple[str, Callable[[Genuine], object]]] = [
        ("manifests-not-list", lambda g: {"0": _entry(g)}),
        ("manifests-string", lambda g: "sha256:" + hexd),
        ("entry-not-object", lambda g: [g.manifest]),
        ("entry-null", lambda g: [None]),
        ("no-digest", lambda g: [_entry(g, digest=None)]),
        ("digest-number", lambda g: [_entry(g, digest=12)]),
        ("digest-not-sha256", lambda g: [_entry(g, digest="md5:" + hexd[:32])]),
        ("digest-short", lambda g: [_entry(g, digest="sha256:abc")]),
        ("digest-path", lambda g: [_entry(g, digest="sha256:../../../etc/passwd")]),
        ("digest-upper", lambda g: [_entry(g, digest=g.manifest.upper())]),
        ("platform-string", lambda g: [_entry(g, platform="linux/amd64")]),
        ("platform-list", lambda g: [_entry(g, platform=["linux", "amd64"])]),
        ("arch-number", lambda g: [_entry(g, platform={"os": "linux", "architecture": 64})]),
        ("arch-list", lambda g: [_entry(g, platform={"os": "linux", "architecture": ["amd64"]})]),
        ("os-null", lambda g: [_entry(g, platform={"os": None, "architecture": "amd64"})]),
        ("variant-object", lambda g: [_entry(g, platform={"os": "linux", "architecture": "amd64", "variant": {}})]),
        ("size-string", lambda g: [_entry(g, size="big")]),
        ("size-negative", lambda g: [_entry(g, size=-1)]),
        ("media-number", lambda g: [_entry(g, mediaType=7)]),
    ]
    for name, entries in bad_entries:
        add(f"index-{name}", "ill-formed-entry", _index(entries), 2, "manifests")
    # An ill-formed entry before a good one: the good one is not taken, the document is refused as a whole.
    add("index-bad-then-good", "ill-formed-entry", _index(lambda g: [_entry(g, digest=None), _entry(g)]), 2, "manifests[0]")
    # Entries the spec allows beside the genuine one: without a platform, for another platform, attestations.
    add("index-extra-entries", "ill-formed-entry", _index(lambda g: [
        _entry(g, digest="sha256:" + "5" * 64, platform=None),
        _entry(g, digest="sha256:" + "6" * 64, platform={"os": "unknown", "architecture": "unknown"}),
        _entry(g, digest="sha256:" + "7" * 64, platform={"os": "linux", "architecture": "riscv64"}), _entry(g)]), 0, "")
    add("index-two-amd64", "ambiguous", _index(lambda g: [_entry(g), _entry(g, digest="sha256:" + "1" * 64)]), 1, "two")
    # Sizes and counts.
    add("index-100000-entries", "too-large",
        _index(lambda g: [_entry(g, platform={"os": "linux", "architecture": f"arch{i}"}) for i in range(100_000)]), 2, "skopeo's limit")
    add("index-1000-entries", "too-large",
        _index(lambda g: [_entry(g, platform={"os": "linux", "architecture": f"arch{i}"}) for i in range(1000)]), 2, "at most 256")
    add("manifest-1000-layers", "too-large", _manifest(lambda d, g: {**d, "layers": d["layers"] * 1000}), 2, "at most 512")
    add("index-3MiB-annotation", "too-large", _index(lambda g: [_entry(g)], annotations={"x": "a" * (3 * MiB)}), 2, "more than 262144 bytes")
    add("manifest-3MiB", "too-large", _manifest(lambda d, g: {**d, "annotations": {"x": "a" * (3 * MiB)}}), 2, "more than 262144 bytes")
    add("manifest-5MiB", "too-large", _manifest(lambda d, g: {**d, "annotations": {"x": "a" * (5 * MiB)}}), 2, "skopeo's limit")
    add("manifest-100000-layers", "too-large", _manifest(lambda d, g: {**d, "layers": d["layers"] * 100_000}), 2, "skopeo's limit")
    add("manifest-layer-size-huge", "too-large",
        _manifest(lambda d, g: {**d, "layers": [{**d["layers"][0], "size": 1 << 50}]}), 2, "size")
    # The platform's manifest is not an image manifest.
    for name, change in [
        ("no-config", lambda d, g: {k: v for k, v in d.items() if k != "config"}),
        ("config-string", lambda d, g: {**d, "config": g.config}),
        ("config-list", lambda d, g: {**d, "config": [d["config"]]}),
        ("config-no-digest", lambda d, g: {**d, "config": {"mediaType": OCI_CONFIG, "size": 10}}),
        ("config-digest-bad", lambda d, g: {**d, "config": {**d["config"], "digest": "sha256:xyz"}}),
        ("layers-not-list", lambda d, g: {**d, "layers": d["layers"][0]}),
        ("layer-not-object", lambda d, g: {**d, "layers": [g.layer]}),
        ("layer-no-digest", lambda d, g: {**d, "layers": [{"mediaType": OCI_LAYER, "size": 1}]}),
        ("manifest-is-list", lambda d, g: [d]),
        ("manifest-not-json", lambda d, g: b"<html>502 Bad Gateway</html>"),
        ("manifest-is-index", lambda d, g: {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [_entry(g)]}),
    ]:
        if name != "manifest-is-index":  # alone, that is an index like the genuine one
            add(f"{name}-alone", "not-a-manifest", _manifest(change), 2, _why(name))
        add(f"{name}-in-index", "not-a-manifest", _manifest(change, in_index=True), 2, _why(name))
    # The config blob lies, or is not a config.
    add("config-says-arm64", "config-lies", _store_config(lambda g: {**g.config_doc, "architecture": "arm64"}), 1, "arm64")
    add("config-says-windows", "config-lies", _store_config(lambda g: {**g.config_doc, "os": "windows"}), 1, "windows")
    add("config-says-armv7", "config-lies",
        _store_config(lambda g: {**g.config_doc, "architecture": "arm", "variant": "v7"}), 1, "arm")
    add("config-no-arch", "config-lies", _store_config(lambda g: {k: v for k, v in g.config_doc.items() if k != "architecture"}), 2, "platform.architecture")
    add("config-arch-number", "config-lies", _store_config(lambda g: {**g.config_doc, "architecture": 64}), 2, "platform.architecture")
    add("config-is-list", "config-lies", lambda reg, g: _index([_entry(g, digest=_list_config(reg, g))])(reg, g), 2, "not an object")

    def missing_config(reg: HostileRegistry, g: Genuine) -> str:
        return _manifest(_with_config({**g.config_doc, "never": "served"}), in_index=True)(reg, g)
    add("config-missing", "config-lies", missing_config, 3, "cannot read the config")
    # Index entries that name something else than they claim.
    add("entry-names-unknown-manifest", "swap", _index(lambda g: [_entry(g, digest="sha256:" + "2" * 64)]), 3, "manifest unknown")
    add("index-no-amd64", "swap", _index(lambda g: [_entry(g, platform={"os": "linux", "architecture": "s390x"})]), 3, "s390x")
    add("index-empty", "swap", _index([]), 3, "none")
    # Layers: a wrong digest, a bomb. These get past resolve; the copy into the engine must refuse them.
    add("layer-wrong-digest", "layer", _wrong_layer, 1, "digest", loads=True)
    add("layer-bomb", "layer", _bomb_layer, 2, "layer bomb", loads=True)
    add("layer-not-in-config", "layer", _other_layer, 1, "diff", loads=True)
    # The server misbehaves.
    add("redirect-loop-index", "server", _behaving("redirect-loop", "index"), 3, "redirect")
    add("redirect-loop-manifest", "server", _behaving("redirect-loop", "manifest"), 3, "redirect")
    add("slow-index", "server", _behaving("slow", "index"), 3, "timed out")
    add("slow-manifest", "server", _behaving("slow", "manifest"), 3, "timed out")
    add("long-body-index", "server", _behaving("long-body", "index"), 0, "")  # cut at the announced length: genuine
    add("short-body-index", "server", _behaving("short-body", "index"), 3, "unexpected EOF")
    add("short-body-layer", "server", _behaving("short-body", "layer"), 3, "", loads=True)
    add("slow-layer", "server", _behaving("slow", "layer"), 3, "timed out", loads=True)
    add("long-body-layer", "server", _behaving("long-body", "layer"), 0, "", loads=True)  # cut: the genuine image
    return out


def _why(name: str) -> str:
    """The piece of the refusal a not-a-manifest case must show."""
    return {"no-config": "no config", "manifest-is-list": "not an object", "manifest-not-json": "not valid JSON",
            "manifest-is-index": "not an image manifest"}.get(name, name.split("-")[0].rstrip("s"))


def _list_config(reg: HostileRegistry, g: Genuine) -> str:
    data = dumps([g.config_doc])
    reg.blob(data)
    doc = {**g.manifest_doc, "config": descriptor(OCI_CONFIG, data)}
    return reg.manifest(dumps(doc))


def _wrong_layer(reg: HostileRegistry, g: Genuine) -> str:
    """The manifest names a layer digest; the server answers that digest with other bytes."""
    other = gzip.compress(b"not the layer", mtime=0)
    fake = "sha256:" + "3" * 64
    reg.blobs[fake] = other
    doc = {**g.manifest_doc, "layers": [descriptor(OCI_LAYER, other, digest=fake)]}
    return _manifest(lambda d, _g: doc, in_index=True)(reg, g)


def _bomb_layer(reg: HostileRegistry, g: Genuine) -> str:
    """A layer of 64 MiB of compressed zeros claiming to be a few KiB: the size in the descriptor lies."""
    bomb = gzip.compress(b"\0" * (64 * MiB), compresslevel=9, mtime=0)
    digest = reg.blob(bomb)
    doc = {**g.manifest_doc, "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": 4096}]}
    return _manifest(lambda d, _g: doc, in_index=True)(reg, g)


def _other_layer(reg: HostileRegistry, g: Genuine) -> str:
    """A well-formed layer whose digest is right but whose content is not the diff_id the config names."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/swapped")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"swap\n"))
    gz = gzip.compress(raw.getvalue(), mtime=0)
    reg.blob(gz)
    doc = {**g.manifest_doc, "layers": [descriptor(OCI_LAYER, gz)]}
    return _manifest(lambda d, _g: doc, in_index=True)(reg, g)
