"""``request-pack build``: lock → base rootfs → layers → OCI layout → engine, plus record, SBOM, provenance.

1. check the lock offline (``lock.check_frozen``): present, fresh, every locked
   file in the cache with its locked bytes;
2. per platform: the base root filesystem from the locked .debs (``rootfs``,
   cached), then four layers written by ``oci``/``layers``: base, runtime
   wheels, harness, model. Each layer is cached by a key of its inputs, so a
   model change rewrites only the model layer and a no-change rebuild only
   re-links blobs;
3. the image index (one manifest per platform) as an OCI layout, written into a
   temp directory and renamed over ``build/<name>/oci`` only when complete;
4. the readable Dockerfile, the SBOM and the SLSA provenance; ``record.json``
   last, so a record on disk always describes a complete layout;
5. load each platform into the engine (its image id must be our config
   digest) and push the index when asked.

``check()`` builds twice from clean layer state and compares index digests;
on a mismatch it names the first diverging layer and the first differing file.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import shutil
import struct
import tarfile
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, layers, oci, ociplan
from .cache import Cache
from .errors import BadInput, NotReproducible
from .lock import Lock, check_frozen
from .manifest import LOCK_NAME, Manifest, load_manifest, manifest_path
from .platforms import Platform
from .rootfs import RUNNER_UID, Deb, Rootfs, build_rootfs

log = logging.getLogger(__name__)

LAYER_RECIPE = 1
PACKAGE_ROOT = Path(__file__).resolve().parent
TEMPLATE_DIR = PACKAGE_ROOT.parent / "dockerfiles"
APP_DIR = "opt/request"
MODEL_PATH = f"/{APP_DIR}/model.onnx"
CONFIG_PATH = f"/{APP_DIR}/request.json"
ENTRYPOINT = ["python3", "-m", "packager.harness"]
ENV = (
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("LANG", "C.UTF-8"),
    ("PYTHONPATH", f"/{APP_DIR}"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("REQUEST_MODEL", MODEL_PATH),
    ("REQUEST_CONFIG", CONFIG_PATH),
)
RECORD_NAME = "record.json"
SBOM_NAME = "sbom.spdx.json"
PROVENANCE_NAME = "provenance.json"
PLAN_NAME = "plan.json"  # the stdlib-only recipe (packager.ociplan) another builder can replay


@dataclass(frozen=True)
class LayerInfo:
    role: str  # base, wheels, harness, model
    digest: str
    diff_id: str
    size: int
    uncompressed_size: int
    cached: bool
    detail: str = ""


@dataclass(frozen=True)
class PlatformImage:
    platform: Platform
    manifest: oci.Descriptor
    config_digest: str
    layers: tuple[LayerInfo, ...]
    rootfs: Rootfs
    epoch: int
    seconds: float = 0.0


@dataclass(frozen=True)
class BuildResult:
    name: str
    build_dir: Path
    layout: Path
    index: oci.Descriptor
    images: tuple[PlatformImage, ...]
    record: dict
    seconds: float
    loaded: dict[str, str] = field(default_factory=dict)


# --- inputs ----------------------------------------------------------------------------


def default_build_root(artifact_dir: Path) -> Path:
    """``<repo>/build`` for ``<repo>/artifacts/<name>``; else ``build`` beside the artifact directory."""
    artifact_dir = Path(artifact_dir).resolve()
    if artifact_dir.parent.name == "artifacts":
        return artifact_dir.parent.parent / "build"
    return artifact_dir.parent / "build"


def deb_epoch(paths: list[Path]) -> int:
    """SOURCE_DATE_EPOCH of an image: the newest .deb's ar member time (its package build time).

    Derived from the locked inputs, so it is the same everywhere; and no file in
    the base is newer, so clamping never rewrites a packaged file's mtime.
    """
    newest = 0
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(8 + 60)
        if head[:8] != b"!<arch>\n":
            raise BadInput("not a Debian package (ar archive)", file=p)
        newest = max(newest, int(head[8 + 16: 8 + 28].strip() or b"0"))
    return newest


def debs_of(lock: Lock, platform: Platform) -> list[Deb]:
    return [Deb(d.name, d.version, d.architecture, d.filename, d.sha256, d.size)
            for d in lock.platforms[platform.value].debian.packages]


def harness_files(root: Path = PACKAGE_ROOT) -> list[tuple[Path, str]]:
    """``packager/harness`` and the package modules it imports, found by reading its imports.

    The harness must run without the rest of the chain (engines, signing, web),
    so only what it actually imports goes into the image.
    """
    wanted: set[Path] = {root / "__init__.py"}
    todo = sorted((root / "harness").rglob("*.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        wanted.add(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for mod in _imported_modules(node, path, root):
                target = root.joinpath(*mod) if mod else root
                for cand in (target.with_suffix(".py"), target / "__init__.py"):
                    if cand.is_file() and cand not in seen:
                        todo.append(cand)
    return [(p, f"{APP_DIR}/packager/{p.relative_to(root).as_posix()}") for p in sorted(wanted)]


def _imported_modules(node: ast.AST, path: Path, root: Path) -> list[tuple[str, ...]]:
    """Module paths inside ``packager`` (as parts) that an import node names."""
    if isinstance(node, ast.Import):
        return [tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "packager"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0:
        if not node.module or node.module.split(".")[0] != "packager":
            return []
        base = tuple(node.module.split(".")[1:])
    else:
        pkg = path.parent.relative_to(root).parts
        if node.level - 1 > len(pkg):
            return []
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = pkg + tuple((node.module or "").split(".")) if node.module else pkg
    return [base] + [base + (a.name,) for a in node.names]


# --- layers ------------------------------------------------------------------------------


class _LayerCache:
    """Layer blobs and their descriptors keyed by a hash of everything that goes into them."""

    def __init__(self, cache: Cache, *, reuse: bool) -> None:
        self.dir = cache.subdir("layers")
        self.blobs = cache.subdir("layers", "blobs")
        self.reuse = reuse

    def key(self, role: str, parts: dict) -> str:
        doc = {"recipe": LAYER_RECIPE, "role": role, "zlib": oci.zlib_version(), "gzip": oci.GZIP_LEVEL, **parts}
        return hashlib.sha256(oci.canonical_json(doc)).hexdigest()

    def get(self, key: str) -> LayerInfo | None:
        meta = self.dir / f"{key}.json"
        if not self.reuse or not meta.is_file():
            return None
        d = json.loads(meta.read_text())
        if not (self.blobs / d["digest"].split(":")[1]).is_file():
            return None
        return LayerInfo(**{**d, "cached": True})

    def put(self, key: str, role: str, layer: oci.Layer, detail: str) -> LayerInfo:
        info = LayerInfo(role, layer.descriptor.digest, layer.diff_id, layer.descriptor.size,
                         layer.uncompressed_size, False, detail)
        d = {k: v for k, v in info.__dict__.items() if k != "cached"}
        tmp = self.dir / f".{key}.json.tmp"
        tmp.write_text(json.dumps(d, sort_keys=True))
        os.replace(tmp, self.dir / f"{key}.json")
        return info


def _cached_writer(lc: _LayerCache, infos: list[LayerInfo]):
    """An ``ociplan.LayerWriter`` that looks each spec up by its inputs before writing it."""

    def write(spec: dict, epoch: int) -> tuple[oci.Descriptor, str]:
        role = spec["role"]
        key = lc.key(role, {"inputs": spec["inputs"], "epoch": epoch})
        info = lc.get(key)
        if info is None:
            start = time.monotonic()
            with ExitStack() as stack:
                layer = oci.write_layer(layers.entries_for(spec, stack, epoch), lc.blobs, epoch)
            log.info("layer %s: %s, %.1f MB in %.1f s", role, layer.descriptor.digest[:19], layer.descriptor.size / 1e6,
                     time.monotonic() - start)
            info = lc.put(key, role, layer, spec["detail"])
        infos.append(info)
        return oci.Descriptor(oci.MT_LAYER_GZIP, info.digest, info.size), info.diff_id

    return write


def platform_plan(lock: Lock, manifest: Manifest, platform: Platform, cache: Cache, epoch: int, rootfs: Rootfs,
                  lock_sha: str) -> dict:
    """One platform of the plan: layer specs (inputs by path and hash), config and history."""
    plat_lock = lock.platforms[platform.value]
    wheels = [(cache.path_of(w.sha256, size=w.size, name=w.filename), w.filename) for w in plat_lock.wheels]
    hfiles = [(src, dest, 0o755 if src.stat().st_mode & 0o111 else 0o644) for src, dest in harness_files()]
    model_path = cache.path_of(lock.model.sha256, name=f"model {lock.model.filename}")
    config_sha = cache.put_bytes(oci.canonical_json(manifest.model_dump(mode="json")) + b"\n", name=f"{manifest.name} request.json")
    specs = [
        {"role": "base", "kind": "rootfs", "tar": str(rootfs.path), "inputs": {"rootfs": rootfs.sha256},
         "detail": f"Debian bookworm {platform.debian_arch}, {rootfs.packages} packages"},
        {"role": "wheels", "kind": "wheels", "wheels": [[str(p), n] for p, n in wheels],
         "inputs": {"wheels": sorted(w.sha256 for w in plat_lock.wheels)},
         "detail": ", ".join(f"{w.name} {w.version}" for w in plat_lock.wheels) or "none"},
        {"role": "harness", "kind": "files", "files": [[str(src), dest, mode] for src, dest, mode in hfiles],
         "inputs": {"files": {dest: [hashlib.sha256(src.read_bytes()).hexdigest(), mode] for src, dest, mode in hfiles}},
         "detail": f"packager.harness {__version__}"},
        {"role": "model", "kind": "files",
         "files": [[str(model_path), MODEL_PATH, 0o644], [str(cache.object_path(config_sha)), CONFIG_PATH, 0o644]],
         "inputs": {"model": lock.model.sha256, "config": config_sha},
         "detail": f"{lock.model.filename} sha256 {lock.model.sha256}"},
    ]
    config = {
        "User": f"{RUNNER_UID}:{RUNNER_UID}",
        "Env": [f"{k}={v}" for k, v in ENV],
        "Entrypoint": ENTRYPOINT,
        "WorkingDir": f"/{APP_DIR}",
        "Labels": labels_for(manifest, lock_sha),
    }
    history = [{"created_by": f"request-pack {__version__}: {s['role']} layer", "comment": s["detail"]} for s in specs]
    return {"platform": oci.platform_json(platform.os, platform.architecture, platform.variant), "epoch": epoch,
            "layers": specs, "config": config, "history": history}


def labels_for(manifest: Manifest, lock_sha: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": manifest.name,
        "org.opencontainers.image.version": manifest.version,
        "org.opencontainers.image.licenses": manifest.license,
        "org.request-pack.lock.sha256": lock_sha,
        "org.request-pack.model.sha256": manifest.model.sha256,
    }


# --- the whole build -------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOptions:
    platforms: tuple[Platform, ...] = ()
    build_root: Path | None = None
    cache_root: Path | None = None
    reuse_layers: bool = True
    fresh_base: bool = False
    tag: str = "latest"


def prepare(artifact_dir: Path, opts: BuildOptions) -> tuple[Manifest, Lock, Path, list[Platform], Cache]:
    artifact_dir = Path(artifact_dir)
    manifest = load_manifest(artifact_dir)
    mdir = manifest_path(artifact_dir).parent
    platforms = list(opts.platforms) or list(manifest.platforms)
    for p in platforms:
        if p not in manifest.platforms:
            raise BadInput(f"{p} is not one of the manifest's platforms ({', '.join(x.value for x in manifest.platforms)})",
                           file=manifest_path(artifact_dir), field="platforms")
    cache = Cache.open(opts.cache_root)
    lock_path = mdir / LOCK_NAME
    lock = check_frozen(manifest, lock_path, cache, platforms).lock
    return manifest, lock, lock_path, platforms, cache


def write_layout(manifest: Manifest, lock: Lock, lock_sha: str, platforms: list[Platform], cache: Cache,
                 out: Path, opts: BuildOptions) -> tuple[oci.Descriptor, list[PlatformImage], dict]:
    """Every platform's layers, configs and manifests, and the index, into the layout ``out``."""
    lc = _LayerCache(cache, reuse=opts.reuse_layers)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    images: list[PlatformImage] = []
    plan = {"plan_version": ociplan.PLAN_VERSION, "tag": opts.tag, "platforms": []}
    for platform in platforms:
        t0 = time.monotonic()
        debs = debs_of(lock, platform)
        paths = [cache.path_of(d.sha256, size=d.size, name=d.filename) for d in debs]
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or deb_epoch(paths))
        rootfs = build_rootfs(platform, debs, cache, epoch, fresh=opts.fresh_base)
        pplan = platform_plan(lock, manifest, platform, cache, epoch, rootfs, lock_sha)
        infos: list[LayerInfo] = []
        try:
            mdesc, cfg, _ = ociplan.platform_image(pplan, lc.blobs, _cached_writer(lc, infos))
        finally:
            if opts.fresh_base:
                rootfs.path.unlink(missing_ok=True)
        for name in [i.digest for i in infos] + [cfg.digest, mdesc.digest]:
            oci.link_or_copy(lc.blobs / name.split(":")[1], blobs / name.split(":")[1])
        plan["platforms"].append(pplan)
        images.append(PlatformImage(platform, mdesc, cfg.digest, tuple(infos), rootfs, epoch,
                                    round(time.monotonic() - t0, 2)))
    index = ociplan.finish(out, [i.manifest for i in images], opts.tag)
    return index, images, plan


