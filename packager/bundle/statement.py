"""in-toto Statement v1 with the project's result predicate, plus the minimal
views of the build record and SLSA provenance the verifier needs.

Spec: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
The statement's subjects bind every file of the result directory (by relative
path and sha256) and the OCI image index the numbers were measured on.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from packager.attestation import (
    LEGACY_RESULT_PREDICATE_TYPES,
    RESULT_PREDICATE_TYPE,
    SLSA_PROVENANCE_TYPE,
    STATEMENT_TYPE,
)
from packager.results import Metrics, Power, System
from packager.wire import WireModel

PREDICATE_TYPE = RESULT_PREDICATE_TYPE  # what we sign; verification also accepts the legacy types
IMAGE_SUBJECT = "oci-image-index"
PROVENANCE_NAME = "provenance.json"
LABELS_NAME = "labels.tsv"
MANIFEST_NAME = "request.yaml"
LOCK_NAME = "request.lock"

Sha256Hex = Field(pattern=r"^[0-9a-f]{64}$")
OciDigest = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class _Wire(WireModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class Subject(_Wire):
    name: str = Field(min_length=1)
    # in-toto allows several algorithms; we write and require sha256.
    digest: dict[str, str] = Field(min_length=1)

    @property
    def sha256(self) -> str | None:
        return self.digest.get("sha256")


class ImageRef(_Wire):
    index_digest: str = OciDigest


class LabelsRef(_Wire):
    name: str
    sha256: str = Sha256Hex
    count: int = Field(ge=0)


class RunParameters(_Wire):
    artifact: str
    stage: Literal["functional", "full"]
    platform: str
    framework: str
    driver: str
    threads: int | None = None
    samples: int = Field(ge=0)
    scenarios: list[str] = Field(default_factory=list)
    batch_sizes: list[int] = Field(default_factory=list)
    # The run-time knobs (packager/runconfig.py) the run was given; absent: the manifest's defaults.
    run_config: dict[str, int | str] | None = None


class ResultPredicate(_Wire):
    result_version: Literal[1] = 1
    stage: Literal["functional", "full"]
    image: ImageRef
    run: RunParameters
    metrics: Metrics
    environment: System
    labels: LabelsRef | None = None
    host_power: Power | None = Field(
        None, description="the runner's power reading on the host, outside the sandbox (run.json's host_power): "
                          "figures with their source and window, or null figures and the reason; absent in results "
                          "signed before it existed (packager/bundle/power.py)")


class Statement(_Wire):
    type_: Literal[STATEMENT_TYPE] = Field(STATEMENT_TYPE, alias="_type")
    subject: list[Subject] = Field(min_length=1)
    predicateType: Literal[(RESULT_PREDICATE_TYPE, *LEGACY_RESULT_PREDICATE_TYPES)] = RESULT_PREDICATE_TYPE
    predicate: ResultPredicate

    def to_payload(self) -> bytes:
        """Canonical-enough bytes: the signature covers these exact bytes, not a re-encoding."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")).encode()

    def file_subjects(self) -> dict[str, Subject]:
        return {s.name: s for s in self.subject if s.name != IMAGE_SUBJECT}

    def image_subjects(self) -> list[Subject]:
        return [s for s in self.subject if s.name == IMAGE_SUBJECT]


# --- what the verifier reads from files other engineers write -------------------


class BuildRecord(BaseModel):
    """The builder's ``build-record.json``; only the fields the verifier relies on are typed."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    index_digest: str = OciDigest
    artifact: str | None = None
    lock_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="sha256 of request.lock's bytes")
    manifest_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Manifest.digest() of request.yaml")


class ProvenanceStatement(BaseModel):
    """A SLSA v1 provenance statement; its predicate is the builder's business."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)
    type_: Literal[STATEMENT_TYPE] = Field(alias="_type")
    subject: list[Subject] = Field(min_length=1)
    predicateType: Literal[SLSA_PROVENANCE_TYPE]
    predicate: dict

    def sha256_digests(self) -> set[str]:
        return {f"sha256:{s.sha256}" for s in self.subject if s.sha256}


