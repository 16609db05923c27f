"""The image of one platform, pinned by digest, and the platform it runs on.

``image_from_record`` reads the build record (``build/<name>/build-record.json``):
the platform's manifest digest is checked against the manifest blob in the OCI
layout, which names the config digest, the image id every engine uses; a container
is created from ``sha256:<config digest>``, never a tag. ``ensure_image`` loads it
into the engine when absent and refuses an image whose id or platform differs
(``ImageMismatch``). A foreign platform runs under QEMU user mode: its binfmt entry
is checked before anything starts, and the run presents the CPU of a common board.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from packager.cache import sha256_digest
from packager.contract import BUILD_RECORD_NAME, MODEL_PATH, OUT_MOUNT, RUN_CONFIG
from packager.engine import Engine, ImageInfo
from packager.errors import (
    BadInput,
    BuildFailed,
    ImageMismatch,
    ImageNotAvailable,
    ToolMissing,
)
from packager.platforms import Platform
from packager.repo import default_build_root

log = logging.getLogger(__name__)

RECORD_NAME = BUILD_RECORD_NAME
# Where the build puts the model unless the image says otherwise (label or env REQUEST_PACK_MODEL).
DEFAULT_IMAGE_MODEL = MODEL_PATH



@dataclass(frozen=True)
class ImageRef:
    """The image of one platform, pinned by digests from the build record."""

    artifact: str
    platform: Platform
    config_digest: str  # "sha256:…": the engine's image id
    manifest_digest: str | None = None
    index_digest: str | None = None
    oci_layout: Path | None = None
    record: Path | None = None
    # A registry source instead of the layout ("docker://host/repo@sha256:<manifest>"), for --image.
    source: str | None = None
    source_args: tuple[str, ...] = ()

    @property
    def image(self) -> str:
        return self.config_digest


def _platform_entry(record: dict, platform: Platform, file: Path) -> dict:
    """The record's entry for one platform; keyed by OCI platform string or a list with 'platform'."""
    entries = record.get("platforms") or record.get("manifests")
    if isinstance(entries, dict):
        entry = entries.get(platform.value)
    elif isinstance(entries, list):
        entry = next((e for e in entries if isinstance(e, dict) and Platform.parse(str(e.get("platform", ""))) == platform), None) \
            if all(isinstance(e, dict) for e in entries) else None
    else:
        raise BadInput("no per-platform manifests", file=file, field="platforms")
    if not isinstance(entry, dict):
        built = ", ".join(entries if isinstance(entries, dict) else [str(e.get("platform")) for e in entries])
        raise ImageNotAvailable(f"{platform} was not built (built: {built})", fix=f"request-pack build --platform {platform}")
    return entry


def image_from_record(artifact_dir: Path, name: str, platform: Platform, build_root: Path | None = None) -> ImageRef:
    """Pin the image of ``platform`` from ``build/<name>/build-record.json`` (next to the artifacts/ dir by default)."""
    build_dir = (build_root or default_build_root(artifact_dir)) / name
    record_path = build_dir / RECORD_NAME
    if not record_path.is_file():
        raise ImageNotAvailable(f"no build record at {record_path}", fix=f"request-pack build {artifact_dir}")
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"not JSON: {e}", file=record_path) from None
    entry = _platform_entry(record, platform, record_path)
    manifest_digest = entry.get("manifest_digest") or entry.get("digest")
    index_digest = record.get("index_digest")
    layout = build_dir / "oci"
    config = entry.get("config_digest")
    if manifest_digest and (layout / "blobs").is_dir():
        # The manifest blob is content-addressed: hash it, then trust the config digest it names.
        blob = layout / "blobs" / "sha256" / manifest_digest.split(":", 1)[1]
        if not blob.is_file():
            raise ImageNotAvailable(f"manifest {manifest_digest} of {platform} is not in {layout}", fix=f"request-pack build {artifact_dir}")
        actual = sha256_digest(blob)
        if actual != manifest_digest:
            raise ImageMismatch(f"{blob}: sha256 is {actual}, the build record says {manifest_digest}")
        named = json.loads(blob.read_bytes())["config"]["digest"]
        if config and config != named:
            raise ImageMismatch(f"{record_path}: config digest {config} differs from {named} named by manifest {manifest_digest}")
        config = named
    if not config:
        raise BadInput("neither a config digest nor an OCI layout to find it", file=record_path, field=f"platforms.{platform}")
    return ImageRef(name, platform, config, manifest_digest, index_digest, layout if layout.is_dir() else None, record_path)