def build(artifact_dir: Path, opts: BuildOptions = BuildOptions()) -> BuildResult:
    from . import provenance
    from .dockerfile import render_dockerfile

    started = time.time()
    t0 = time.monotonic()
    manifest, lock, lock_path, platforms, cache = prepare(artifact_dir, opts)
    lock_sha = hashlib.sha256(lock_path.read_bytes()).hexdigest()
    build_dir = (opts.build_root or default_build_root(artifact_dir)) / manifest.name
    build_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".oci-", dir=build_dir))
    try:
        index, images, plan = write_layout(manifest, lock, lock_sha, platforms, cache, staging, opts)
        layout = build_dir / "oci"
        (build_dir / RECORD_NAME).unlink(missing_ok=True)  # a record never outlives its layout
        old = build_dir / f".oci-old-{os.getpid()}"
        if layout.exists():
            os.replace(layout, old)
        os.replace(staging, layout)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    render_dockerfile(build_dir / "Dockerfile", manifest, lock_sha, images, layout)
    _write_json(build_dir / PLAN_NAME, plan)
    finished = time.time()
    record = make_record(manifest, lock_sha, index, images, started, finished, time.monotonic() - t0)
    provenance.write_sbom(build_dir / SBOM_NAME, manifest, lock, platforms, index, finished)
    provenance.write_provenance(build_dir / PROVENANCE_NAME, manifest, lock, lock_sha, index, images, started, finished)
    _write_json(build_dir / RECORD_NAME, record)
    return BuildResult(manifest.name, build_dir, layout, index, tuple(images), record, time.monotonic() - t0)


