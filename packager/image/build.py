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
4. the readable Dockerfile, the SBOM and the SLSA provenance; ``build-record.json``
   last, so a record on disk always describes a complete layout;
5. load each platform into the engine (its image id must be our config
   digest) and push the index when asked.

``check()`` builds twice from clean layer state and compares index digests;
on a mismatch it names the first diverging layer and the first differing file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from packager import __version__
from packager.cache import Cache
from packager.contract import BUILD_RECORD_NAME
from packager.errors import BuildFailed, NotReproducible
from packager.image.plan import (
    PACKAGE_ROOT,
    Inputs,
    harness_source_sha256,
    load_inputs,
    templates_beside,
    platform_epoch,
    platform_plan,
    system_of,
)
from packager.image.rootfs import Rootfs, build_rootfs
from packager.image.writer import layers, oci, ociplan
from packager.inputs.lockfile import load_lock
from packager.inputs.materialise import materialise
from packager.manifest import LOCK_NAME, Manifest, load_manifest, manifest_path
from packager.platforms import Platform
from packager.repo import default_build_root

log = logging.getLogger(__name__)

LAYER_RECIPE = 1
RECORD_NAME = BUILD_RECORD_NAME
SBOM_NAME = "sbom.spdx.json"
PROVENANCE_NAME = "provenance.json"
PLAN_NAME = "plan.json"  # the stdlib-only recipe (packager.image.writer.ociplan) another builder can replay


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


# --- layers ------------------------------------------------------------------------------


class _LayerCache:
    """Layer blobs and their descriptors keyed by a hash of everything that goes into them."""

    def __init__(self, cache: Cache, *, reuse: bool) -> None:
        self.dir = cache.subdir("layers")
        self.blobs = cache.subdir("layers", "blobs")
        self.reuse = reuse

    def key(self, role: str, parts: dict) -> str:
        doc = {"recipe": LAYER_RECIPE, "role": role, "zlib": oci.zlib_version(), "gzip": oci.GZIP_LEVEL,
               "tar": oci.TAR_FORMAT, **parts}
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
        oci.write_file(self.dir / f"{key}.json", json.dumps(d, sort_keys=True).encode())
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


# --- the whole build -------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOptions:
    platforms: tuple[Platform, ...] = ()
    build_root: Path | None = None
    cache_root: Path | None = None
    reuse_layers: bool = True
    fresh_base: bool = False
    tag: str = "latest"
    harness_root: Path = PACKAGE_ROOT  # the ``packager`` package the harness layer is made from (reproduce: the archive's)


def inputs_for(artifact_dir: Path, opts: BuildOptions) -> Inputs:
    """Make what the lock pins and the cache lacks (``materialise``), then check the lock offline.

    The two steps stay apart on purpose: the check only reads and hashes, so
    ``lock --frozen`` and ``nix`` never build; the build is where making belongs.
    """
    manifest = load_manifest(artifact_dir)
    lock_path = manifest_path(artifact_dir).parent / LOCK_NAME
    if lock_path.is_file():  # no lock: load_inputs says so, with the command that makes one
        wanted = [p for p in (opts.platforms or manifest.platforms) if p in manifest.platforms]
        materialise(manifest, load_lock(lock_path), Cache.open(opts.cache_root), wanted)
    return load_inputs(artifact_dir, opts.platforms, opts.cache_root, templates_beside(opts.harness_root))


def write_layout(inputs: Inputs, cache: Cache, out: Path, opts: BuildOptions) -> tuple[oci.Descriptor, list[PlatformImage], dict]:
    """Every platform's layers, configs and manifests, and the index, into the layout ``out``."""
    lc = _LayerCache(cache, reuse=opts.reuse_layers)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    images: list[PlatformImage] = []
    plan = {"plan_version": ociplan.PLAN_VERSION, "tag": opts.tag, "platforms": []}
    for platform in inputs.platforms:
        t0 = time.monotonic()
        debs, epoch = platform_epoch(inputs.lock, platform, cache)
        rootfs = build_rootfs(platform, debs, cache, epoch, suite=system_of(inputs.lock, platform).suite,
                              fresh=opts.fresh_base)
        pplan = platform_plan(inputs.lock, inputs.manifest, platform, cache, epoch, rootfs, inputs.lock_sha256,
                              opts.harness_root)
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
    from packager.image import provenance
    from packager.image.dockerfile import render_dockerfile

    started = time.time()
    t0 = time.monotonic()
    inputs = inputs_for(artifact_dir, opts)
    manifest, lock, lock_sha, platforms = inputs.manifest, inputs.lock, inputs.lock_sha256, list(inputs.platforms)
    build_dir = (opts.build_root or default_build_root(artifact_dir)) / manifest.name
    build_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".oci-", dir=build_dir))
    try:
        index, images, plan = write_layout(inputs, inputs.cache, staging, opts)
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
    render_dockerfile(build_dir / "Dockerfile", manifest, lock_sha, images, layout, templates_beside(opts.harness_root))
    oci.write_file(build_dir / PLAN_NAME, oci.readable_json(plan))
    finished = time.time()
    record = make_record(manifest, lock_sha, index, images, started, finished, time.monotonic() - t0)
    record["harness_sha256"] = harness_source_sha256(opts.harness_root)
    # The build's times stay in the record; the SBOM and provenance are functions of the inputs.
    provenance.write_sbom(build_dir / SBOM_NAME, manifest, lock, platforms, index, max(img.epoch for img in images))
    provenance.write_provenance(build_dir / PROVENANCE_NAME, manifest, lock, lock_sha, index, images)
    oci.write_file(build_dir / RECORD_NAME, oci.readable_json(record))
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


