"""``evaluate --image REGISTRY/REPO@sha256:…``: the image comes from a real registry, by digest.

A ``docker-registry`` (Debian's distribution 2.8) serves on a free 127.0.0.1 port
from a temporary directory. The example artifact is copied with a version of its
own, so its image (the version is a label in the config) exists nowhere else; it
is built without loading into any engine (``runner_helpers.unique_artifact``) and
pushed with every digest kept. ``evaluate`` must then read
the index from the registry, copy the platform's image into docker and find the
config digest the registry's manifest names; a requeued ``--resume`` continues a
torn predictions.jsonl. A tag and an unknown digest are refused.
"""

from __future__ import annotations

import json
import time

import pytest
from runner_helpers import cli, forget_image, unique_artifact  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

@pytest.fixture(scope="module")
def pushed(registry, unique_artifact, docker_client):
    """(artifact dir, index digest, config digest of amd64): pushed, and in no engine."""
    from packager.engine import push

    art, record = unique_artifact
    push(art.parent.parent / "build" / art.name / "oci", "latest", f"{registry}/request-pack/{art.name}:latest")
    config = record["platforms"]["linux/amd64"]["config_digest"]
    forget_image(docker_client, config)
    return art, record["index_digest"], config


def test_evaluate_pulls_by_digest_and_resumes(registry, pushed, shared_sample, docker_client, tmp_path):
    import docker.errors

    art, index, config = pushed
    root = art.parent.parent
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(config)  # so the run below cannot use anything but the registry's image
    keys = tmp_path / "keys"
    assert cli("keygen", "--out", str(keys), cwd=root).returncode == 0
    out = tmp_path / "results"
    image = f"{registry}/request-pack/{art.name}@{index}"
    t0 = time.monotonic()
    res = cli("evaluate", str(art), "--image", image, "--stage", "functional", "--dataset", str(shared_sample),
               "--out", str(out), "--key", str(keys / "signing.key"), cwd=root)
    print(f"evaluate --image (pull + functional + sign + verify): {time.monotonic() - t0:.1f} s")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert docker_client.images.get(config).id == config
    run = json.loads((out / "functional" / "run.json").read_text())
    assert run["image"]["config_digest"] == config and run["image"]["index_digest"] == index
    assert not (out / "full").exists()
    bundle = out / f"{art.name}-linux-amd64-functional.bundle.tar.gz"
    ok = cli("verify", str(bundle), "--trust", str(keys / "signing.pub"), "--dataset", str(shared_sample), cwd=root)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "functional" in (out / "functional" / "metrics.json").read_text()

    # A requeued job: 7 whole lines and a torn eighth survive; --resume finishes the other 13 exactly once.
    preds = out / "functional" / "predictions.jsonl"
    lines = preds.read_bytes().splitlines(keepends=True)
    assert len(lines) == 20
    preds.write_bytes(b"".join(lines[:7]) + lines[7][:25])
    res = cli("evaluate", str(art), "--image", image, "--stage", "functional", "--resume", "--dataset", str(shared_sample),
               "--out", str(out), "--key", str(keys / "signing.key"), cwd=root)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    ids = [json.loads(line)["id"] for line in preds.read_text().splitlines()]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert [json.loads(line)["id"] for line in lines[:7]] == ids[:7]
    run = json.loads((out / "functional" / "run.json").read_text())
    assert run["resumed_after"] == 7
    ok = cli("verify", str(bundle), "--trust", str(keys / "signing.pub"), "--dataset", str(shared_sample), cwd=root)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # Requeued once more: the finished stage is kept, not run again, and signed again.
    res = cli("evaluate", str(art), "--image", image, "--stage", "functional", "--resume", "--dataset", str(shared_sample),
               "--out", str(out), "--key", str(keys / "signing.key"), cwd=root)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert json.loads((out / "functional" / "run.json").read_text())["run_id"] == run["run_id"]
    assert len(preds.read_text().splitlines()) == 20
    ok = cli("verify", str(bundle), "--trust", str(keys / "signing.pub"), "--dataset", str(shared_sample), cwd=root)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_evaluate_refuses_tags_and_unknown_digests(registry, pushed, shared_sample, tmp_path):
    art, _, _ = pushed
    root = art.parent.parent
    res = cli("evaluate", str(art), "--image", f"{registry}/request-pack/{art.name}:latest", "--stage", "functional",
               "--dataset", str(shared_sample), "--out", str(tmp_path / "r"), cwd=root)
    assert res.returncode == 2 and "by digest only" in res.stderr, res.stderr
    res = cli("evaluate", str(art), "--image", f"{registry}/request-pack/{art.name}@sha256:{'0' * 64}", "--stage", "functional",
               "--dataset", str(shared_sample), "--out", str(tmp_path / "r"), cwd=root)
    assert res.returncode == 3 and "stage 'image'" in res.stderr, res.stderr
