"""Kubernetes Jobs of the farm: rendered from the real artifacts, validated offline in strict mode.

No API server can run here: the manifests are checked against the published
OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors) of the
oldest and newest Kubernetes we target, and the fields that matter are checked
by hand. Applying is checked up to where a cluster would be needed: a missing
kubeconfig, and a kubeconfig whose server refuses connections (a closed port on
127.0.0.1), are both the typed error with exit code 3.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from packager.contract import CONFIG_PATH, MODEL_PATH
from packager.errors import BadInput, CheckFailed, ClusterUnavailable, StageFailed
from packager.farm import kubernetes as k8s
from packager.farm.jobs import FarmJob, plan
from packager.manifest import load_manifest
from packager.platforms import Platform
from packager.run.runner import RunOptions, harness_argv

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = sorted(p.parent for p in (REPO / "artifacts").glob("*/request.yaml"))
# The oldest Kubernetes the Jobs target (podFailurePolicy and podReplacementPolicy on by default)
# and the newest whose schema kubernetes-validate ships.
SCHEMA_VERSIONS = ("1.30.0", "1.37.0")


def _ref(name: str, platform: Platform) -> str:
    # Well-formed digest references, distinct per (artifact, platform): test input for plan().
    digest = hashlib.sha256(f"{name} {platform}".encode()).hexdigest()
    return f"registry.test:5000/request-pack/{name}@sha256:{digest}"


def _images(dirs: list[Path]) -> dict[tuple[str, Platform], str]:
    names = [load_manifest(d).name for d in dirs]
    return {(n, p): _ref(n, p) for n in names for p in Platform}


def _validate(doc: dict) -> None:
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _pod(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def _containers(doc: dict) -> list[dict]:
    return _pod(doc).get("initContainers", []) + _pod(doc)["containers"]


@pytest.fixture(scope="module")
def all_jobs() -> list[FarmJob]:
    return plan(ARTIFACTS, _images(ARTIFACTS))


@pytest.fixture(scope="module")
def rendered(all_jobs, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("k8s")
    paths = k8s.submit(all_jobs, out=out, dry_run=True)
    assert [p.name for p in paths] == [f"{j.name}.job.yaml" for j in all_jobs]
    return {p.name.removesuffix(".job.yaml"): _load(p) for p in paths} | {
        "__policy__": _load(out / k8s.NETWORK_POLICY_FILE)}


def test_every_artifact_and_platform_gets_a_job(all_jobs):
    got = {(j.artifact, j.platform) for j in all_jobs}
    want = {(load_manifest(d).name, p) for d in ARTIFACTS for p in load_manifest(d).platforms}
    assert got == want and len(all_jobs) == len(want)
    assert any(j.platform is Platform.ARMV7 for j in all_jobs)


def test_jobs_and_policy_validate_strictly(rendered):
    for doc in rendered.values():
        _validate(doc)


def test_strict_validation_rejects_an_unknown_field(rendered, all_jobs):
    # The check above would be worthless if the validator let anything through.
    doc = yaml.safe_load(yaml.safe_dump(rendered[all_jobs[0].name]))
    _pod(doc)["containers"][0]["securityContext"]["runAsRoot"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, SCHEMA_VERSIONS[-1], strict=True)


def test_image_by_digest_and_name_carries_the_key(rendered, all_jobs):
    for job in all_jobs:
        doc = rendered[job.name]
        assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "Job"
        assert doc["metadata"]["name"] == job.name and job.name.endswith(job.key[:8]) and len(job.name) <= 63
        assert doc["metadata"]["namespace"] == "request-pack"
        assert doc["metadata"]["annotations"]["request-pack.io/key"] == job.key
        assert doc["metadata"]["labels"]["request-pack.io/key-prefix"] == job.key[:16]
        for c in _containers(doc):
            assert c["image"] == _ref(job.artifact, job.platform)
            assert "@sha256:" in c["image"] and ":latest" not in c["image"]


def test_node_selector_per_platform(rendered, all_jobs):
    want = {Platform.AMD64: {"kubernetes.io/arch": "amd64"}, Platform.ARM64: {"kubernetes.io/arch": "arm64"},
            Platform.ARMV7: {"kubernetes.io/arch": "arm", "request-pack.io/arch-variant": "v7"}}
    for job in all_jobs:
        assert _pod(rendered[job.name])["nodeSelector"] == want[job.platform]


def test_sandbox_in_pod_terms(rendered, all_jobs):
    for job in all_jobs:
        doc = rendered[job.name]
        pod = _pod(doc)
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        assert pod["restartPolicy"] == "Never"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
        assert doc["spec"]["backoffLimit"] == 3 and doc["spec"]["ttlSecondsAfterFinished"] > 0
        assert doc["spec"]["podReplacementPolicy"] == "Failed"
        for c in _containers(doc):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert mounts["/data"]["readOnly"] is True
            assert set(mounts) == {"/data", "/out", "/tmp", "/tmp/cache"}
            assert "resources" not in c  # CPU-only artifacts: no device-plugin resource
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["dataset"]["persistentVolumeClaim"] == {"claimName": "request-pack-dataset", "readOnly": True}
        assert vols["results"]["persistentVolumeClaim"] == {"claimName": "request-pack-results"}
        assert "emptyDir" in vols["scratch"]
        # the tensor cache is on node disk (no medium: Memory), sized for the 50,000-image validation set
        assert vols["tensor-cache"]["emptyDir"] == {"sizeLimit": "8Gi"}
        assert "tolerations" not in pod


def test_stage_all_runs_functional_before_full(rendered, all_jobs):
    for job in all_jobs:
        names = [c["name"] for c in _containers(rendered[job.name])]
        assert names == ["functional", "full"]
        for c in _containers(rendered[job.name]):
            args = c["args"]
            assert args[args.index("--stage") + 1] == c["name"]
            assert args[args.index("--out") + 1] == f"/out/{job.name}/{c['name']}"
            assert "--resume" in args


def test_network_policy_denies_all_for_the_farms_pods(rendered, all_jobs):
    policy = rendered["__policy__"]
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for job in all_jobs:
        pod_labels = rendered[job.name]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()


def test_argv_is_the_local_runners_on_a_native_node(all_jobs):
    # The pod runs where its platform is native, so the runner's argv for a native run is the
    # reference: the same flags and values, except --out (a directory per job on the claim)
    # and --resume (always, so a replaced pod continues).
    native = Platform.native()
    job = next(j for j in all_jobs if j.platform is native and j.artifact == "efficientnet-lite0")
    manifest = load_manifest(job.artifact_dir)
    opts = RunOptions(stage="full", dataset=Path("/unused"), out=Path("/unused"), platform=native, resume=True)
    local = harness_argv(manifest, opts, job.image_digest, MODEL_PATH, CONFIG_PATH)
    ours = k8s.harness_args(job, "full")
    assert ours[ours.index("--out") + 1] == f"/out/{job.name}/full"
    assert local[local.index("--out") + 1] == "/out"
    strip = lambda argv: [a for i, a in enumerate(argv) if a != "--out" and (i == 0 or argv[i - 1] != "--out")]  # noqa: E731
    assert strip(ours) == strip(local)


def test_no_emulated_caps_for_a_foreign_platform(all_jobs):
    job = next(j for j in all_jobs if j.platform is Platform.ARMV7)
    args = k8s.harness_args(job, "full")
    assert not any(a.startswith(("--queries", "--offline-samples", "--warmup")) for a in args)
    assert args[args.index("--platform") + 1] == "linux/arm/v7"


def _with_devices(tmp_path: Path, devices: list[dict]) -> Path:
    art = tmp_path / "efficientnet-lite0"
    shutil.copytree(REPO / "artifacts" / "efficientnet-lite0", art)
    data = yaml.safe_load((art / "request.yaml").read_text())
    data["devices"] = devices
    (art / "request.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return art


def test_gpu_manifest_gets_the_limit_and_toleration(tmp_path):
    art = _with_devices(tmp_path, [{"kind": "gpu"}])
    jobs = plan([art], _images([art]), stage="full", platforms=[Platform.AMD64])
    assert len(jobs) == 1 and jobs[0].devices.gpus == 1
    path, = k8s.submit(jobs, out=tmp_path / "out", dry_run=True)
    doc = _load(path)
    _validate(doc)
    assert [c["name"] for c in _containers(doc)] == ["full"]
    assert _pod(doc)["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in _pod(doc)["tolerations"]
    assert "gpu1" in jobs[0].name


def test_fpga_needs_the_clusters_resource_name(tmp_path):
    art = _with_devices(tmp_path, [{"kind": "fpga", "nodes": ["/dev/xdevcfg"]}])
    jobs = plan([art], _images([art]), stage="functional", platforms=[Platform.ARM64])
    with pytest.raises(BadInput, match="--fpga-resource") as e:
        k8s.submit(jobs, out=tmp_path / "none", dry_run=True)
    assert e.value.return_code == 2 and not (tmp_path / "none").exists()
    resource = "xilinx.com/fpga-xilinx_u200_xdma_201830_2-1561465320"
    path, = k8s.submit(jobs, out=tmp_path / "out", dry_run=True, fpga_resource=resource)
    doc = _load(path)
    _validate(doc)
    assert _pod(doc)["containers"][0]["resources"] == {"limits": {resource: "1"}}
    assert "nvidia.com/gpu" not in yaml.safe_dump(doc)


@pytest.mark.parametrize("bad", ["fpga", "kubernetes.io/fpga", "Xilinx.com/fpga", "xilinx.com/"])
def test_bad_device_resource_name(bad):
    with pytest.raises(BadInput, match="--fpga-resource"):
        k8s.KubeOptions(fpga_resource=bad)


@pytest.mark.parametrize("image", [
    "registry.test:5000/request-pack/x:latest",
    "registry.test/request-pack/x@sha256:abc",
    "registry.test/request-pack/x@sha256:" + "A" * 64,
    "registry.test/request-pack/x@sha512:" + "a" * 128,
])
def test_image_not_by_digest_is_refused(image):
    with pytest.raises(BadInput, match="not a registry reference by sha256 digest") as e:
        FarmJob("x", REPO, "0" * 64, Platform.AMD64, "full", image)
    assert e.value.return_code == 2


def test_bad_namespace_and_duplicate_jobs(all_jobs, tmp_path):
    with pytest.raises(BadInput, match="--namespace"):
        k8s.submit(all_jobs[:1], out=tmp_path, dry_run=True, namespace="Request_Pack")
    with pytest.raises(BadInput, match="the same job twice"):
        k8s.submit([all_jobs[0], all_jobs[0]], out=tmp_path, dry_run=True)
    assert not list(tmp_path.iterdir())


def test_unschedulable_names_what_no_node_has(rendered, all_jobs):
    armv7 = next(j for j in all_jobs if j.platform is Platform.ARMV7)
    doc = rendered[armv7.name]
    pi = {"metadata": {"labels": {"kubernetes.io/arch": "arm", "request-pack.io/arch-variant": "v7"}},
          "status": {"allocatable": {"cpu": "4"}}}
    unlabelled = {"metadata": {"labels": {"kubernetes.io/arch": "arm"}}, "status": {"allocatable": {"cpu": "4"}}}
    assert k8s.unschedulable(doc, [unlabelled, pi]) is None
    why = k8s.unschedulable(doc, [unlabelled])
    assert why == "no node of 1 has kubernetes.io/arch=arm, request-pack.io/arch-variant=v7"


def test_unschedulable_counts_gpus(tmp_path):
    art = _with_devices(tmp_path, [{"kind": "gpu"}])
    doc = k8s.to_dict(k8s.render(plan([art], _images([art]), platforms=[Platform.AMD64])[0]))
    cpu_node = {"metadata": {"labels": {"kubernetes.io/arch": "amd64"}}, "status": {"allocatable": {"cpu": "8"}}}
    gpu_node = {"metadata": {"labels": {"kubernetes.io/arch": "amd64"}}, "status": {"allocatable": {"nvidia.com/gpu": "1"}}}
    assert "nvidia.com/gpu>=1" in k8s.unschedulable(doc, [cpu_node])
    assert k8s.unschedulable(doc, [cpu_node, gpu_node]) is None


def _kube_env(monkeypatch, tmp_path: Path, kubeconfig: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def test_apply_without_kubeconfig_is_environment_missing(all_jobs, tmp_path, monkeypatch):
    _kube_env(monkeypatch, tmp_path, tmp_path / "no-such-kubeconfig")
    with pytest.raises(ClusterUnavailable, match="no usable kubeconfig") as e:
        k8s.submit(all_jobs[:1], out=tmp_path / "out", dry_run=False)
    assert e.value.return_code == 3 and "\n" not in str(e.value)
    # The manifests are written before applying, so they can be applied by hand.
    assert (tmp_path / "out" / f"{all_jobs[0].name}.job.yaml").is_file()


def test_apply_against_an_unreachable_server_is_environment_missing(all_jobs, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    _kube_env(monkeypatch, tmp_path, kubeconfig)
    with pytest.raises(ClusterUnavailable, match="unreachable") as e:
        k8s.submit(all_jobs[:1], out=tmp_path / "out", dry_run=False)
    assert e.value.return_code == 3 and "\n" not in str(e.value)


def test_seal_refuses_unfinished_pods_and_other_manifests(all_jobs, tmp_path):
    job = next(j for j in all_jobs if j.artifact == "efficientnet-lite0" and j.platform is Platform.AMD64)
    job_file, = k8s.submit([job], out=tmp_path / "k8s", dry_run=True)
    with pytest.raises(StageFailed, match="'functional'.*has not finished") as e:
        k8s.seal(job_file, tmp_path / "results", artifact_dir=job.artifact_dir, dataset=tmp_path)
    assert e.value.return_code == 1
    other = REPO / "artifacts" / "efficientnet-lite0-ort-int8"
    with pytest.raises(BadInput, match="another request.yaml"):
        k8s.seal(job_file, tmp_path / "results", artifact_dir=other, dataset=tmp_path)
    with pytest.raises(BadInput, match="not a Job"):
        k8s.seal(tmp_path / "k8s" / k8s.NETWORK_POLICY_FILE, tmp_path / "results", artifact_dir=job.artifact_dir, dataset=tmp_path)


# --- farm collect --scheduler kubernetes: argument errors and jobs that cannot be sealed ---------


@pytest.fixture()
def collect_setup(all_jobs, tmp_path):
    """One written Job of the example artifact, an empty results directory, a key pair, a dataset dir."""
    from packager.bundle.keys import generate_keypair

    job = next(j for j in all_jobs if j.artifact == "efficientnet-lite0" and j.platform is Platform.AMD64)
    k8s.submit([job], out=tmp_path / "k8s", dry_run=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "data").mkdir()
    generate_keypair(tmp_path / "keys", "evaluator")
    return job, tmp_path


def _collect(tmp: Path, *extra: str):
    from typer.testing import CliRunner

    from packager.cli import app

    given = dict(zip(extra[::2], extra[1::2]))
    args = {"--scheduler": "kubernetes", "--jobs": str(tmp / "k8s"), "--results": str(tmp / "results"),
            "--board": f"sqlite:///{tmp / 'board.db'}", "--trust": str(tmp / "keys" / "evaluator.pub"),
            "--key": str(tmp / "keys" / "evaluator.key"), "--dataset": str(tmp / "data"),
            "--artifacts": str(REPO / "artifacts")} | given
    return CliRunner().invoke(app, ["farm", "collect", *(x for kv in args.items() for x in kv)], env={"COLUMNS": "300"})


@pytest.mark.parametrize("extra, field, words", [
    (["--scheduler", "nomad"], "--scheduler", "not slurm or kubernetes"),
    (["--jobs", "{tmp}/nowhere"], "--jobs", "no such directory"),
    (["--jobs", "{tmp}/results"], "--jobs", "no *.job.yaml"),
    (["--results", "{tmp}/nowhere"], "--results", "no such results directory"),
    (["--dataset", "{tmp}/nowhere"], "--dataset", "no such dataset"),
    (["--artifacts", "{tmp}/data"], "--artifacts", "nor a directory of artifacts"),
])
def test_collect_kubernetes_argument_errors_exit_2(collect_setup, extra, field, words):
    _, tmp = collect_setup
    res = _collect(tmp, *(e.format(tmp=tmp) for e in extra))
    assert isinstance(res.exception, BadInput) and res.exception.return_code == 2, res.output
    assert words in str(res.exception) and field in str(res.exception), str(res.exception)
    assert not (tmp / "board.db").exists()  # refused before the board was opened


def test_collect_kubernetes_needs_jobs_and_a_public_key(collect_setup):
    from typer.testing import CliRunner

    from packager.cli import app

    _, tmp = collect_setup
    res = CliRunner().invoke(app, ["farm", "collect", "--scheduler", "kubernetes", "--results", str(tmp / "results")])
    assert isinstance(res.exception, BadInput) and "--jobs" in str(res.exception)
    lone = tmp / "lone.key"
    lone.write_bytes((tmp / "keys" / "evaluator.key").read_bytes())
    res = _collect(tmp, "--key", str(lone))
    assert isinstance(res.exception, BadInput) and res.exception.return_code == 2 and "NAME.pub" in str(res.exception)
    # Kubernetes-only options are refused for Slurm instead of being silently ignored.
    res = CliRunner().invoke(app, ["farm", "collect", "--results", str(tmp / "results"), "--jobs", str(tmp / "k8s")])
    assert isinstance(res.exception, BadInput) and "--scheduler kubernetes" in str(res.exception)


def test_collect_kubernetes_reports_unfinished_and_unknown_jobs(collect_setup):
    job, tmp = collect_setup
    # The functional stage finished (its metrics are there), the full stage did not.
    (tmp / "results" / job.name / "functional").mkdir(parents=True)
    (tmp / "results" / job.name / "functional" / "metrics.json").write_text("{}")
    (tmp / "k8s" / "garbled.job.yaml").write_text("kind: Job\nmetadata: {name: x}\n")
    res = _collect(tmp)
    assert isinstance(res.exception, CheckFailed) and res.exception.return_code == 1, res.output
    out = " ".join(res.output.split())
    assert f"missing {tmp / 'results' / job.name}: {job.name}.job.yaml: stage 'full' has no metrics.json" in out, out
    assert "bad " in out and "garbled.job.yaml" in out and "not a Job written by farm submit" in out
    assert "1 bad, 1 missing" in out
    assert not list((tmp / "results").rglob("*.bundle.tar.gz"))

    # The Job's outputs are all there, but no artifact given has the request.yaml it was planned from.
    (tmp / "k8s" / "garbled.job.yaml").unlink()
    (tmp / "results" / job.name / "full").mkdir()
    (tmp / "results" / job.name / "full" / "metrics.json").write_text("{}")
    res = _collect(tmp, "--artifacts", str(REPO / "artifacts" / "efficientnet-lite0-ort-int8"))
    assert isinstance(res.exception, CheckFailed), res.output
    out = " ".join(res.output.split())
    assert "has the request.yaml it was planned from" in out and "1 bad" in out, out
    # With its artifact, the seal reads the outputs and refuses what is not the harness's.
    res = _collect(tmp)
    assert isinstance(res.exception, CheckFailed), res.output
    out = " ".join(res.output.split())
    assert "SchemaError" in out and "not the harness's metrics.json" in out and "1 bad" in out, out
    assert not list((tmp / "results").rglob("*.bundle.tar.gz")) and not (tmp / "results" / job.name / "done.json").exists()
