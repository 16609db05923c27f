"""Run-time knobs: parsing, the framework rule, the harness's use of them, and verification's re-check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _bundle_fixture import make_result_dir

from packager.bundle.keys import TrustStore, generate_keypair
from packager.bundle.sign import sign_result_dir
from packager.bundle.verify import verify_bundle
from packager.errors import BadInput, MetricsMismatch
from packager.harness.config import build_config
from packager.harness.errors import ConfigError
from packager.manifest import load_manifest, resolved_yaml
from packager.platforms import Platform
from packager.results import Metrics
from packager.run.runner import RunOptions, harness_argv
from packager.runconfig import ARGV_FLAG, RunConfig, from_json, from_mapping, from_sets

REPO = Path(__file__).resolve().parents[2]
ORT = REPO / "tests" / "data" / "manifest-valid"


def test_sets_parse_validate_and_canonicalise() -> None:
    rc = from_sets(["run.threads=2", "run.batch=32", "run.opt_level=1", "run.execution_provider=CPUExecutionProvider"])
    assert rc == RunConfig(threads=2, batch=32, opt_level=1, execution_provider="CPUExecutionProvider")
    assert rc.canonical() == '{"batch":32,"execution_provider":"CPUExecutionProvider","opt_level":1,"threads":2}'
    assert from_json(rc.canonical()) == rc
    assert not RunConfig() and RunConfig().label() == "defaults"


@pytest.mark.parametrize("items, message", [
    (["run.thread=2"], "unknown knob 'thread' (did you mean 'threads'?)"),
    (["run.threads=0"], "run.threads must be an integer from 1 to 1024"),
    (["run.threads=two"], "run.threads must be an integer"),
    (["run.opt_level=4"], "from 0 to 3"),
    (["model.name=x"], "build-time changes are `request-pack derive`"),
    (["run.threads"], "expected run.KNOB=VALUE"),
    (["run.target=\x1b[2J"], "printable text"),
])
def test_bad_knobs_are_one_line_naming_the_knob(items: list[str], message: str) -> None:
    with pytest.raises(BadInput, match=None) as info:
        from_sets(items)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_knob_the_framework_does_not_apply_is_an_error_naming_both() -> None:
    with pytest.raises(BadInput) as info:
        RunConfig(target="llvm -mcpu=znver2").check_applies("onnxruntime")
    assert "'target' does not apply to framework 'onnxruntime'" in str(info.value)
    with pytest.raises(BadInput, match="'inter_threads' does not apply to framework 'tvm'"):
        RunConfig(inter_threads=2).check_applies("tvm")
    with pytest.raises(BadInput, match="'threads' does not apply to framework 'reference'"):
        RunConfig(threads=2).check_applies("reference")
    RunConfig(threads=2, target="llvm", opt_level=2, batch=4).check_applies("tvm")
    with pytest.raises(BadInput, match="not a mapping|must be a mapping"):
        from_mapping(["threads"])


def test_harness_applies_the_knobs_and_refuses_misplaced_ones() -> None:
    data = load_manifest(ORT).model_dump(mode="json")
    paths = dict(model_path="/m", dataset_dir="/d", out_dir="/o", cache_dir="/c")
    cfg = build_config(data, **paths, run_config=RunConfig(threads=3, inter_threads=2, batch=8, opt_level=1,
                                                           execution_provider="CPUExecutionProvider"))
    assert cfg.batch_sizes == (8,)
    o = cfg.backend_options
    assert (o.threads, o.inter_threads, o.opt_level, o.execution_providers) == (3, 2, 1, ("CPUExecutionProvider",))
    plain = build_config(data, **paths)
    assert plain.run_config == RunConfig() and plain.backend_options.opt_level is None
    with pytest.raises(ConfigError, match="'target' does not apply to framework"):
        build_config(data, **paths, run_config=RunConfig(target="llvm"))


def test_harness_starts_from_the_platforms_run_knobs() -> None:
    data = load_manifest(ORT).model_dump(mode="json")
    data["run"]["knobs"] = {"threads": 2, "batch": 4}  # a platform view (request.json) with run.knobs
    paths = dict(model_path="/m", dataset_dir="/d", out_dir="/o", cache_dir="/c")
    cfg = build_config(data, **paths)
    assert cfg.run_config == RunConfig(threads=2, batch=4) and cfg.backend_options.threads == 2 and cfg.batch_sizes == (4,)
    asked = build_config(data, **paths, run_config=RunConfig(threads=3))
    assert asked.run_config == RunConfig(threads=3, batch=4) and asked.backend_options.threads == 3
    data["run"]["knobs"] = {"target": "llvm"}
    with pytest.raises(ConfigError, match="'target' does not apply to framework"):
        build_config(data, **paths)


def test_an_emulated_run_takes_the_batches_of_its_platform(tmp_path: Path) -> None:
    manifest = load_manifest(REPO / "artifacts" / "efficientnet-lite0")
    argv = harness_argv(manifest, RunOptions(stage="functional", dataset=tmp_path, out=tmp_path, platform=Platform.ARMV7),
                        "sha256:" + "0" * 64, "/m")
    assert argv[argv.index("--batch-sizes") + 1] == "1,4"  # runs.linux/arm/v7, not run:'s [1, 32]
    arm64 = RunOptions(stage="functional", dataset=tmp_path, out=tmp_path, platform=Platform.ARM64)
    argv = harness_argv(manifest, arm64, "sha256:" + "0" * 64, "/m")
    assert argv[argv.index("--batch-sizes") + 1] == "1,20"


def test_runner_passes_the_config_as_one_argument(tmp_path: Path) -> None:
    manifest = load_manifest(ORT)
    rc = RunConfig(threads=1, batch=4)
    opts = RunOptions(stage="functional", dataset=tmp_path, out=tmp_path, platform=Platform.native(), run_config=rc)
    argv = harness_argv(manifest, opts, "sha256:" + "0" * 64, "/m")
    assert argv[argv.index(ARGV_FLAG) + 1] == rc.canonical()
    bare = RunOptions(stage="functional", dataset=tmp_path, out=tmp_path, platform=Platform.native())
    assert ARGV_FLAG not in harness_argv(manifest, bare, "sha256:" + "0" * 64, "/m")


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrustStore, Path]:
    """A result whose run was given threads=2 batch=32 (what the fixture's metrics measured), signed."""
    d = tmp_path_factory.mktemp("knobs")
    root = make_result_dir(d / "result")
    rc = RunConfig(threads=2, batch=32)
    metrics = Metrics.model_validate_json((root / "metrics.json").read_bytes())
    (root / "metrics.json").write_text(metrics.model_copy(update={"run_config": rc.as_dict()}).model_dump_json())
    (root / "run.json").write_text(json.dumps({"command": ["--stage", "full", ARGV_FLAG, rc.canonical()]}))
    pair = generate_keypair(d / "k")
    sign_result_dir(root, pair.private_path)
    return root, TrustStore.load([pair.public_path]), pair.private_path


def test_a_signed_run_config_verifies_and_is_in_the_predicate(signed, tmp_path: Path) -> None:
    root, trust, _ = signed
    assert verify_bundle(root, trust).ok
    envelope = json.loads((root / "envelope.dsse.json").read_text())
    import base64

    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicate"]["run"]["run_config"] == {"batch": 32, "threads": 2}


@pytest.mark.parametrize("tamper, message", [
    ("command", "in the command of run.json"),
    ("threads", "run config threads 4 but the backend ran 2"),
    ("batch", "run config batch 1 but Offline measured batch size(s) [32]"),
])
def test_a_run_config_that_does_not_fit_is_refused_even_when_signed(signed, tmp_path: Path, tamper: str,
                                                                    message: str) -> None:
    """The signer is trusted, yet a command, metrics and measurement that disagree are check 4's failure."""
    root, trust, key = signed
    copy = Path(shutil.copytree(root, tmp_path / "b"))
    metrics = Metrics.model_validate_json((copy / "metrics.json").read_bytes())
    if tamper == "command":
        (copy / "run.json").write_text(json.dumps({"command": [ARGV_FLAG, RunConfig(threads=1).canonical()]}))
    else:
        rc = {"threads": 4, "batch": 32} if tamper == "threads" else {"threads": 2, "batch": 1}
        (copy / "metrics.json").write_text(metrics.model_copy(update={"run_config": rc}).model_dump_json())
        (copy / "run.json").write_text(json.dumps({"command": [ARGV_FLAG, json.dumps(rc)]}))
    sign_result_dir(copy, key)
    with pytest.raises(MetricsMismatch) as info:
        verify_bundle(copy, trust)
    assert message in str(info.value)


@pytest.mark.parametrize("args, message", [
    (["--set", "run.target=llvm"], "knob 'target' does not apply to framework 'onnxruntime'"),
    (["--set", "run.threads=many"], "run.threads must be an integer"),
    (["--set", "model.precision=int8"], "build-time changes are `request-pack derive`"),
])
def test_evaluate_refuses_bad_knobs_with_exit_2_before_building(tmp_path: Path, args: list[str], message: str) -> None:
    res = subprocess.run([sys.executable, "-m", "packager.cli", "evaluate", str(ORT), "--dataset", str(tmp_path),
                          "--out", str(tmp_path / "out"), "--build-root", str(tmp_path / "build"), *args],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}, check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in " ".join(res.stderr.split()) and "Traceback" not in res.stderr
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("knobs, message", [
    ({"threads": 1}, None),  # the run asked threads=2 over the platform's 1: a knob replaced, not lost
    ({"opt_level": 1}, "the manifest's run.knobs of linux/amd64 set opt_level"),
])
def test_a_signed_run_config_carries_the_platforms_knobs(signed, tmp_path: Path, knobs: dict, message: str | None) -> None:
    import yaml

    root, trust, key = signed
    copy = Path(shutil.copytree(root, tmp_path / "b"))
    data = yaml.safe_load((copy / "request.yaml").read_text())
    data["runs"] = {"linux/amd64": {"knobs": knobs}}
    (copy / "request.yaml").write_text(yaml.safe_dump(data))
    (copy / "request.yaml").write_text(resolved_yaml(load_manifest(copy)))  # a bundle carries the resolved form
    record = json.loads((copy / "build-record.json").read_text())
    record["manifest_sha256"] = load_manifest(copy).digest()
    (copy / "build-record.json").write_text(json.dumps(record))
    sign_result_dir(copy, key)
    if message is None:
        assert verify_bundle(copy, trust).ok
        return
    with pytest.raises(MetricsMismatch) as info:
        verify_bundle(copy, trust)
    assert message in str(info.value)
