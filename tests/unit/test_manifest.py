"""Manifest validation: every malformed input is one line naming file and field, exit code 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from packager.errors import BadInput, ManifestError
from packager.manifest import json_schema, load_manifest
from packager.platforms import Platform

DATA = Path(__file__).resolve().parents[1] / "data"
VALID = DATA / "manifest-valid"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    dest = tmp_path / "artifact"
    shutil.copytree(VALID, dest)
    return dest


def _edit(artifact: Path, mutate) -> Path:
    path = artifact / "request.yaml"
    data = yaml.safe_load(path.read_text())
    mutate(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_valid_fixture_loads() -> None:
    m = load_manifest(VALID)
    assert m.name == "test-valid"
    assert m.platforms == [Platform.AMD64, Platform.ARM64]
    assert [str(r) for r in m.requirements_for(Platform.ARMV7)] == ["numpy==1.26.4"]
    assert len(m.requirements_for(Platform.ARM64)) == 2


def test_digest_is_stable_and_sensitive(artifact: Path) -> None:
    a = load_manifest(artifact).digest()
    assert a == load_manifest(artifact).digest()
    _edit(artifact, lambda d: d["run"].update(warmup=3))
    assert load_manifest(artifact).digest() != a


def _set(path: str, value):
    def mutate(d):
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return mutate


def _delete(path: str):
    def mutate(d):
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    return mutate


BAD = {
    "short sha256": (_set("model.sha256", "abc123"), "model.sha256", "pattern"),
    "upper-case sha256": (_set("model.sha256", "A" * 64), "model.sha256", "pattern"),
    "missing sha256": (_delete("model.sha256"), "model.sha256", "Field required"),
    "unknown platform": (_set("platforms", ["linux/amd64", "linux/s390x"]), "platforms", "unknown platform 'linux/s390x'"),
    "duplicate platform": (_set("platforms", ["linux/amd64", "linux/amd64"]), "platforms", "duplicate platform"),
    "unknown top-level key": (_set("modle_extra", 1), "modle_extra", "unknown key"),
    "misspelt key gets a suggestion": (_set("preprocessing.resize_to", 256), "preprocessing.resize_to", "did you mean 'resize'"),
    "string where int": (_set("run.warmup", "ten"), "run.warmup", "got str 'ten'"),
    "int where list": (_set("platforms", 3), "platforms", "list"),
    "unpinned requirement": (_set("python.requirements", ["numpy>=1.0"]), "python.requirements", "not pinned"),
    "wildcard requirement": (_set("python.requirements", ["numpy==1.*"]), "python.requirements", "not pinned"),
    "unknown framework": (_set("framework.name", "tensorflow"), "framework.name", "onnxruntime"),
    "unknown task": (_set("task", "detection"), "task", "imagenet-classification"),
    "path escaping artifact": (_set("model.source", {"kind": "file", "path": "../../etc/passwd"}), "model.source.path", "escapes the artifact directory"),
    "absolute path": (_set("model.source", {"kind": "file", "path": "/etc/passwd"}), "model.source.path", "escapes the artifact directory"),
    "crop larger than resize": (_set("preprocessing.crop", 512), "preprocessing", "larger than resize"),
    "bad device node": (_set("devices", [{"kind": "fpga", "nodes": ["/etc/shadow"]}]), "devices[0].nodes", "not a device node"),
    "bad CDI name": (_set("devices", [{"kind": "gpu", "cdi": ["all"]}]), "devices[0].cdi", "not a CDI name"),
    "layout mismatch": (_set("preprocessing.layout", "NHWC"), "(top level)", "differs from preprocessing.layout"),
    "url without scheme": (_set("model.source", {"kind": "url", "url": "example.com/m.onnx"}), "model.source.url", "pattern"),
    "bad debian package": (_set("system.packages", ["Python3; rm -rf /"]), "system.packages", "not a Debian package name"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_manifest_names_file_and_field(artifact: Path, case: str) -> None:
    mutate, field, fragment = BAD[case]
    path = _edit(artifact, mutate)
    with pytest.raises(ManifestError) as info:
        load_manifest(artifact)
    message = str(info.value)
    assert message.startswith(f"{path}: {field}: "), message
    assert fragment in message, message
    assert "\n" not in message
    assert info.value.return_code == 2


def test_symlink_escaping_artifact_is_refused(artifact: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(b"x")
    (artifact / "model.onnx").unlink()
    (artifact / "model.onnx").symlink_to(outside)
    with pytest.raises(ManifestError, match="resolves outside the artifact directory"):
        load_manifest(artifact)


RAW = {
    "duplicate keys": (b"name: a\nname: b\n", "duplicate key 'name'"),
    "alias bomb": (
        b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
        b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
        "aliases are not allowed",
    ),
    "non-UTF-8": ("name: caf\u00e9\n".encode("latin-1"), "not UTF-8"),
    "not a mapping": (b"- just\n- a list\n", "top level must be a mapping"),
    "syntax error": (b"name: [unclosed\n", "line "),
    "empty file": (b"", "top level must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(RAW))
def test_malformed_yaml(tmp_path: Path, case: str) -> None:
    raw, fragment = RAW[case]
    path = tmp_path / "request.yaml"
    path.write_bytes(raw)
    with pytest.raises(BadInput) as info:
        load_manifest(tmp_path)
    assert str(info.value).startswith(str(path)), info.value
    assert fragment in str(info.value)
    assert info.value.return_code == 2


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="file not found"):
        load_manifest(tmp_path)


def test_committed_schema_is_current() -> None:
    committed = json.loads((REPO / "packager" / "request.schema.json").read_text())
    assert committed == json_schema(), "run: request-pack schema > packager/request.schema.json"


def test_every_artifact_validates() -> None:
    manifests = sorted((REPO / "artifacts").glob("*/request.yaml"))
    for path in manifests:
        load_manifest(path)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_cli_validate_ok() -> None:
    result = _cli("validate", str(VALID))
    assert result.returncode == 0, result.stderr
    assert "test-valid" in result.stdout


def test_cli_validate_bad_input_is_one_line_exit_2(artifact: Path) -> None:
    _edit(artifact, _set("platforms", ["linux/mips"]))
    result = _cli("validate", str(artifact))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "platforms" in lines[0] and "Traceback" not in result.stderr


def test_cli_usage_error_exit_2() -> None:
    assert _cli("validate").returncode == 2


def test_cli_schema_prints_json_schema() -> None:
    result = _cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert "model" in schema["required"]