def ensure_image(engine: Engine, ref: ImageRef) -> ImageInfo:
    """The engine's image with id ``ref.config_digest``, loaded from the OCI layout (or the registry) if absent."""
    info = engine.inspect_image(ref.config_digest)
    if info is None:
        if ref.oci_layout is None and ref.source is None:
            raise ImageNotAvailable(f"image {ref.config_digest} ({ref.artifact}, {ref.platform}) is not in {engine.name}",
                                    fix="request-pack build, or load the image")
        source = ref.source or f"oci:{ref.oci_layout}"
        t0 = time.monotonic()
        name = f"request-pack/{ref.artifact}:{ref.platform.slug}"
        if ref.source is None:
            loaded = engine.load_source(source, ref.platform, name)
        else:
            # A registry is a stranger: its image is pulled and every layer checked before the engine sees it.
            from packager.engine.registry import copy_refusal, pull_verified

            with tempfile.TemporaryDirectory(prefix="request-pack-pull-") as scratch:
                try:
                    local = pull_verified(ref.source, ref.source_args, ref.platform, ref.config_digest, Path(scratch))
                    loaded = engine.load_source(local, ref.platform, name)
                except BuildFailed as e:
                    raise copy_refusal(ref.source, e.message) from None
        log.info("loaded %s into %s in %.1f s", source, engine.name, time.monotonic() - t0)
        if loaded != ref.config_digest:
            raise ImageMismatch(f"loading {source} for {ref.platform} gave image {loaded}, not {ref.config_digest}")
        info = engine.inspect_image(ref.config_digest)
        if info is None:
            raise ImageMismatch(f"loading {source} for {ref.platform} did not give image {ref.config_digest}")
    if info.id != ref.config_digest:
        raise ImageMismatch(f"engine image id {info.id} is not the pinned {ref.config_digest}")
    want_variant = ref.platform.variant if ref.platform is Platform.ARMV7 else None
    if info.architecture != ref.platform.architecture or (want_variant and info.variant != want_variant):
        raise ImageMismatch(f"image {ref.config_digest} is {info.os}/{info.architecture}/{info.variant}, not {ref.platform}")
    return info


def check_emulation(platform: Platform, engine_arch: str | None = None) -> None:
    """A non-native platform needs its QEMU binfmt entry (``make setup`` / ``qemu/binfmt.sh`` registers it)."""
    if platform is Platform.native():
        return
    entry = Path("/proc/sys/fs/binfmt_misc") / (platform.qemu_binfmt or "")
    if not entry.is_file() or "enabled" not in entry.read_text():
        raise ToolMissing(f"{platform} needs QEMU emulation and {entry} is not registered", fix="bash qemu/binfmt.sh")


# QEMU user mode reads QEMU_CPU from the environment of what it runs. Its default CPU, "max",
# is no board's (SVE2, SME, ...); onnxruntime then picks kernels no board of the platform would
# run, and took 1.4-2.4x longer per image under QEMU 10 than as a Cortex-A76 (qemu/README.md).
# An emulated run presents the CPU of a common board instead: Raspberry Pi 5 (arm64), 2 (armv7).
EMULATED_CPU = {Platform.ARM64: "cortex-a76", Platform.ARMV7: "cortex-a7"}


def emulation_env(platform: Platform) -> dict[str, str]:
    """Environment for a run of ``platform`` on this host: QEMU_CPU when it is emulated."""
    if platform is Platform.native() or platform not in EMULATED_CPU:
        return {}
    return {"QEMU_CPU": EMULATED_CPU[platform]}


def _image_env(info: ImageInfo, *names: str) -> str | None:
    for item in info.env:
        key, _, value = item.partition("=")
        if key in names:
            return value
    return None


def image_model_path(info: ImageInfo) -> str:
    """The build sets REQUEST_MODEL (packager/image/plan.py); older test images REQUEST_PACK_MODEL."""
    return _image_env(info, "REQUEST_MODEL", "REQUEST_PACK_MODEL") or DEFAULT_IMAGE_MODEL


def image_config_path(info: ImageInfo) -> str:
    """The manifest sections baked into the image (REQUEST_CONFIG), else the copy the runner writes to the output."""
    return _image_env(info, "REQUEST_CONFIG") or f"{OUT_MOUNT}/{RUN_CONFIG}"
