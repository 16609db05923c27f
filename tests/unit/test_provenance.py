"""The SBOM and the SLSA provenance: what they list, that real validators accept them, and that they
carry no wall-clock time (two builds of one lock give the same bytes)."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from packager.attestation import BUILD_TYPE, BUILDER_ID
from packager.image import provenance
from packager.image.writer import oci
from packager.inputs.lockfile import load_lock
from packager.manifest import load_manifest
from packager.platforms import Platform

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# one artifact, three platforms in one index; its armv7 LoadGen wheel is built from the sdist
ARMV7 = ORT = ARTIFACTS / "efficientnet-lite0"


@dataclass(frozen=True)
class Rootfs:
    sha256: str


@dataclass(frozen=True)
class Image:  # the fields provenance() reads of a built platform image (build.PlatformImage)
    platform: Platform
    manifest: oci.Descriptor
    epoch: int
    rootfs: Rootfs


def _desc(media_type: str, n: int) -> oci.Descriptor:
    return oci.Descriptor(media_type=media_type, digest=f"sha256:{n:064x}", size=100 + n)


def _documents(artifact: Path, epochs: dict[Platform, int]) -> tuple[dict, dict]:
    lock, manifest = load_lock(artifact / "request.lock"), load_manifest(artifact)
    images = [Image(p, _desc(oci.MT_MANIFEST, i + 1), e, Rootfs(f"{i + 7:064x}")) for i, (p, e) in enumerate(epochs.items())]
    index = _desc(oci.MT_INDEX, 99)
    sbom = provenance.sbom(manifest, lock, list(epochs), index, max(epochs.values()))
    return sbom, provenance.provenance(manifest, lock, "2" * 64, index, images)


def test_built_wheel_lists_its_sources_and_no_null_uri():
    lock = load_lock(ARMV7 / "request.lock")
    built = [w for w in lock.platforms[Platform.ARMV7.value].wheels if w.build]
    assert built, "the armv7 artifact pins a wheel built from its sdist"
    entries = {e["sha256"]: e for e in provenance.inputs(lock, [Platform.ARMV7])}
    for wheel in built:
        assert wheel.sha256 in entries
        for source in wheel.build.inputs():
            assert entries[source.sha256]["url"] == source.url, source.filename

    doc, prov = _documents(ARMV7, {Platform.ARMV7: 0})
    locations = {p.get("name"): p.get("downloadLocation") for p in doc["packages"]}
    assert locations[built[0].build.sdist.filename].startswith("https://")
    assert all(isinstance(v, str) for v in locations.values())
    deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert all(isinstance(d.get("uri", ""), str) for d in deps)
    sdist = built[0].build.sdist
    assert {"name": sdist.filename, "uri": sdist.url, "digest": {"sha256": sdist.sha256}} in deps


def _validate_spdx(doc: dict, tmp_path: Path) -> list:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import (
        validate_full_spdx_document,
    )

    path = tmp_path / "sbom.spdx.json"  # spdx-tools picks its JSON parser by this suffix
    path.write_text(json.dumps(doc))
    return validate_full_spdx_document(parse_file(str(path)))


@pytest.mark.parametrize("artifact, epochs", [
    (ORT, {Platform.AMD64: 1_700_000_000, Platform.ARM64: 1_700_000_500}),
    (ARMV7, {Platform.ARMV7: 1_690_000_000}),
])
def test_sbom_is_valid_spdx_2_3_dated_by_the_epoch(artifact, epochs, tmp_path):
    doc, _ = _documents(artifact, epochs)
    messages = _validate_spdx(doc, tmp_path)
    assert not messages, [m.validation_message for m in messages[:5]]
    assert doc["creationInfo"]["created"] == oci.rfc3339(max(epochs.values()))
    assert doc["documentNamespace"].startswith("https://request-pack.org/spdx/")


def test_the_spdx_validator_is_not_a_rubber_stamp(tmp_path):
    doc, _ = _documents(ARMV7, {Platform.ARMV7: 0})
    doc["relationships"].append({"spdxElementId": "SPDXRef-image-nothing", "relationshipType": "CONTAINS",
                                 "relatedSpdxElement": doc["packages"][1]["SPDXID"]})
    assert _validate_spdx(doc, tmp_path)


def _parse_provenance(doc: dict):
    """in-toto's own protobuf bindings; json_format.Parse rejects unknown fields, validate() bad values."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    statement = json_format.Parse(json.dumps(doc), statement_pb2.Statement())
    Statement.copy_from_pb(statement).validate()
    predicate = json_format.Parse(json.dumps(doc["predicate"]), provenance_pb2.Provenance())
    for rd in [*predicate.build_definition.resolved_dependencies, *predicate.run_details.byproducts]:
        ResourceDescriptor.copy_from_pb(rd).validate()
    return statement, predicate


@pytest.mark.parametrize("artifact, epochs", [
    (ORT, {Platform.AMD64: 1_700_000_000, Platform.ARM64: 1_700_000_500}),
    (ARMV7, {Platform.ARMV7: 1_690_000_000}),
])
def test_provenance_is_a_valid_slsa_v1_statement(artifact, epochs):
    _, doc = _documents(artifact, epochs)
    statement, predicate = _parse_provenance(doc)
    assert statement.predicate_type == "https://slsa.dev/provenance/v1"
    assert {s.name for s in statement.subject} == {f"{load_manifest(artifact).name}@{x}" for x in ["index", *(p.value for p in epochs)]}
    assert predicate.build_definition.build_type == BUILD_TYPE == "https://request-pack.org/buildtypes/oci-layout/v1"
    assert predicate.run_details.builder.id == BUILDER_ID == "https://request-pack.org/builder/request-pack"
    assert "request-pack" in predicate.run_details.builder.version
    # No wall-clock time: metadata (startedOn/finishedOn) would make two builds differ.
    assert not predicate.run_details.HasField("metadata")


def test_provenance_with_an_unknown_field_is_rejected():
    from google.protobuf.json_format import ParseError

    _, doc = _documents(ARMV7, {Platform.ARMV7: 0})
    doc["predicate"]["runDetails"]["startedOn"] = "2026-01-01T00:00:00Z"  # belongs under metadata
    with pytest.raises(ParseError):
        _parse_provenance(doc)


def test_written_documents_are_the_same_bytes_whenever_written(tmp_path, monkeypatch):
    import time

    lock, manifest = load_lock(ORT / "request.lock"), load_manifest(ORT)
    images = [Image(Platform.AMD64, _desc(oci.MT_MANIFEST, 1), 1_700_000_000, Rootfs("7" * 64))]
    written = []
    for n, now in enumerate((1_800_000_000.0, 1_900_000_000.0)):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        d = tmp_path / str(n)
        d.mkdir()
        provenance.write_sbom(d / "sbom.spdx.json", manifest, lock, [Platform.AMD64], _desc(oci.MT_INDEX, 9), 1_700_000_000)
        provenance.write_provenance(d / "provenance.json", manifest, lock, "2" * 64, _desc(oci.MT_INDEX, 9), images)
        written.append(((d / "sbom.spdx.json").read_bytes(), (d / "provenance.json").read_bytes()))
    assert written[0] == written[1]
    assert b"2027" not in written[0][0] + written[0][1] and b"2030" not in written[0][0] + written[0][1]
