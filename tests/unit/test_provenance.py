"""Provenance and SBOM of a lock whose wheels include one built from its sdist (LoadGen on armv7)."""

from pathlib import Path

from packager.image import provenance
from packager.image.writer import oci
from packager.inputs.lock import load_lock
from packager.manifest import load_manifest
from packager.platforms import Platform

ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "efficientnet-lite0-armv7"


def _index() -> oci.Descriptor:
    return oci.Descriptor(media_type=oci.MT_INDEX, digest="sha256:" + "0" * 64, size=1)


def test_built_wheel_lists_its_sources_and_no_null_uri():
    lock = load_lock(ARTIFACT / "request.lock")
    built = [w for w in lock.platforms[Platform.ARMV7.value].wheels if w.build]
    assert built, "the armv7 artifact pins a wheel built from its sdist"
    entries = {e["sha256"]: e for e in provenance.inputs(lock, [Platform.ARMV7])}
    for wheel in built:
        assert wheel.sha256 in entries
        for source in wheel.build.inputs():
            assert entries[source.sha256]["url"] == source.url, source.filename

    manifest = load_manifest(ARTIFACT)
    doc = provenance.sbom(manifest, lock, [Platform.ARMV7], _index(), 0)
    locations = {p.get("name"): p.get("downloadLocation") for p in doc["packages"]}
    assert locations[built[0].build.sdist.filename].startswith("https://")
    assert all(isinstance(v, str) for v in locations.values())


def test_provenance_dependencies_have_string_uris_or_none():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Rootfs:
        sha256: str

    @dataclass(frozen=True)
    class Image:  # the three fields provenance() reads of a built platform image
        platform: Platform
        manifest: oci.Descriptor
        epoch: int
        rootfs: Rootfs

    lock = load_lock(ARTIFACT / "request.lock")
    manifest = load_manifest(ARTIFACT)
    image = Image(Platform.ARMV7, _index(), 0, Rootfs("1" * 64))
    doc = provenance.provenance(manifest, lock, "2" * 64, _index(), [image], 0, 0)
    deps = doc["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert all(isinstance(d.get("uri", ""), str) for d in deps)
    sdist = next(w for w in lock.platforms[Platform.ARMV7.value].wheels if w.build).build.sdist
    assert {"name": sdist.filename, "uri": sdist.url, "digest": {"sha256": sdist.sha256}} in deps
