"""What a farm runs: one job per (artifact, target platform, device need), independent of the scheduler.

A job names its image by registry digest, never by tag, so every node evaluates
the same bytes; its idempotency key covers what makes a result different (the
manifest, the image, the platform, the stage, the devices), so a job that
succeeded once is never run again, whichever scheduler ran it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packager.errors import BadInput
from packager.manifest import Manifest, load_manifest
from packager.platforms import Platform

Stage = Literal["functional", "full", "all"]
STAGES: tuple[Stage, ...] = ("functional", "full", "all")

# ``host[:port]/path@sha256:<64 hex>``: a digest reference is the only kind a farm accepts. The
# host must look like one (a dot, a port or localhost), as docker's reference grammar decides:
# "request-pack/x@sha256:…" would otherwise be resolved against Docker Hub on every node.
_DIGEST_REF = re.compile(
    r"^(localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|[A-Za-z0-9.-]+:[0-9]+|localhost:[0-9]+)"
    r"/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$")

# The architecture a node advertises: Slurm node features and the Kubernetes arch label
# share these names; armv7 is a variant of "arm" in Kubernetes, so it needs its own label.
ARCH_FEATURE = {Platform.AMD64: "amd64", Platform.ARM64: "arm64", Platform.ARMV7: "armv7"}


@dataclass(frozen=True)
class DeviceNeed:
    """The accelerators one job must be placed on; CPU-only jobs have none."""

    gpus: int = 0
    fpga: bool = False
    accelerator: bool = False

    @classmethod
    def of(cls, manifest: Manifest) -> "DeviceNeed":
        required = [d for d in manifest.devices if d.required]
        return cls(
            gpus=sum(1 for d in required if d.kind == "gpu"),
            fpga=any(d.kind == "fpga" for d in required),
            accelerator=any(d.kind == "accelerator" for d in required),
        )

    @property
    def features(self) -> tuple[str, ...]:
        """Node features besides the architecture (GPUs are counted resources, not features)."""
        return tuple(name for name, wanted in (("fpga", self.fpga), ("accelerator", self.accelerator)) if wanted)

    @property
    def slug(self) -> str:
        parts = ([f"gpu{self.gpus}"] if self.gpus else []) + list(self.features)
        return "-".join(parts) or "cpu"


@dataclass(frozen=True)
class FarmJob:
    artifact: str  # the manifest's name
    artifact_dir: Path
    manifest_digest: str  # sha256 of request.yaml as the manifest module computes it
    platform: Platform
    stage: Stage
    image: str  # registry/repo@sha256:<index digest>
    devices: DeviceNeed = DeviceNeed()
    dataset_id: str = ""  # dataset_identity() of the dataset the jobs read; "" when the scheduler mounts its own
    # The run-time knobs (packager/runconfig.py, canonical JSON) of a sweep point; "" for the manifest's defaults.
    run_config: str = ""

    def __post_init__(self) -> None:
        if not _DIGEST_REF.match(self.image):
            raise BadInput(f"image {self.image!r} is not a registry reference by sha256 digest", field="image")
        if self.stage not in STAGES:
            raise BadInput(f"stage {self.stage!r} is not one of {', '.join(STAGES)}", field="--stage")

    @property
    def image_digest(self) -> str:
        return self.image.rsplit("@", 1)[1]

    @property
    def arch_feature(self) -> str:
        return ARCH_FEATURE[self.platform]

    @property
    def key(self) -> str:
        """Idempotency key: the same key means the same result, so it runs at most once."""
        identity = {
            "manifest": self.manifest_digest, "image": self.image_digest, "platform": str(self.platform),
            "stage": self.stage, "devices": self.devices.slug, "dataset": self.dataset_id,
        }
        if self.run_config:  # only then: the keys of jobs without one stay what they were
            identity["run_config"] = self.run_config
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    @property
    def name(self) -> str:
        """A readable name within Slurm's and Kubernetes' limits (DNS-1123, at most 63 characters)."""
        base = f"rp-{self.artifact}-{self.platform.slug}-{self.devices.slug}-{self.stage}".lower()
        base = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")[:50].rstrip("-")
        return f"{base}-{self.key[:8]}"


def dataset_identity(directory: Path) -> str:
    """What tells two datasets apart, cheaply even for the 50,000-image validation set.

    Every file's relative path and size, and the bytes of the small text files (labels,
    synsets, ``val.txt``), where a relabelling shows; hashing every image would read
    6 GB per submission. The runner and the verifier check labels and predictions
    themselves; this only keeps a result on one dataset from standing in for another.
    """
    if not directory.is_dir():
        raise BadInput("dataset directory does not exist", file=directory, field="--dataset")
    h = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            rel = path.relative_to(directory).as_posix()
            size = path.stat().st_size
            h.update(f"{rel}\0{size}\n".encode())
            if path.suffix in (".tsv", ".txt", ".csv") and size <= 16 << 20:
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def plan(
    artifacts: Iterable[Path],
    images: dict[tuple[str, Platform], str],
    *,
    stage: Stage = "all",
    platforms: Iterable[Platform] | None = None,
    dataset: Path | None = None,
) -> list[FarmJob]:
    """Jobs for every artifact × (its platforms ∩ ``platforms``); ``images`` maps (name, platform) to a digest ref.

    With ``dataset``, its identity is part of every job's key: the same job on another
    dataset is another result, not one already done.

    An artifact with a platform but no image for it is an error naming the artifact:
    a farm must never fall back to building on the node.
    """
    wanted = set(platforms) if platforms is not None else None
    dataset_id = dataset_identity(dataset) if dataset is not None else ""
    jobs: list[FarmJob] = []
    for path in artifacts:
        artifact_dir = path.parent if path.name == "request.yaml" else path
        manifest = load_manifest(artifact_dir)
        need = DeviceNeed.of(manifest)
        for platform in manifest.platforms:
            if wanted is not None and platform not in wanted:
                continue
            image = images.get((manifest.name, platform))
            if image is None:
                raise BadInput(f"no image by digest for {manifest.name} on {platform}: build and push it first",
                               file=artifact_dir / "request.yaml", field="platforms")
            jobs.append(FarmJob(manifest.name, artifact_dir.resolve(), manifest.digest(), platform, stage, image, need,
                                dataset_id))
    if not jobs:
        raise BadInput("no job to run: no artifact has one of the requested platforms", field="--platform")
    return jobs
