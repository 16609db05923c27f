"""Farm job planning: digest-only image references with a real registry host, stable keys."""

from pathlib import Path

import pytest

from packager.errors import BadInput
from packager.farm.jobs import plan
from packager.platforms import Platform

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
LITE0 = "efficientnet-lite0"  # amd64 and arm64 on onnxruntime, arm/v7 on the reference executor
DIGEST = "@sha256:" + "a" * 64


@pytest.mark.parametrize("ref", ["127.0.0.1:5000/x", "registry.example/a/b", "localhost/x", "localhost:5000/x"])
def test_registry_references_by_digest_are_accepted(ref):
    images = {(LITE0, p): ref + DIGEST for p in (Platform.AMD64, Platform.ARM64, Platform.ARMV7)}
    jobs = plan([ARTIFACTS / LITE0], images)
    assert sorted(j.platform.value for j in jobs) == ["linux/amd64", "linux/arm/v7", "linux/arm64"]
    job = jobs[0]
    assert job.image_digest == DIGEST[1:]


@pytest.mark.parametrize("ref", [
    "request-pack/x" + DIGEST,  # no registry host: docker would ask Docker Hub
    "x" + DIGEST,
    "127.0.0.1:5000/x:latest",  # a tag
    "127.0.0.1:5000/x@sha256:abc",
])
def test_other_references_are_refused(ref):
    with pytest.raises(BadInput, match="image"):
        plan([ARTIFACTS / LITE0], {(LITE0, p): ref for p in (Platform.AMD64, Platform.ARM64, Platform.ARMV7)})


def test_key_changes_with_what_changes_the_result():
    images = {(LITE0, p): "127.0.0.1:5000/x" + DIGEST for p in (Platform.AMD64, Platform.ARM64, Platform.ARMV7)}
    full = plan([ARTIFACTS / LITE0], images, stage="full")
    again = plan([ARTIFACTS / LITE0], images, stage="full")
    functional = plan([ARTIFACTS / LITE0], images, stage="functional")
    assert [j.key for j in full] == [j.key for j in again]
    assert len({j.key for j in full + functional}) == 6
    assert all(len(j.name) <= 63 and j.key[:8] in j.name for j in full)


def test_a_platform_without_an_image_is_an_error_naming_the_manifest():
    with pytest.raises(BadInput, match="request.yaml: platforms: no image by digest"):
        plan([ARTIFACTS / LITE0], {})


def test_the_dataset_is_part_of_the_key(tmp_path):
    from packager.farm.jobs import dataset_identity

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.JPEG").write_bytes(b"x" * 10)
    (data / "labels.tsv").write_text("a.JPEG\tn01440764\t0\ttench\n")
    images = {(LITE0, p): "127.0.0.1:5000/x" + DIGEST for p in (Platform.AMD64, Platform.ARM64, Platform.ARMV7)}
    art = [ARTIFACTS / LITE0]
    first = plan(art, images, dataset=data)[0]
    assert first.key == plan(art, images, dataset=data)[0].key != plan(art, images)[0].key
    before = dataset_identity(data)
    (data / "labels.tsv").write_text("a.JPEG\tn01443537\t1\tgoldfish\n")  # relabelled: same sizes, other bytes
    assert dataset_identity(data) != before
    assert plan(art, images, dataset=data)[0].key != first.key
    with pytest.raises(BadInput, match="dataset directory does not exist"):
        plan(art, images, dataset=tmp_path / "missing")
