"""``build`` says whether the index digest is the one the artifact publishes beside its lock (image.json)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from packager.image import build as builder
from packager.image.writer import oci
from packager.platforms import Platform

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "lock-basic"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
LOCK = "a" * 64
INDEX = "sha256:" + "1" * 64


def _result(digest: str = INDEX, lock: str = LOCK, platforms=("linux/amd64", "linux/arm64"),
            harness: str = "sha256:" + "h" * 64) -> builder.BuildResult:
    # compare_published reads the index, the record's lock and the images' platforms only
    images = tuple(SimpleNamespace(platform=Platform(p), layers=[SimpleNamespace(role="harness", digest=harness)])
                   for p in platforms)
    return builder.BuildResult("lock-basic", Path("b"), Path("b/oci"), oci.Descriptor(oci.MT_INDEX, digest, 1),
                               images, {"lock_sha256": lock}, 0.0)  # type: ignore[arg-type]


@pytest.fixture()
def art(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "art")
    return tmp_path / "art"


def test_written_then_matched(art: Path) -> None:
    assert builder.compare_published(art, _result()).status == "unpublished"
    path = builder.write_published(art, _result())
    assert json.loads(path.read_text()) == {"index_digest": INDEX, "lock_sha256": LOCK,
                                            "platforms": ["linux/amd64", "linux/arm64"],
                                            "harness": {p: "sha256:" + "h" * 64 for p in ("linux/amd64", "linux/arm64")}}
    assert builder.compare_published(art, _result()).matches


def test_another_digest_differs_and_says_both(art: Path) -> None:
    builder.write_published(art, _result())
    other = "sha256:" + "2" * 64
    c = builder.compare_published(art, _result(digest=other))
    assert c.status == "differs" and INDEX in c.detail and other in c.detail


@pytest.mark.parametrize("kw", [{"lock": "b" * 64}, {"platforms": ("linux/amd64",)},
                                {"digest": "sha256:" + "3" * 64, "harness": "sha256:" + "4" * 64}])
def test_another_lock_or_a_subset_of_platforms_is_not_comparable(art: Path, kw: dict) -> None:
    builder.write_published(art, _result())
    assert builder.compare_published(art, _result(**kw)).status == "not-comparable"


@pytest.mark.parametrize("name", sorted(p.parent.name for p in ARTIFACTS.glob("*/image.json")))
def test_every_published_digest_is_for_the_committed_lock(name: str) -> None:
    from packager.cache import sha256_file

    pub = builder.published(ARTIFACTS / name)
    assert pub is not None and re.fullmatch(r"sha256:[0-9a-f]{64}", pub.index_digest)
    assert pub.lock_sha256 == sha256_file(ARTIFACTS / name / "request.lock"), "re-lock without re-publishing image.json"
