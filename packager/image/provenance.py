"""What a build says about itself: an SPDX 2.3 SBOM and a SLSA v1 provenance statement.

The SBOM lists every locked input that ends up in the image (each .deb per
architecture, each wheel, the model) with its sha256 and a purl; the
provenance is an in-toto Statement whose subjects are the image index and the
per-platform manifests, with the lock and every file read from the cache as
``resolvedDependencies``. Both are plain JSON; ``packager.bundle`` signs them.

Neither holds a wall-clock time: the SBOM's ``created`` is the images'
SOURCE_DATE_EPOCH and the provenance has no ``metadata`` times, so two builds
of the same lock give the same bytes. When a build ran is ``build-record.json``'s.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from packager import __version__
from packager.attestation import (
    BUILD_TYPE,
    BUILDER_ID,
    SLSA_PROVENANCE_TYPE,
    SPDX_NAMESPACE,
    STATEMENT_TYPE,
)
from packager.image.writer import oci


def _spdx_id(*parts: str) -> str:
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]+", "-", "-".join(parts)).strip("-")


def _purl_deb(name: str, version: str, arch: str) -> str:
    return f"pkg:deb/debian/{name}@{urllib.parse.quote(version, safe='.+~')}?arch={arch}&distro=debian-12"


def _purl_pypi(name: str, version: str) -> str:
    return f"pkg:pypi/{name.lower().replace('_', '-')}@{version}"


def inputs(lock, platforms) -> list[dict]:
    """Every locked file of these platforms plus the model, deduplicated by sha256, in a stable order."""
    seen: dict[str, dict] = {}
    m = lock.model
    seen[m.sha256] = {"kind": "model", "name": m.filename, "version": None, "sha256": m.sha256,
                      "url": m.source.url or m.source.wheel_url or "NOASSERTION", "purl": None, "platforms": []}
    for p in platforms:
        pl = lock.platforms[p.value]
        for d in pl.debian.packages:
            e = seen.setdefault(d.sha256, {"kind": "deb", "name": d.name, "version": d.version, "sha256": d.sha256,
                                           "url": d.url, "filename": d.filename,
                                           "purl": _purl_deb(d.name, d.version, d.architecture), "platforms": []})
            e["platforms"].append(p.value)
        for w in pl.wheels:
            e = seen.setdefault(w.sha256, {"kind": "wheel", "name": w.name, "version": w.version, "sha256": w.sha256,
                                           "url": w.url, "filename": w.filename, "purl": _purl_pypi(w.name, w.version),
                                           "platforms": []})
            e["platforms"].append(p.value)
            # A wheel built from its sdist has no download location of its own: what it was
            # made from (sdist, build backend wheels, target headers) is what a verifier fetches.
            for f in (w.build.inputs() if w.build else ()):
                e = seen.setdefault(f.sha256, {"kind": "build-input", "name": f.filename, "version": None,
                                               "sha256": f.sha256, "url": f.url, "filename": f.filename,
                                               "purl": None, "platforms": []})
                e["platforms"].append(p.value)
    return sorted(seen.values(), key=lambda e: (e["kind"], e["name"], e["sha256"]))


def sbom(manifest, lock, platforms, index: oci.Descriptor, epoch: int) -> dict:
    """The SPDX 2.3 document; ``epoch`` (SOURCE_DATE_EPOCH, the newest of the images') is its ``created``."""
    image_id = _spdx_id("image", manifest.name)
    packages = [{
        "SPDXID": image_id,
        "name": manifest.name,
        "versionInfo": manifest.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": manifest.license,
        "copyrightText": "NOASSERTION",
        "checksums": [{"algorithm": "SHA256", "checksumValue": index.hex}],
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": f"pkg:oci/{manifest.name}@{urllib.parse.quote(index.digest)}"}],
    }]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": image_id}]
    for e in inputs(lock, platforms):
        sid = _spdx_id(e["kind"], e["name"], e["sha256"][:12])
        pkg = {
            "SPDXID": sid,
            "name": e["name"],
            "downloadLocation": e["url"] or "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "checksums": [{"algorithm": "SHA256", "checksumValue": e["sha256"]}],
            "primaryPackagePurpose": "FILE" if e["kind"] == "model" else "LIBRARY",
            "comment": f"{e['kind']}" + (f" for {', '.join(e['platforms'])}" if e["platforms"] else ""),
        }
        if e["version"]:
            pkg["versionInfo"] = e["version"]
        if e.get("filename"):
            pkg["packageFileName"] = e["filename"]
        if e["purl"]:
            pkg["externalRefs"] = [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": e["purl"]}]
        packages.append(pkg)
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": sid})
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{manifest.name}-{manifest.version}",
        "documentNamespace": f"{SPDX_NAMESPACE}/{manifest.name}/{manifest.version}/{index.hex}",
        "creationInfo": {"created": oci.rfc3339(int(epoch)), "creators": [f"Tool: request-pack-{__version__}"]},
        "packages": packages,
        "relationships": relationships,
    }


def provenance(manifest, lock, lock_sha: str, index: oci.Descriptor, images) -> dict:
    subjects = [{"name": f"{manifest.name}@index", "digest": {"sha256": index.hex}}]
    subjects += [{"name": f"{manifest.name}@{img.platform.value}", "digest": {"sha256": img.manifest.hex}} for img in images]
    deps = [{"name": "request.lock", "digest": {"sha256": lock_sha}}]
    # SLSA ResourceDescriptor: ``uri`` is optional, but when present it must be a string.
    deps += [{"name": e.get("filename") or e["name"], **({"uri": e["url"]} if e["url"] else {}),
              "digest": {"sha256": e["sha256"]}}
             for e in inputs(lock, [img.platform for img in images])]
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": SLSA_PROVENANCE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"artifact": manifest.name, "version": manifest.version,
                                       "platforms": [img.platform.value for img in images]},
                "internalParameters": {
                    "manifest_sha256": manifest.digest(),
                    "source_date_epoch": {img.platform.value: img.epoch for img in images},
                    "gzip_level": oci.GZIP_LEVEL,
                    "zlib": oci.zlib_version(),
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"request-pack": __version__}},
                "byproducts": [{"name": f"rootfs {img.platform.value}", "digest": {"sha256": img.rootfs.sha256}} for img in images],
            },
        },
    }


def write_sbom(path: Path, manifest, lock, platforms, index, epoch: int) -> None:
    oci.write_file(path, oci.readable_json(sbom(manifest, lock, platforms, index, epoch)))


def write_provenance(path: Path, manifest, lock, lock_sha, index, images) -> None:
    oci.write_file(path, oci.readable_json(provenance(manifest, lock, lock_sha, index, images)))
