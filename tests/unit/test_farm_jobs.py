"""Farm job planning: digest-only image references with a real registry host, stable keys."""

from pathlib import Path

import pytest

from packager.errors import BadInput
from packager.farm.jobs import plan
from packager.platforms import Platform

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
DIGEST = "@sha256:" + "a" * 64


@pytest.mark.parametrize("ref", ["127.0.0.1:5000/x", "registry.example/a/b", "localhost/x", "localhost:5000/x"])
def test_registry_references_by_digest_are_accepted(ref):
    images = {("efficientnet-lite0-armv7", Platform.ARMV7): ref + DIGEST}
    (job,) = plan([ARTIFACTS / "efficientnet-lite0-armv7"], images)
    assert job.image_digest == DIGEST[1:]


@pytest.mark.parametrize("ref", [
    "request-pack/x" + DIGEST,  # no registry host: docker would ask Docker Hub
    "x" + DIGEST,
    "127.0.0.1:5000/x:latest",  # a tag
    "127.0.0.1:5000/x@sha256:abc",
])
def test_other_references_are_refused(ref):
    with pytest.raises(BadInput, match="image"):
        plan([ARTIFACTS / "efficientnet-lite0-armv7"], {("efficientnet-lite0-armv7", Platform.ARMV7): ref})


def test_key_changes_with_what_changes_the_result():
    images = {("efficientnet-lite0-ort", p): "127.0.0.1:5000/x" + DIGEST for p in (Platform.AMD64, Platform.ARM64)}
    full = plan([ARTIFACTS / "efficientnet-lite0-ort"], images, stage="full")
    again = plan([ARTIFACTS / "efficientnet-lite0-ort"], images, stage="full")
    functional = plan([ARTIFACTS / "efficientnet-lite0-ort"], images, stage="functional")
    assert [j.key for j in full] == [j.key for j in again]
    assert len({j.key for j in full + functional}) == 4
    assert all(len(j.name) <= 63 and j.key[:8] in j.name for j in full)


def test_a_platform_without_an_image_is_an_error_naming_the_manifest():
    with pytest.raises(BadInput, match="request.yaml: platforms: no image by digest"):
        plan([ARTIFACTS / "efficientnet-lite0-ort"], {})


def test_the_dataset_is_part_of_the_key(tmp_path):
    from packager.farm.jobs import dataset_identity

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.JPEG").write_bytes(b"x" * 10)
    (data / "labels.tsv").write_text("a.JPEG\tn01440764\t0\ttench\n")
    images = {("efficientnet-lite0-armv7", Platform.ARMV7): "127.0.0.1:5000/x" + DIGEST}
    art = [ARTIFACTS / "efficientnet-lite0-armv7"]
    first = plan(art, images, dataset=data)[0]
    assert first.key == plan(art, images, dataset=data)[0].key != plan(art, images)[0].key
    before = dataset_identity(data)
    (data / "labels.tsv").write_text("a.JPEG\tn01443537\t1\tgoldfish\n")  # relabelled: same sizes, other bytes
    assert dataset_identity(data) != before
    assert plan(art, images, dataset=data)[0].key != first.key
    with pytest.raises(BadInput, match="dataset directory does not exist"):
        plan(art, images, dataset=tmp_path / "missing")