def make_record(manifest: Manifest, lock_sha: str, index: oci.Descriptor, images: list[PlatformImage],
                started: float, finished: float, seconds: float) -> dict:
    import platform as host
    import sys

    return {
        "record_version": 1,
        "artifact": manifest.name,
        "version": manifest.version,
        "index_digest": index.digest,
        "index_size": index.size,
        "lock_sha256": lock_sha,
        "manifest_sha256": manifest.digest(),
        "layout": "oci",
        "platforms": {
            img.platform.value: {
                "manifest_digest": img.manifest.digest,
                "manifest_size": img.manifest.size,
                "config_digest": img.config_digest,
                "image_size": sum(i.size for i in img.layers),
                "uncompressed_size": sum(i.uncompressed_size for i in img.layers),
                "source_date_epoch": img.epoch,
                "rootfs_sha256": img.rootfs.sha256,
                "rootfs_cached": img.rootfs.cached,
                "build_seconds": img.seconds,
                "layers": [{"role": i.role, "digest": i.digest, "diff_id": i.diff_id, "size": i.size,
                            "cached": i.cached, "detail": i.detail} for i in img.layers],
            }
            for img in images
        },
        "builder": {
            "request_pack": __version__,
            "python": sys.version.split()[0],
            "zlib": oci.zlib_version(),
            "gzip_level": oci.GZIP_LEVEL,
            "mmdebstrap": _tool_version(["mmdebstrap", "--version"]),
            "host": f"{host.system()} {host.machine()}",
        },
        "engine": None,
        "times": {"started": oci.rfc3339(int(started)), "finished": oci.rfc3339(int(finished)), "seconds": round(seconds, 2)},
    }


