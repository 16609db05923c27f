"""Runner pieces that need no engine: resume repair, device specs, CDI resolution, build records, CLI exit codes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from packager.cli import app
from packager.errors import (
    BadInput,
    CheckFailed,
    DeviceMissing,
    ImageMismatch,
    ImageNotAvailable,
)
from packager.platforms import Platform
from packager.run.devices import (
    load_cdi_registry,
    parse_device_spec,
    plan_devices,
    resolve_cdi,
)
from packager.run.runner import (
    SANDBOX,
    image_from_record,
    prepare_output,
    repair_predictions,
)
from packager.sections import Device

LINE = '{"id":"%s","output_sha256":"' + "0" * 64 + '","probs":[1.0],"top5":[1]}\n'


def test_repair_cuts_a_torn_tail(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text(LINE % "a" + LINE % "b" + '{"id":"c","outp')
    state = repair_predictions(p)
    assert state.done == 2 and state.torn_bytes > 0
    assert p.read_text() == LINE % "a" + LINE % "b"


def test_repair_refuses_duplicates(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text(LINE % "a" + LINE % "a")
    with pytest.raises(CheckFailed, match="twice"):
        repair_predictions(p)


def test_repair_refuses_garbage_before_the_end(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text(LINE % "a" + "garbage\n" + LINE % "b")
    with pytest.raises(CheckFailed, match="line 2"):
        repair_predictions(p)


def test_earlier_run_needs_resume(tmp_path):
    (tmp_path / "predictions.jsonl").write_text(LINE % "a")
    with pytest.raises(BadInput, match="--resume"):
        prepare_output(tmp_path, resume=False)
    assert prepare_output(tmp_path, resume=True).done == 1


@pytest.mark.parametrize(("spec", "kind", "nodes", "cdi"), [
    ("/dev/xdevcfg", "accelerator", ["/dev/xdevcfg"], []),
    ("/dev/loop3:/dev/fpga0", "accelerator", ["/dev/loop3"], []),
    ("example.com/fpga=board0", "accelerator", [], ["example.com/fpga=board0"]),
    ("nvidia.com/gpu=all", "gpu", [], ["nvidia.com/gpu=all"]),
    ("gpu", "gpu", [], []),
])
def test_device_specs(spec, kind, nodes, cdi):
    d = parse_device_spec(spec)
    assert (d.kind, d.nodes, d.cdi) == (kind, nodes, cdi)


@pytest.mark.parametrize("spec", ["/etc/passwd", "/dev/../etc/x", "fpga", "Example.com/x=y"])
def test_bad_device_specs(spec):
    with pytest.raises(BadInput):
        parse_device_spec(spec)


def test_absent_required_and_optional_devices():
    with pytest.raises(DeviceMissing, match="/dev/request-pack-absent"):
        plan_devices([Device(kind="fpga", nodes=["/dev/request-pack-absent"])])
    plan = plan_devices([Device(kind="fpga", nodes=["/dev/request-pack-absent"], required=False)])
    assert plan.nodes == () and plan.skipped == ("/dev/request-pack-absent",)


def _spec(tmp_path: Path, **edits) -> Path:
    d = tmp_path / "cdi"
    d.mkdir(exist_ok=True)
    (d / "v.json").write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "example.com/npu",
                                          "devices": [{"name": "n0", "containerEdits": edits}]}))
    return d


def test_cdi_resolution(tmp_path):
    d = _spec(tmp_path, deviceNodes=[{"path": "/dev/npu0", "hostPath": "/dev/null"}], env=["NPU=0"],
              mounts=[{"hostPath": "/etc/hostname", "containerPath": "/etc/npu"}])
    edits = resolve_cdi("example.com/npu=n0", load_cdi_registry([d]))
    assert [(n.host, n.container) for n in edits.nodes] == [("/dev/null", "/dev/npu0")]
    assert edits.env == ("NPU=0",) and edits.mounts == (("/etc/hostname", "/etc/npu"),)
    with pytest.raises(DeviceMissing, match="n1"):
        resolve_cdi("example.com/npu=n1", load_cdi_registry([d]))


def test_cdi_hooks_need_a_cdi_engine(tmp_path):
    d = _spec(tmp_path, hooks=[{"hookName": "createContainer", "path": "/bin/true"}])
    with pytest.raises(DeviceMissing, match="hooks"):
        resolve_cdi("example.com/npu=n0", load_cdi_registry([d]))


def test_cdi_native_when_the_engine_reads_the_dir(tmp_path):
    d = _spec(tmp_path, deviceNodes=[{"path": "/dev/npu0", "hostPath": "/dev/null"}])
    plan = plan_devices([], ["example.com/npu=n0"], cdi_dirs=[d], engine_cdi_dirs=[d])
    assert plan.native_cdi == ("example.com/npu=n0",) and plan.nodes == ()
    plan = plan_devices([], ["example.com/npu=n0"], cdi_dirs=[d], engine_cdi_dirs=())
    assert plan.native_cdi == () and [n.container for n in plan.nodes] == ["/dev/npu0"]


def _layout(root: Path, config: bytes) -> str:
    blobs = root / "oci" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    cdig = hashlib.sha256(config).hexdigest()
    (blobs / cdig).write_bytes(config)
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": f"sha256:{cdig}", "size": len(config)}, "layers": []}).encode()
    mdig = hashlib.sha256(manifest).hexdigest()
    (blobs / mdig).write_bytes(manifest)
    return f"sha256:{mdig}"


def test_image_pinned_through_the_manifest_blob(tmp_path):
    build = tmp_path / "build"
    mdig = _layout(build / "a", b'{"architecture":"amd64"}')
    (build / "a" / "build-record.json").write_text(json.dumps({"index_digest": "sha256:" + "1" * 64,
                                                         "platforms": {"linux/amd64": {"manifest_digest": mdig}}}))
    ref = image_from_record(tmp_path, "a", Platform.AMD64, build)
    assert ref.config_digest == "sha256:" + hashlib.sha256(b'{"architecture":"amd64"}').hexdigest()
    assert ref.manifest_digest == mdig
    with pytest.raises(ImageNotAvailable, match="linux/arm64"):
        image_from_record(tmp_path, "a", Platform.ARM64, build)
    blob = build / "a" / "oci" / "blobs" / "sha256" / mdig.split(":")[1]
    blob.write_bytes(blob.read_bytes() + b" ")
    with pytest.raises(ImageMismatch, match="sha256"):
        image_from_record(tmp_path, "a", Platform.AMD64, build)


def test_sandbox_settings_are_the_issue_s():
    assert SANDBOX["network"] == "none" and SANDBOX["read_only_rootfs"] is True
    assert SANDBOX["cap_drop"] == ["ALL"] and SANDBOX["security_opt"] == ["no-new-privileges"]
    assert SANDBOX["user"] == "1000:1000" and SANDBOX["ulimits"] == {"nofile": 20000, "nproc": 4096}


def test_cli_run_without_a_build_exits_3(tmp_path):
    src = Path(__file__).resolve().parents[1] / "data" / "manifest-valid"
    art = tmp_path / "artifacts" / "test-valid"
    art.mkdir(parents=True)
    for f in src.iterdir():
        (art / f.name).write_bytes(f.read_bytes())
    res = CliRunner().invoke(app, ["run", str(art), "--dataset", str(tmp_path), "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, ImageNotAvailable) and res.exception.return_code == 3


def test_cli_evaluate_names_the_failing_stage(tmp_path, shared_sample):
    """No build and no lock: evaluate tries to build and stops at stage 'image' with the lock error (exit 2)."""
    src = Path(__file__).resolve().parents[1] / "data" / "manifest-valid"
    art = tmp_path / "artifacts" / "test-valid"
    art.mkdir(parents=True)
    for f in src.iterdir():
        (art / f.name).write_bytes(f.read_bytes())
    res = CliRunner().invoke(app, ["evaluate", str(art), "--dataset", str(shared_sample), "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, BadInput) and res.exception.return_code == 2
    assert "stage 'image'" in str(res.exception) and "request.lock" in str(res.exception)


def test_cli_evaluate_checks_the_dataset_first_and_names_the_users_path(tmp_path):
    """A directory in no known layout stops evaluate before anything is built, naming that directory."""
    src = Path(__file__).resolve().parents[1] / "data" / "manifest-valid"
    art = tmp_path / "artifacts" / "test-valid"
    art.mkdir(parents=True)
    for f in src.iterdir():
        (art / f.name).write_bytes(f.read_bytes())
    data = tmp_path / "my-images"
    data.mkdir()
    (data / "photo.JPEG").write_bytes(b"not looked at")
    res = CliRunner().invoke(app, ["evaluate", str(art), "--dataset", str(data), "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, BadInput) and res.exception.return_code == 2
    assert "stage 'dataset'" in str(res.exception) and str(data) in str(res.exception)
    assert "/data" not in str(res.exception).replace(str(data), "")


def test_harness_argv_by_digest_and_short_scenarios_when_emulated(tmp_path):
    from packager.manifest import load_manifest
    from packager.run.runner import RunOptions, harness_argv

    manifest = load_manifest(Path(__file__).resolve().parents[1] / "data" / "manifest-valid")
    native = Platform.native()
    other = next(p for p in Platform if p is not native)
    for plat, emulated in ((native, False), (other, True)):
        opts = RunOptions(stage="full", dataset=tmp_path, out=tmp_path, platform=plat, resume=True, samples=5)
        argv = harness_argv(manifest, opts, "sha256:" + "a" * 64, "/opt/request/model.onnx", "/opt/request/request.json")
        assert argv[argv.index("--image-digest") + 1] == "sha256:" + "a" * 64
        assert argv[argv.index("--config") + 1] == "/opt/request/request.json"
        assert argv[argv.index("--stage") + 1] == "full" and "--resume" in argv and argv[argv.index("--samples") + 1] == "5"
        # Emulated scenarios are short, and no longer than the samples asked for.
        assert ("--queries=5" in argv and "--offline-samples=5" in argv) is emulated


# --- registry references, the engine factory, evaluate's options (no daemon, no registry) ---


def test_image_references_are_by_digest_only():
    from packager.engine.registry import parse_reference

    digest = "sha256:" + "ab" * 32
    ref = parse_reference(f"127.0.0.1:5000/request-pack/a@{digest}")
    assert (ref.repository, ref.digest, ref.host, ref.tls_verify) == ("127.0.0.1:5000/request-pack/a", digest, "127.0.0.1:5000", False)
    assert parse_reference(f"registry.example.org/x/y@{digest}").tls_verify is True
    assert parse_reference(f"localhost/y@{digest}").tls_verify is False
    for text, why in (("127.0.0.1:5000/request-pack/a:latest", "names a tag"), ("request-pack/a", "is not"),
                      (f"127.0.0.1:5000/a@sha256:{'ab' * 31}", "is not"), (f"a@{digest}", "is not")):
        with pytest.raises(BadInput, match=why) as e:
            parse_reference(text)
        assert e.value.return_code == 2 and "--image" in str(e.value)


@pytest.mark.parametrize(("entry", "platform"), [
    ({"os": "linux", "architecture": "arm64"}, Platform.ARM64),
    ({"os": "linux", "architecture": "arm64", "variant": "v8"}, Platform.ARM64),
    ({"os": "linux", "architecture": "arm", "variant": "v7"}, Platform.ARMV7),
    ({"os": "linux", "architecture": "amd64"}, Platform.AMD64),
    ({"os": "linux", "architecture": "s390x"}, None),
])
def test_index_entries_match_platforms(entry, platform):
    from packager.engine.registry import entry_matches

    assert [p for p in Platform if entry_matches({"platform": entry}, p)] == ([platform] if platform else [])


def test_engine_factory_refuses_what_it_cannot_do():
    from packager.engine import get_engine
    from packager.engine.docker import Docker
    from packager.errors import EngineUnavailable

    assert get_engine("docker", "ssh://root@127.0.0.1:2222") == Docker("ssh://root@127.0.0.1:2222")
    assert get_engine("docker", "ssh://root@b").remote and not get_engine("docker").remote
    with pytest.raises(EngineUnavailable, match="ssh transport"):
        get_engine("podman", "ssh://root@b")
    with pytest.raises(EngineUnavailable, match="unknown target"):
        get_engine("docker", "tcp://b:2375")
    with pytest.raises(EngineUnavailable, match="unknown engine"):
        get_engine("lxc")


def test_cli_evaluate_refuses_an_unknown_stage_and_a_tag(tmp_path, shared_sample):
    src = Path(__file__).resolve().parents[1] / "data" / "manifest-valid"
    art = tmp_path / "artifacts" / "test-valid"
    art.mkdir(parents=True)
    for f in src.iterdir():
        (art / f.name).write_bytes(f.read_bytes())
    res = CliRunner().invoke(app, ["evaluate", str(art), "--dataset", str(tmp_path), "--stage", "quick"])
    assert isinstance(res.exception, BadInput) and "--stage" in str(res.exception)
    res = CliRunner().invoke(app, ["evaluate", str(art), "--dataset", str(shared_sample), "--stage", "functional",
                                   "--image", "127.0.0.1:5000/request-pack/test-valid:latest"])
    assert isinstance(res.exception, BadInput) and "stage 'image'" in str(res.exception) and "tag" in str(res.exception)


def test_signals_during_container_creation_are_held_until_the_handle_is(tmp_path):
    """SIGTERM between the engine creating a container and the runner holding it (issue 17) is
    delivered only on release, to the handler that was there (exit_on_sigterm's SystemExit)."""
    import os
    import signal

    from packager.cli import exit_on_sigterm
    from packager.run.sandbox import _HeldSignals

    before = signal.getsignal(signal.SIGTERM)
    try:
        exit_on_sigterm()
        held = _HeldSignals()
        os.kill(os.getpid(), signal.SIGTERM)  # lands "inside engine.start"
        for _ in range(1000):
            pass  # bytecodes run: an unheld handler would have raised by now
        with pytest.raises(SystemExit) as e:
            held.release()
        assert e.value.code == 128 + signal.SIGTERM
        held.release()  # idempotent: nothing left to deliver
    finally:
        signal.signal(signal.SIGTERM, before)


def test_container_paths_in_the_harness_error_become_the_users():
    from packager.run.runner import host_paths

    mounts = {"/data": "/home/u/ILSVRC2012", "/out": "/home/u/results/full", "/tmp/cache": "/home/u/.cache/request-pack/tensors"}
    text = "ERROR /data/ILSVRC2012_val_00000007.JPEG: cannot decode | /tmp/cache/crops/ab: no room | /database /tmp/x"
    assert host_paths(text, mounts) == ("ERROR /home/u/ILSVRC2012/ILSVRC2012_val_00000007.JPEG: cannot decode | "
                                        "/home/u/.cache/request-pack/tensors/crops/ab: no room | /database /tmp/x")


def test_spec_binds_the_tensor_cache_inside_scratch_and_sizes_scratch(tmp_path):
    from packager.contract import CACHE_MOUNT, SCRATCH
    from packager.run.devices import DevicePlan
    from packager.run.runner import build_spec

    spec = build_spec("sha256:" + "0" * 64, ["x"], DevicePlan(), dataset="/d", out="/o", remote=False, env={},
                      run_id="r", cache="/host/cache", scratch_bytes=64 * 1024**2)
    cache = [m for m in spec.mounts if m.target == CACHE_MOUNT]
    assert cache and cache[0].source == "/host/cache" and not cache[0].read_only
    assert CACHE_MOUNT.startswith(SCRATCH + "/") and spec.tmpfs[SCRATCH].endswith("size=64m")


def test_check_dataset_detects_on_the_host_and_counts_the_stage(tmp_path, shared_sample):
    from packager.manifest import load_manifest
    from packager.run.runner import RunOptions, check_dataset, harness_argv

    manifest = load_manifest(Path(__file__).resolve().parents[1] / "data" / "manifest-valid")
    data = tmp_path / "val"
    data.mkdir()
    header, *rows = (shared_sample / "labels.tsv").read_text().splitlines()
    cols = header.split("\t")
    lines = []
    for k, row in enumerate(rows[:25], start=1):
        r = row.split("\t")
        (data / f"ILSVRC2012_val_{k:08d}.JPEG").write_bytes((shared_sample / "images" / r[cols.index("file")]).read_bytes())
        lines.append(f"ILSVRC2012_val_{k:08d}.JPEG {r[cols.index('class_index')]}\n")
    (data / "val.txt").write_text("".join(lines))
    opts = RunOptions(stage="full", dataset=data, out=tmp_path / "o", platform=Platform.native())
    spec, n = check_dataset(manifest, opts)
    assert (spec.layout, spec.labels, n) == ("ilsvrc2012-val", "val.txt", 25)
    argv = harness_argv(manifest, RunOptions(**{**opts.__dict__, "dataset_layout": "ilsvrc2012-val"}), "sha256:x", "/m")
    assert argv[argv.index("--layout") + 1] == "ilsvrc2012-val" and "--layout" not in harness_argv(manifest, opts, "sha256:x", "/m")
    (data / "val.txt").write_text("".join(lines[:-1]))
    with pytest.raises(BadInput) as e:
        check_dataset(manifest, opts)
    assert str(data / "val.txt") in str(e.value)
