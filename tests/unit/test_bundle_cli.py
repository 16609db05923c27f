"""keygen / sign / verify through the real console script: one exit code per failure class."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from _bundle_fixture import ARTIFACT, make_result_dir, write_image_records

from packager.bundle.dsse import ENVELOPE_NAME

# The console script of the interpreter running the tests (a venv's, not whichever is first on PATH).
_SCRIPT = Path(sys.executable).parent / "request-pack"
BASE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "packager.cli"]


def rp(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BASE, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=120,
    )


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("cli")
    r = rp("keygen", "--out", d / "keys")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((d / "keys" / "signing.key").stat().st_mode) == 0o600
    result = make_result_dir(d / "result")
    r = rp("sign", result, "--key", d / "keys" / "signing.key", "--archive", d / "result.tar.gz")
    assert r.returncode == 0, r.stderr
    assert "signed 11 subjects" in r.stdout
    return result, d / "result.tar.gz", d / "keys" / "signing.pub"


@pytest.fixture
def copy(signed: tuple[Path, Path, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(signed[0], tmp_path / "bundle"))


def test_verify_passes_for_directory_and_archive(signed: tuple[Path, Path, Path]) -> None:
    result, packed, pub = signed
    for b in (result, packed):
        r = rp("verify", b, "--trust", pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("pass") >= 5 and "verified in" in r.stdout


def _check(r: subprocess.CompletedProcess[str], code: int, line: str) -> None:
    assert r.returncode == code, r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and line in errors[0], r.stderr
    assert "FAIL" in r.stdout  # the per-check report is printed before the one-line error


def test_exit_10_envelope(copy: Path, signed: tuple[Path, Path, Path]) -> None:
    env = json.loads((copy / ENVELOPE_NAME).read_text())
    env["payloadType"] = "text/plain"
    (copy / ENVELOPE_NAME).write_text(json.dumps(env))
    _check(rp("verify", copy, "--trust", signed[2]), 10, "payloadType is 'text/plain'")


def test_exit_11_untrusted_signer(copy: Path, signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    assert rp("keygen", "--out", tmp_path / "other").returncode == 0
    _check(rp("verify", copy, "--trust", tmp_path / "other" / "signing.pub"), 11, "not among the 1 trusted key(s)")


def test_exit_12_tampered_file(copy: Path, signed: tuple[Path, Path, Path]) -> None:
    with (copy / "predictions.jsonl").open("a") as f:
        f.write("\n")
    _check(rp("verify", copy, "--trust", signed[2]), 12, "predictions.jsonl: sha256")


def test_exit_13_replayed_image(copy: Path, signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    write_image_records(tmp_path, "sha256:" + "cd" * 32)
    (artifact / "build" / ARTIFACT).mkdir(parents=True)
    shutil.copyfile(tmp_path / "build-record.json", artifact / "build" / ARTIFACT / "build-record.json")
    _check(rp("verify", copy, "--trust", signed[2], "--artifact", artifact), 13, "replayed from another image")


def test_exit_14_metrics(copy: Path, signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    rows = (copy / "labels.tsv").read_text().splitlines()
    swapped = [rows[0]] + [r.replace("\t0\t", "\t1\t") if "\t0\t" in r else r.replace("\t5\t", "\t0\t") for r in rows[1:]]
    (tmp_path / "truth.tsv").write_text("\n".join(swapped) + "\n")
    _check(rp("verify", copy, "--trust", signed[2], "--labels", tmp_path / "truth.tsv"), 14, "claimed")


def test_exit_15_schema(copy: Path, signed: tuple[Path, Path, Path]) -> None:
    system = json.loads((copy / "system.json").read_text())
    system["cores"] = "two"
    (copy / "system.json").write_text(json.dumps(system))
    key = signed[2].with_suffix(".key")
    assert rp("sign", copy, "--key", key).returncode == 2  # the signer refuses a malformed result...
    # ...so a trusted but careless signer is simulated by signing before the edit
    shutil.rmtree(copy)
    shutil.copytree(signed[0], copy)
    (copy / "logs" / "harness.json").write_text("{")
    assert rp("sign", copy, "--key", key).returncode == 0
    _check(rp("verify", copy, "--trust", signed[2]), 15, "logs/harness.json: not valid JSON")


def test_exit_16_hostile_archive(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bundle.tar.gz"
    bad.write_bytes(signed[1].read_bytes()[:-100])
    _check(rp("verify", bad, "--trust", signed[2]), 16, "truncated")
    bad.write_bytes(b"plain text")
    _check(rp("verify", bad, "--trust", signed[2]), 16, "not a gzip file")


def test_exit_2_bad_inputs(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    r = rp("verify", signed[0])
    assert r.returncode == 2 and "no trusted public keys" in r.stderr
    r = rp("verify", tmp_path / "nope", "--trust", signed[2])
    assert r.returncode == 2 and "no such bundle" in r.stderr
    r = rp("sign", signed[0], "--key", tmp_path / "absent.key")
    assert r.returncode == 2 and "cannot read private key" in r.stderr


def test_passphrase_via_environment(tmp_path: Path) -> None:
    env = {"REQUEST_PACK_PASSPHRASE": "s3cret"}
    assert rp("keygen", "--out", tmp_path / "k", env=env).returncode == 0
    result = make_result_dir(tmp_path / "r")
    r = rp("sign", result, "--key", tmp_path / "k" / "signing.key", env={"REQUEST_PACK_PASSPHRASE": ""})
    assert r.returncode == 2 and "passphrase" in r.stderr
    (tmp_path / "pass.txt").write_text("s3cret\n")
    r = rp("sign", result, "--key", tmp_path / "k" / "signing.key", "--passphrase-file", tmp_path / "pass.txt")
    assert r.returncode == 0, r.stderr
    assert rp("verify", result, "--trust", tmp_path / "k" / "signing.pub").returncode == 0


def test_json_report(copy: Path, signed: tuple[Path, Path, Path]) -> None:
    r = rp("verify", copy, "--trust", signed[2], "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["exit_code"] == 0 and report["accuracy"]["samples"] == 200
    (copy / "logs" / "run.log").write_text("rewritten\n")
    r = rp("verify", copy, "--trust", signed[2], "--json")
    report = json.loads(r.stdout)
    assert r.returncode == report["exit_code"] == 12
    assert [c["status"] for c in report["checks"]] == ["pass", "fail", "pass", "pass", "pass"]
    assert report["checks"][1]["error"] == "SubjectMismatch"