def _tool_version(argv: list[str]) -> str | None:
    import subprocess

    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0] if out else None


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --- reproducibility check ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    index_digests: tuple[str, str]
    seconds: tuple[float, float]


def check(artifact_dir: Path, opts: BuildOptions = BuildOptions()) -> CheckResult:
    """Build twice from clean layer state into two scratch layouts; the index digests must match."""
    manifest, lock, lock_path, platforms, cache = prepare(artifact_dir, opts)
    lock_sha = hashlib.sha256(lock_path.read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory(prefix="request-pack-check-") as tmp:
        results, times = [], []
        for n in (1, 2):
            scratch = _scratch_cache(cache, Path(tmp) / f"cache{n}")
            start = time.monotonic()
            out = Path(tmp) / f"oci{n}"
            index, images, _ = write_layout(manifest, lock, lock_sha, platforms, scratch, out,
                                         BuildOptions(platforms=tuple(platforms), reuse_layers=False, fresh_base=opts.fresh_base))
            times.append(round(time.monotonic() - start, 1))
            results.append((out, index, images))
        (out1, i1, imgs1), (out2, i2, imgs2) = results
        if i1.digest != i2.digest:
            raise NotReproducible(f"{manifest.name}: two builds differ: index {i1.digest} vs {i2.digest}; "
                                  + _diagnose(out1, imgs1, out2, imgs2))
    return CheckResult((i1.digest, i2.digest), (times[0], times[1]))


def _scratch_cache(src: Cache, root: Path) -> Cache:
    """A cache whose locked files and bases are the real ones (read-only use) and whose layers start empty."""
    root.mkdir(parents=True)
    for name in ("cas", "rootfs"):
        (src.root / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(src.root / name)
    return Cache(root=root)


def _diagnose(out1: Path, imgs1: list[PlatformImage], out2: Path, imgs2: list[PlatformImage]) -> str:
    for a, b in zip(imgs1, imgs2):
        if a.manifest.digest == b.manifest.digest:
            continue
        for la, lb in zip(a.layers, b.layers):
            if la.digest != lb.digest:
                diff = oci.first_difference(oci.blob_path(out1, la.digest), oci.blob_path(out2, lb.digest))
                where = f"{a.platform} {la.role} layer ({la.digest[:19]} vs {lb.digest[:19]})"
                return f"first diverging: {where}: " + (str(diff) if diff else "same files, different compressed bytes")
        return f"{a.platform}: layers equal, config differs ({a.config_digest[:19]} vs {b.config_digest[:19]})"
    return "manifests equal, index differs"


# --- engines and registries ---------------------------------------------------------------------


def load_into(result: BuildResult, engine_name: str, tag: str = "latest") -> dict[str, str]:
    """Load every platform into the engine; its image id must be our config digest."""
    from .engine import get_engine, local_ref

    engine = get_engine(engine_name)
    loaded = {}
    for img in result.images:
        ref = local_ref(result.name, img.platform, tag)
        image_id = engine.load(result.layout, tag, img.platform, ref)
        if image_id != img.config_digest:
            from .errors import BuildFailed

            raise BuildFailed(f"{engine_name} rewrote {img.platform}: image id {image_id}, we wrote config {img.config_digest}")
        loaded[img.platform.value] = ref
    # The record says which engine holds the images, and its version.
    record = {**result.record, "engine": {"name": engine_name, "version": engine.version(), "loaded": loaded}}
    _write_json(result.build_dir / RECORD_NAME, record)
    return loaded


def push_to(result: BuildResult, registry: str, tag: str = "latest") -> str:
    """Push the whole index to ``registry`` (``host:port``) as ``request-pack/<name>:<tag>``; return the reference."""
    from .engine import push

    dest = f"{registry.rstrip('/')}/request-pack/{result.name}:{tag}"
    push(result.layout, tag, dest)
    return dest


def engine_version(engine_name: str) -> str:
    from .engine import get_engine

    return get_engine(engine_name).version()
