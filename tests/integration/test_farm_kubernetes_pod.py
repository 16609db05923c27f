"""The rendered Job's pod, run as a kubelet would run it, on the real image pulled from a real registry by digest.

No Kubernetes can run here, so the unit tests validate the YAML against the API's
schemas; this test checks what a schema cannot: that the containers' command and
arguments work inside the image the farm names. ``request-pack farm submit --scheduler
kubernetes --dry-run`` builds the example artifact, pushes it to a ``docker-registry``
on 127.0.0.1 and writes the Job; the test pulls the Job's ``image`` string as it is and runs each
container of the pod, init containers first, with ``docker run`` options read
from the YAML (user and group, read-only root, capabilities, no privilege
escalation, the volume mounts with their read-only flags); a field the
translation does not know fails the test. Then a replaced pod: the full stage's
predictions are torn mid-line and the pod runs again; ``--resume`` must finish
them with no id lost or repeated. Last, ``farm collect --scheduler kubernetes`` seals
those outputs (as the evaluator would, outside the cluster) and publishes them to
a real sqlite scoreboard; a second collect seals and publishes nothing new.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from runner_helpers import cli, copy_with_unique_version

from packager.farm import kubernetes as k8s
from packager.manifest import load_manifest

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "artifacts" / "efficientnet-lite0"
SUBSET = 60  # images of the shared sample: the full stage runs on all of them, twice
# Fields of a container and its securityContext that the docker translation below honours;
# anything else in the YAML would run untested, so it fails the test instead.
KNOWN_CONTAINER = {"name", "image", "imagePullPolicy", "command", "args", "securityContext", "volumeMounts",
                   "terminationMessagePolicy", "resources"}
KNOWN_SECURITY = {"runAsNonRoot", "runAsUser", "runAsGroup", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
                  "privileged", "capabilities", "seccompProfile"}


@dataclass(frozen=True)
class Submitted:
    doc: dict  # the Job
    config: str  # config digest of its amd64 image
    argv: list[str]  # the farm submit command line, without --dry-run
    root: Path


@pytest.fixture(scope="module")
def job_yaml(registry, tmp_path_factory) -> Submitted:
    """The Job ``request-pack farm submit --scheduler kubernetes --dry-run`` writes for the example
    artifact (amd64, stage all), whose image it built and pushed, and which no engine holds."""
    root = tmp_path_factory.mktemp("k8s-pod")
    art = copy_with_unique_version(ARTIFACT, root, "k8s")  # an image that exists in no engine yet
    for step in (["lock", str(art)], ["fetch", str(art)]):
        res = cli(*step, cwd=root)
        assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    argv = ["farm", "submit", str(art), "--scheduler", "kubernetes", "--registry", registry, "--platform", "linux/amd64",
            "--stage", "all", "--results", str(root / "k8s")]
    t0 = time.monotonic()
    res = cli(*argv, "--dry-run", cwd=root)
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    print(f"farm submit --scheduler kubernetes --dry-run (build + push + render): {time.monotonic() - t0:.1f} s")
    written = sorted((root / "k8s").glob("*.job.yaml"))
    assert len(written) == 1 and written[0].name in res.stdout.replace("\n", "")
    assert (root / "k8s" / k8s.NETWORK_POLICY_FILE).is_file()
    record = json.loads((root / "build" / art.name / "build-record.json").read_text())
    doc = yaml.safe_load(written[0].read_text())
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"{registry}/request-pack/{art.name}@{record['index_digest']}"
    # Dry run again: the same file, byte for byte (the name and content derive from the inputs).
    before = written[0].read_bytes()
    res = cli(*argv, "--dry-run", cwd=root)
    assert res.returncode == 0 and sorted((root / "k8s").glob("*.job.yaml")) == written
    assert written[0].read_bytes() == before
    config = record["platforms"]["linux/amd64"]["config_digest"]
    yield Submitted(doc, config, argv, root)
    subprocess.run(["docker", "image", "rm", "--force", config], capture_output=True)


def _subset(sample: Path, dest: Path, n: int) -> Path:
    """The first ``n`` images of the sample, copied (a bind mount cannot follow links out of it)."""
    (dest / "images").mkdir(parents=True)
    header, *rows = (sample / "labels.tsv").read_text().splitlines()
    for row in rows[:n]:
        shutil.copy2(sample / "images" / row.split("\t", 1)[0], dest / "images")
    (dest / "labels.tsv").write_text("\n".join([header, *rows[:n]]) + "\n")
    for extra in ("synsets.tsv",):
        if (sample / extra).is_file():
            shutil.copy2(sample / extra, dest / extra)
    return dest


def _docker_run(pod: dict, container: dict, volumes: dict[str, Path], name: str) -> list[str]:
    assert set(container) <= KNOWN_CONTAINER, set(container) - KNOWN_CONTAINER
    sc = container["securityContext"]
    assert set(sc) <= KNOWN_SECURITY, set(sc) - KNOWN_SECURITY
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}  # docker's default profile
    assert sc["privileged"] is False and sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    argv = ["docker", "run", "--rm", "--name", name, "--network", "none", "--pull", "never",
            "--user", f"{sc['runAsUser']}:{sc['runAsGroup']}", "--group-add", str(pod["securityContext"]["fsGroup"])]
    if sc["readOnlyRootFilesystem"]:
        argv.append("--read-only")
    if sc["allowPrivilegeEscalation"] is False:
        argv += ["--security-opt", "no-new-privileges"]
    for cap in sc["capabilities"]["drop"]:
        argv += ["--cap-drop", cap]
    for mount in container["volumeMounts"]:
        argv += ["-v", f"{volumes[mount['name']]}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
    command = container["command"]
    return argv + ["--entrypoint", command[0], container["image"], *command[1:], *container["args"]]


def _run_pod(doc: dict, volumes: dict[str, Path]) -> None:
    """Init containers in order, then the container, each to completion: a pod with restartPolicy Never."""
    pod = doc["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    for container in pod.get("initContainers", []) + pod["containers"]:
        res = subprocess.run(_docker_run(pod, container, volumes, f"rp-k8s-{uuid.uuid4().hex[:8]}"),
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{container['name']}: {(res.stdout + res.stderr)[-3000:]}"


def test_the_jobs_pod_runs_in_the_image_and_a_replacement_resumes(job_yaml, shared_sample, tmp_path):
    doc, config = job_yaml.doc, job_yaml.config
    pod = doc["spec"]["template"]["spec"]
    image = pod["containers"][0]["image"]
    assert subprocess.run(["docker", "image", "inspect", config], capture_output=True).returncode != 0
    pulled = subprocess.run(["docker", "pull", "--quiet", image], capture_output=True, text=True, timeout=600)
    assert pulled.returncode == 0, pulled.stderr
    assert subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                          capture_output=True, text=True).stdout.strip() == config

    # The results claim: owned by root, group-writable for the pod's fsGroup, as the kubelet leaves it.
    results, scratch, tensors = tmp_path / "results", tmp_path / "scratch", tmp_path / "tensor-cache"
    results.mkdir()
    scratch.mkdir()
    tensors.mkdir()
    os.chown(results, 0, pod["securityContext"]["fsGroup"])
    results.chmod(0o2775)
    scratch.chmod(0o1777)  # an emptyDir is world-writable
    tensors.chmod(0o1777)
    volumes = {"dataset": _subset(shared_sample, tmp_path / "dataset", SUBSET), "results": results, "scratch": scratch,
               "tensor-cache": tensors}
    t0 = time.monotonic()
    _run_pod(doc, volumes)
    print(f"pod (functional init container + full container): {time.monotonic() - t0:.1f} s")

    job_dir = results / doc["metadata"]["name"]
    manifest = load_manifest(ARTIFACT)
    for stage, samples in (("functional", 20), ("full", SUBSET)):
        metrics = json.loads((job_dir / stage / "metrics.json").read_text())
        assert metrics["accuracy"]["samples"] == samples
        # The manifest's thresholds (0.5 functional, 0.65 full); chance is 0.001.
        assert metrics["accuracy"]["top1"] >= getattr(manifest.run.stages, stage).min_top1
        system = json.loads((job_dir / stage / "system.json").read_text())
        assert system["image_digest"] == image.rsplit("@", 1)[1]

    # A replaced pod (node lost mid-write): 25 whole lines and a torn 26th survive.
    preds = job_dir / "full" / "predictions.jsonl"
    lines = preds.read_bytes().splitlines(keepends=True)
    assert len(lines) == SUBSET
    preds.write_bytes(b"".join(lines[:25]) + lines[25][:30])
    t0 = time.monotonic()
    _run_pod(doc, volumes)
    print(f"replacement pod (functional all resumed, full from 25): {time.monotonic() - t0:.1f} s")
    ids = [json.loads(line)["id"] for line in preds.read_text().splitlines()]
    assert len(ids) == SUBSET and len(set(ids)) == SUBSET
    assert [json.loads(line)["id"] for line in lines[:25]] == ids[:25]
    assert len((job_dir / "functional" / "predictions.jsonl").read_text().splitlines()) == 20

    # Outside the cluster, by `farm collect --scheduler kubernetes`: min_top1 checked, bundled, signed,
    # verified and published to a real scoreboard; then verified again by the CLI.
    from packager.bundle.keys import generate_keypair

    generate_keypair(tmp_path / "keys", "evaluator")
    art = job_yaml.root / "artifacts" / ARTIFACT.name
    job_file = job_yaml.root / "k8s" / f"{doc['metadata']['name']}.job.yaml"
    board = tmp_path / "board.db"
    collect = ("farm", "collect", "--scheduler", "kubernetes", "--jobs", str(job_yaml.root / "k8s"), "--results", str(results),
               "--board", f"sqlite:///{board}", "--trust", str(tmp_path / "keys" / "evaluator.pub"),
               "--key", str(tmp_path / "keys" / "evaluator.key"), "--dataset", str(volumes["dataset"]))
    t0 = time.monotonic()
    first = cli(*collect, cwd=job_yaml.root)  # the artifact is found under ./artifacts by its manifest digest
    print(f"farm collect --scheduler kubernetes (seal + publish): {time.monotonic() - t0:.1f} s")
    assert first.returncode == 0, first.stdout + first.stderr
    out = " ".join(first.stdout.split())
    assert "sealed and published" in out and "1 published" in out, out
    bundle = job_dir / f"{art.name}-linux-amd64.bundle.tar.gz"
    assert bundle.is_file() and (job_dir / "done.json").is_file()
    sealed = bundle.read_bytes()
    ok = cli("verify", str(bundle), "--trust", str(tmp_path / "keys" / "evaluator.pub"), "--dataset", str(volumes["dataset"]),
              "--artifact", str(art), cwd=job_yaml.root)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # Sealing again, directly or by a second collect, returns the same bundle and publishes nothing new.
    again = k8s.seal(job_file, results, artifact_dir=art, dataset=volumes["dataset"], key=tmp_path / "keys" / "evaluator.key")
    assert again == bundle and bundle.read_bytes() == sealed
    t0 = time.monotonic()
    second = cli(*collect, cwd=job_yaml.root)
    print(f"second farm collect (nothing new): {time.monotonic() - t0:.1f} s")
    assert second.returncode == 0, second.stdout + second.stderr
    out = " ".join(second.stdout.split())
    assert "1 present" in out and "sealed" not in out and "published" not in out, out
    assert bundle.read_bytes() == sealed
    with sqlite3.connect(board) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        table = "results" if "results" in tables else next(t for t in tables if "result" in t)
        assert db.execute(f"select count(*) from {table}").fetchone()[0] == 1


def test_cli_apply_without_a_cluster_exits_3(job_yaml, tmp_path):
    """Without --dry-run and with no kubeconfig, the CLI says so in one line and exits 3, after writing the Jobs."""
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "missing-kubeconfig"))
    res = subprocess.run([sys.executable, "-m", "packager.cli", *job_yaml.argv], cwd=job_yaml.root, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "no usable kubeconfig" in res.stderr and str(tmp_path / "missing-kubeconfig") in res.stderr
    assert "Traceback" not in res.stderr