# --- the published digest --------------------------------------------------------------------

PUBLISHED_NAME = "image.json"  # beside request.lock: the index digest its lock must give


@dataclass(frozen=True)
class Published:
    """What an artifact publishes beside its lock: the image index its lock must build, for these platforms."""

    index_digest: str
    lock_sha256: str
    platforms: tuple[str, ...]
    harness: dict[str, str]  # platform -> harness layer digest: the code of this checkout that goes into the image


@dataclass(frozen=True)
class Comparison:
    status: str  # match, differs, not-comparable, unpublished
    detail: str

    @property
    def matches(self) -> bool:
        return self.status == "match"


def published(artifact_dir: Path) -> Published | None:
    path = manifest_path(artifact_dir).parent / PUBLISHED_NAME
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    return Published(d["index_digest"], d["lock_sha256"], tuple(d["platforms"]), dict(d.get("harness", {})))


def _harness_layers(result: BuildResult) -> dict[str, str]:
    return {img.platform.value: next(i.digest for i in img.layers if i.role == "harness") for img in result.images}


def compare_published(artifact_dir: Path, result: BuildResult) -> Comparison:
    """Whether this build reproduced the image the artifact publishes; a subset of platforms or another lock cannot."""
    pub = published(artifact_dir)
    name = f"{manifest_path(artifact_dir).parent.name}/{PUBLISHED_NAME}"
    if pub is None:
        return Comparison("unpublished", f"{name} does not exist: nothing to compare with")
    built = tuple(sorted(img.platform.value for img in result.images))
    if result.record["lock_sha256"] != pub.lock_sha256:
        return Comparison("not-comparable", f"{name} is for lock {pub.lock_sha256[:12]}, this build's lock is "
                                            f"{result.record['lock_sha256'][:12]}: re-lock or re-publish")
    if built != tuple(sorted(pub.platforms)):
        return Comparison("not-comparable", f"{name} is for {', '.join(pub.platforms)}; built {', '.join(built)}")
    if result.index.digest != pub.index_digest and pub.harness and _harness_layers(result) != pub.harness:
        # the harness layer is this checkout's packager/harness (and what it imports): another version of
        # request-pack builds another image from the same lock
        return Comparison("not-comparable", f"{name} was published by a request-pack whose harness differs from this "
                                            "checkout's: check out the commit that published it, or re-publish")
    if result.index.digest == pub.index_digest:
        return Comparison("match", f"the index digest {name} publishes: reproduced")
    return Comparison("differs", f"{name} publishes {pub.index_digest}, this build gives {result.index.digest}: "
                                 "not reproduced (`build --check` names the first differing layer and file)")


def write_published(artifact_dir: Path, result: BuildResult) -> Path:
    path = manifest_path(artifact_dir).parent / PUBLISHED_NAME
    doc = {"index_digest": result.index.digest, "lock_sha256": result.record["lock_sha256"],
           "platforms": sorted(img.platform.value for img in result.images), "harness": _harness_layers(result)}
    oci.write_file(path, oci.readable_json(doc))
    return path


# --- reproducibility check ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    index_digests: tuple[str, str]
    seconds: tuple[float, float]


def check(artifact_dir: Path, opts: BuildOptions = BuildOptions()) -> CheckResult:
    """Build twice from clean layer state into two scratch layouts; the index digests must match."""
    inputs = inputs_for(artifact_dir, opts)
    with tempfile.TemporaryDirectory(prefix="request-pack-check-") as tmp:
        results, times = [], []
        for n in (1, 2):
            scratch = _scratch_cache(inputs.cache, Path(tmp) / f"cache{n}")
            start = time.monotonic()
            out = Path(tmp) / f"oci{n}"
            index, images, _ = write_layout(inputs, scratch, out,
                                            BuildOptions(platforms=inputs.platforms, reuse_layers=False, fresh_base=opts.fresh_base))
            times.append(round(time.monotonic() - start, 1))
            results.append((out, index, images))
        (out1, i1, imgs1), (out2, i2, imgs2) = results
        if i1.digest != i2.digest:
            raise NotReproducible(f"{inputs.manifest.name}: two builds differ: index {i1.digest} vs {i2.digest}; "
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
    from packager.engine import get_engine, local_ref

    engine = get_engine(engine_name)
    loaded = {}
    for img in result.images:
        ref = local_ref(result.name, img.platform, tag)
        image_id = engine.load(result.layout, tag, img.platform, ref)
        if image_id != img.config_digest:
            raise BuildFailed(f"{engine_name} rewrote {img.platform}: image id {image_id}, we wrote config {img.config_digest}")
        loaded[img.platform.value] = ref
    # The record says which engine holds the images, and its version.
    record = {**result.record, "engine": {"name": engine_name, "version": engine.version(), "loaded": loaded}}
    oci.write_file(result.build_dir / RECORD_NAME, oci.readable_json(record))
    return loaded


def push_to(result: BuildResult, registry: str, tag: str = "latest") -> str:
    """Push the whole index to ``registry`` (``host:port``) as ``request-pack/<name>:<tag>``; return the reference."""
    from packager.engine import push
    from packager.engine.registry import copy_limits

    dest = f"{registry.rstrip('/')}/request-pack/{result.name}:{tag}"
    push(result.layout, tag, dest, timeout=copy_limits()[0])  # a registry that stalls ends the push
    return dest


def engine_version(engine_name: str) -> str:
    from packager.engine import get_engine

    return get_engine(engine_name).version()
